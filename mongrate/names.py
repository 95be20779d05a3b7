"""mongrate's own collection names: the one place that makes them and tells them apart.

What mongrate keeps in a database:

- the five named in the ini (``version``, ``log``, ``lock``, ``undo``, ``backups``);
- ``undo_side``: ``<undo>_<revision>-<collection>``, the prior values of one revision's
  changes to one collection ('-' cannot occur in a revision id, so no two pairs share one);
- ``scratch``: ``mongrate_tmp_<revision>_<seq>_<collection>``, a pass's copy (seq
  ``backup`` or ``restore`` for a swap backup or a restore);
- ``probe``: ``mongrate_probe_<hex>_<size>``, the write-strategy probe;
- ``snapshot`` and ``prerestore``: ``<source>_backup_<stamp>`` made by
  ``op.backup_collection`` and ``<source>_prerestore_<stamp>`` kept by ``backup restore``
  (the application's data, listed in the backups collection; not mongrate's bookkeeping).

The runner, ``check``/``current``, the strategy probe, undo and the declared-schema drift all
ask here. Nothing else of mongrate is imported but the config's defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mongrate.config import COLLECTION_KEYS, DEFAULTS

TMP_PREFIX = "mongrate_tmp_"
PROBE_PREFIX = "mongrate_probe_"
#: kinds of name: the ini's five, then the patterns
FIXED = ("version", "log", "lock", "undo", "backups")
UNDO_SIDE, SCRATCH, PROBE, SNAPSHOT, PRERESTORE = (
    "undo_side", "scratch", "probe", "snapshot", "prerestore")
#: what mongrate itself keeps and cleans up (snapshots are the user's data, kept on purpose)
BOOKKEEPING = frozenset({*FIXED, UNDO_SIDE, SCRATCH, PROBE})
_STAMPED = re.compile(r"^(?P<source>.+)_(?P<kind>backup|prerestore)_(?P<stamp>\d{8}_\d{6})$")


def tmp_name(revision: str, seq: int | str, collection: str) -> str:
    """The scratch copy of a pass (or, seq "backup"/"restore", of a swap backup/restore)."""
    return f"{TMP_PREFIX}{revision}_{seq}_{collection}"


def probe_name(token: str, size: int) -> str:
    """A write-strategy probe collection of ``size`` documents."""
    return f"{PROBE_PREFIX}{token}_{size}"


def snapshot_name(source: str, stamp: str) -> str:
    """The snapshot ``op.backup_collection`` makes of ``source`` (stamp YYYYMMDD_HHMMSS)."""
    return f"{source}_backup_{stamp}"


def prerestore_name(source: str, stamp: str) -> str:
    """The copy of ``source`` that ``backup restore`` keeps before it overwrites it."""
    return f"{source}_prerestore_{stamp}"


def side_name(undo: str, revision: str, collection: str) -> str:
    """The side collection of prior values of ``revision``'s changes to ``collection``."""
    return f"{undo}_{revision}-{collection}"


def side_owner(undo: str, name: str) -> tuple[str, str] | None:
    """(revision, collection) of a side collection's ``name``; None for other names."""
    prefix = f"{undo}_"
    if not name.startswith(prefix) or "-" not in name[len(prefix):]:
        return None
    revision, _, collection = name[len(prefix):].partition("-")
    return revision, collection


@dataclass(frozen=True)
class Owned:
    """What a collection name is to mongrate: ``kind`` (one of :data:`FIXED` or the
    patterns) and, where the name says so, the revision and the collection it belongs to."""

    kind: str
    revision: str | None = None
    collection: str | None = None

    @property
    def bookkeeping(self) -> bool:
        return self.kind in BOOKKEEPING


@dataclass(frozen=True)
class OwnNames:
    """The five collection names of one config (defaults: the ini's defaults)."""

    version: str = str(DEFAULTS["version_collection"])
    log: str = str(DEFAULTS["log_collection"])
    lock: str = str(DEFAULTS["lock_collection"])
    undo: str = str(DEFAULTS["undo_collection"])
    backups: str = str(DEFAULTS["backups_collection"])

    @classmethod
    def of(cls, config: Any) -> OwnNames:
        """From a :class:`mongrate.config.Config` (anything with the five attributes)."""
        return cls(*(getattr(config, k) for k in COLLECTION_KEYS))

    @property
    def fixed(self) -> dict[str, str]:
        """name -> kind of the five."""
        return {self.version: "version", self.log: "log", self.lock: "lock",
                self.undo: "undo", self.backups: "backups"}

    def classify(self, name: str) -> Owned | None:
        """What ``name`` is to mongrate; None for the application's own collections."""
        kind = self.fixed.get(name)
        if kind:
            return Owned(kind)
        side = side_owner(self.undo, name)
        if side:
            return Owned(UNDO_SIDE, *side)
        if name.startswith(TMP_PREFIX):
            revision, _, rest = name[len(TMP_PREFIX):].partition("_")
            collection = rest.partition("_")[2]
            return Owned(SCRATCH, revision or None, collection or None)
        if name.startswith(PROBE_PREFIX):
            return Owned(PROBE)
        stamped = _STAMPED.match(name)
        if stamped:
            kind = SNAPSHOT if stamped["kind"] == "backup" else PRERESTORE
            return Owned(kind, collection=stamped["source"])
        return None

    def ours(self, names: Iterable[str]) -> list[str]:
        """The names among ``names`` that are mongrate's bookkeeping (the five, undo side
        collections, scratch copies, probes), sorted."""
        return sorted(n for n in names if (o := self.classify(n)) and o.bookkeeping)

    def side_collections(self, names: Iterable[str],
                         revision: str | None = None) -> list[tuple[str, str]]:
        """(revision, collection) of each undo side collection among ``names`` (of
        ``revision`` only, when given), sorted."""
        found = (side_owner(self.undo, n) for n in names)
        return sorted(s for s in found if s and (revision is None or s[0] == revision))
