"""Every verb as a plain Python call that returns data and never exits the process.

The CLI (:mod:`mongrate.cli`) only parses options, calls one of these and renders the
result; an application can call them directly (e.g. ``upgrade`` at start-up).
"""

from mongrate.commands.backup import drop_backup, list_backups, restore_backup
from mongrate.commands.inspect import (
    CurrentState,
    branches,
    check,
    current,
    heads,
    history,
    log_summary,
    show,
)
from mongrate.commands.migrate import downgrade, stamp, unlock, upgrade
from mongrate.commands.project import Project
from mongrate.commands.scaffold import init, merge, revision

__all__ = [
    "CurrentState", "Project", "branches", "check", "current", "downgrade", "drop_backup",
    "heads", "history", "init", "list_backups", "log_summary", "merge", "restore_backup",
    "revision", "show", "stamp", "unlock", "upgrade",
]
