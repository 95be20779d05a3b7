"""Many databases in one command: ``upgrade``, ``downgrade``, ``current``, ``check`` and
``stamp`` on every database matched by ``--databases PATTERN`` (or ``databases`` in the
ini), ``jobs`` at a time.

Each database keeps its own version collection, log and lock (they live in it), so a run
can be repeated or resumed: a database already at the target reports "up to date", one
interrupted resumes as it would alone. One failure does not stop the others unless
``fail_fast`` (then databases not started yet are "skipped"; those under way finish their
step). The result is the table: database, from, to, status, duration.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mongrate.commands.inspect import check, current
from mongrate.commands.migrate import downgrade, stamp, upgrade
from mongrate.commands.project import Project
from mongrate.config import Config, database_from_url, with_database
from mongrate.errors import CheckFailed, ConfigError, LockTimeoutError, MongrateError
from mongrate.graph.scripts import ScriptDirectory
from mongrate.progress import Reporter
from mongrate.runtime.store import connect_client
from mongrate.text import columns

VERBS = ("upgrade", "downgrade", "current", "check", "stamp")
#: never matched by a glob (name them exactly to include them)
SYSTEM_DATABASES = frozenset({"admin", "local", "config"})
_GLOB = set("*?[")
#: runner messages shown without -v: the ones that say a database is waiting or resuming
_ALWAYS_SHOWN = ("waiting for the lock", "took over", "found interrupted")


@dataclass
class FleetRow:
    database: str
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    status: str = "skipped"
    duration: float = 0.0
    detail: str = ""
    ok: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"database": self.database, "from": list(self.before), "to": list(self.after),
                "status": self.status, "duration": round(self.duration, 3),
                "detail": self.detail, "ok": self.ok}


@dataclass
class FleetResult:
    verb: str
    rows: list[FleetRow] = field(default_factory=list)
    jobs: int = 1
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def failed(self) -> list[FleetRow]:
        return [r for r in self.rows if not r.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"verb": self.verb, "ok": self.ok, "jobs": self.jobs,
                "duration": round(self.duration, 3), "databases": [r.as_dict() for r in self.rows]}


class DatabaseReporter(Reporter):
    """A run's messages prefixed with its database; without ``verbose`` only those that
    say it waits or resumes. Progress is shown only when one database runs at a time."""

    def __init__(self, parent: Reporter, database: str, *, verbose: bool, progress: bool):
        super().__init__(parent.stream, quiet=parent.quiet or not progress,
                         interval=parent.interval)
        self.database = database
        self.verbose = verbose

    def info(self, message: str) -> None:
        if self.verbose or message.lstrip().startswith(_ALWAYS_SHOWN):
            super().info(f"[{self.database}] {message.lstrip()}")


def match_databases(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The databases ``patterns`` select, sorted. A name without glob characters is taken
    as is, even if the server has no such database yet (an upgrade creates it)."""
    chosen: set[str] = set()
    for pattern in patterns:
        if _GLOB & set(pattern):
            chosen.update(n for n in names
                          if n not in SYSTEM_DATABASES and fnmatch.fnmatchcase(n, pattern))
        else:
            chosen.add(pattern)
    if not chosen:
        shown = [n for n in sorted(names) if n not in SYSTEM_DATABASES]
        some = ", ".join(shown[:10]) + (", ..." if len(shown) > 10 else "") or "none"
        raise ConfigError(f"no database on the server matches {', '.join(patterns)} (it has: "
                          f"{some}): fix --databases or 'databases' in [mongrate]")
    return sorted(chosen)


def one_database(config: Config) -> tuple[Config, str | None]:
    """``config`` bound to one database: its own, or else the first the ``databases``
    patterns match (tenants share one schema; e.g. for ``revision --autogenerate``). The
    second value names the database chosen that way (None when the config names one)."""
    if not config.databases or config.database or (
            config.url and database_from_url(config.url)):
        return config, None
    client = connect_client(config)
    try:
        name = match_databases(client.list_database_names(), config.databases)[0]
    finally:
        client.close()
    return config.with_overrides(url=with_database(config.require_url(), name),
                                 database=name), name


# ------------------------------------------------------------------ verbs
Outcome = tuple[tuple[str, ...], tuple[str, ...], str, str, bool]  # before, after, status, detail, ok


def _run(project: Project, direction: str, **kwargs: Any) -> Outcome:
    fn = upgrade if direction == "upgrade" else downgrade
    result = fn(project, **kwargs)
    n = len(result.steps)
    if not n:
        status = "up to date"
    elif result.dry_run:
        status = f"would {direction} {n}"
    else:
        status = f"{direction}d {n}"
    return result.heads_before, result.heads_after, status, "", True


def _current(project: Project) -> Outcome:
    state = current(project)
    status = "at head"
    if state.unknown:
        status = "unknown revision"
    elif state.interrupted:
        status = "interrupted"
    elif state.pending:
        status = f"{len(state.pending)} pending"
    return state.heads, state.heads, status, "", True


def _check(project: Project) -> Outcome:
    heads = project.current_heads()
    try:
        check(project)
    except CheckFailed as exc:
        problems = exc.problems or [str(exc)]
        return heads, heads, f"{len(problems)} problem(s)", "; ".join(problems), False
    return heads, heads, "ok", "", True


def _stamp(project: Project, **kwargs: Any) -> Outcome:
    before = project.current_heads()
    after = stamp(project, **kwargs)
    return before, tuple(after), "stamped", "", True


_VERBS: dict[str, Callable[..., Outcome]] = {
    "upgrade": lambda p, **kw: _run(p, "upgrade", **kw),
    "downgrade": lambda p, **kw: _run(p, "downgrade", **kw),
    "current": _current,
    "check": _check,
    "stamp": _stamp,
}


def run_fleet(config: Config, verb: str, patterns: Sequence[str] | None = None, *,
              jobs: int | None = None, fail_fast: bool = False,
              reporter: Reporter | None = None, verbose: bool = False,
              **arguments: Any) -> FleetResult:
    """Run ``verb`` (with the ``arguments`` its single-database function takes) on every
    database ``patterns`` (default: the ini's ``databases``) select. Never raises for one
    database's failure: it is in its row."""
    if verb not in _VERBS:
        raise ConfigError(f"{verb} does not run on several databases; these do: {', '.join(VERBS)}")
    patterns = tuple(patterns or config.databases)
    if not patterns:
        raise ConfigError("no databases to run on: pass --databases PATTERN or set "
                          "'databases' in [mongrate]")
    jobs = max(1, jobs or config.jobs)
    reporter = reporter or Reporter()
    scripts = ScriptDirectory(config)
    _ = scripts.graph  # read once, before the threads share it
    client = connect_client(config)
    started = time.monotonic()
    try:
        names = match_databases(client.list_database_names(), patterns)
        result = FleetResult(verb, [FleetRow(n) for n in names], jobs)
        stop = threading.Event()

        def one(row: FleetRow) -> None:
            if stop.is_set():
                return  # fail-fast: left "skipped"
            project = Project(
                config.with_overrides(url=with_database(config.require_url(), row.database),
                                      database=row.database),
                DatabaseReporter(reporter, row.database, verbose=verbose, progress=jobs == 1),
                scripts=scripts, db=client[row.database])
            t0 = time.monotonic()
            try:
                row.before, row.after, row.status, row.detail, row.ok = _VERBS[verb](
                    project, **arguments)
            except LockTimeoutError as exc:
                row.status, row.detail, row.ok = "locked", str(exc), False
            except MongrateError as exc:
                row.status, row.detail, row.ok = "failed", str(exc), False
            except Exception as exc:  # noqa: BLE001 - one database's bug must not hide the others'
                row.status, row.detail, row.ok = "failed", f"{type(exc).__name__}: {exc}", False
            row.duration = time.monotonic() - t0
            if not row.ok and fail_fast:
                stop.set()
            reporter.info(_finished_line(verb, row))

        with ThreadPoolExecutor(jobs, thread_name_prefix="mongrate-db") as pool:
            list(pool.map(one, result.rows))
        result.duration = time.monotonic() - started
        return result
    finally:
        client.close()


def heads_text(heads: Sequence[str]) -> str:
    return ",".join(heads) if heads else "base"


def _finished_line(verb: str, row: FleetRow) -> str:
    detail = f": {row.detail}" if row.detail and not row.ok else ""
    return (f"{row.database}: {row.status} ({heads_text(row.before)} -> "
            f"{heads_text(row.after)}, {row.duration:.2f}s){detail}")


def table(result: FleetResult) -> str:
    """The closing table, a total line, and one line per failure."""
    lines = columns(("database", "from", "to", "status", "duration"),
                    ((r.database, heads_text(r.before), heads_text(r.after), r.status,
                      f"{r.duration:.2f}s") for r in result.rows))
    failed = result.failed
    lines.append(f"{len(result.rows)} database(s): {len(result.rows) - len(failed)} succeeded, "
                 f"{len(failed)} did not ({result.verb}, --jobs {result.jobs}, "
                 f"{result.duration:.2f}s)")
    lines.extend(f"{r.database}: {r.detail}" for r in failed if r.detail)
    return "\n".join(lines)
