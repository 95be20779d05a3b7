"""How data helpers write: in place, or by a streamed rewrite of the collection.

- ``in_place``: only the documents that change are sent, as ``$set``/``$unset`` updates by
  ``_id`` (or the revision's own update, for ``op.update_many``). Right wherever a write by
  ``_id`` is an index lookup: MongoDB, and any server the probe shows to behave so. Safe with
  the application's writers running.
- ``rewrite``: the collection is streamed once into a new collection, changed documents
  included, which then replaces it. For servers where every single-document write scans the
  whole table (FerretDB 1.x on SQLite), where in-place changes cost O(changed x size).
  Writes made by the application during the pass would not be carried over: stop it.

``auto`` (the default) asks the server once per run (once per client: a fleet's
databases share the answer): FerretDB 1.x is known to need
``rewrite``; any other server is probed by timing writes by ``_id`` on a small and on a
larger scratch collection. ``write_strategy`` in ``mongrate.ini`` overrides it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from pymongo.database import Database
from pymongo.errors import OperationFailure

from mongrate.mongo.collections import is_ferretdb_v1, per_client
from mongrate.names import PROBE_PREFIX, probe_name

IN_PLACE = "in_place"
REWRITE = "rewrite"
CHOICES = ("auto", IN_PLACE, REWRITE)

#: A write by _id on PROBE_LARGE documents that takes this many times longer than on
#: PROBE_SMALL means the server scans instead of looking the _id up.
SCAN_RATIO = 5.0
PROBE_SMALL, PROBE_LARGE, PROBE_WRITES = 20, 4000, 7


@dataclass(frozen=True)
class Strategy:
    """The write strategy of one run and why it was chosen."""

    name: str
    reason: str

    @property
    def rewrite(self) -> bool:
        return self.name == REWRITE

    def describe(self) -> str:
        return f"write strategy: {self.name} ({self.reason})"


def choose(db: Database, setting: str = "auto", *, probe: bool = True) -> Strategy:
    """The strategy for ``db``: ``setting`` unless it is ``auto``; then detection.
    ``probe=False`` (a dry run, which must write nothing) decides from buildInfo alone."""
    if setting in (IN_PLACE, REWRITE):
        return Strategy(setting, "set by write_strategy in the config")
    if is_ferretdb_v1(db):
        return Strategy(REWRITE, "auto: FerretDB 1.x scans the whole table for every "
                                 "single-document write")
    if not probe:
        return Strategy(IN_PLACE, "auto, assumed for the dry run: the server does not say it "
                                  "is FerretDB 1.x; a real run probes it")
    # the server's behaviour, not the database's: once per client (a fleet's databases)
    small, large = per_client(db.client, "write probe", lambda: _probe(db))
    ratio = large / small if small > 0 else 1.0
    timing = (f"the fastest of {PROBE_WRITES} writes by _id took {large * 1000:.1f} ms on "
              f"{PROBE_LARGE:,} documents and {small * 1000:.1f} ms on {PROBE_SMALL}")
    if ratio >= SCAN_RATIO:
        return Strategy(REWRITE, f"auto: single-document writes scan the table ({timing})")
    return Strategy(IN_PLACE, f"auto: single-document writes are indexed ({timing})")


def server_copy(db: Database, *, probe: bool = True) -> tuple[bool, str]:
    """Can the server copy a collection itself (aggregate ``$out``), and why we think so.
    Asked once per client, like the write probe: a scratch collection of one document is
    copied (FerretDB 1.24 answers NotImplemented; MongoDB and mongo-java-server copy).
    ``probe=False`` (a dry run, which must write nothing) says no: it streams."""
    if not probe:
        return False, "the dry run streams through the client"
    return per_client(db.client, "server copy", lambda: _probe_server_copy(db))


def _probe_server_copy(db: Database) -> tuple[bool, str]:
    base = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
    source, target = f"{base}_copy_from", f"{base}_copy_to"
    try:
        db[source].insert_one({"_id": 1})
        db[source].aggregate([{"$match": {}}, {"$out": target}]).close()
        if db[target].find_one({"_id": 1}) is None:
            return False, "the server's $out wrote nothing: streamed through the client"
        # a copy must not change with its source (mongo-java-server's memory backend
        # shares the documents: an update of the source showed in its $out copy)
        db[source].update_one({"_id": 1}, {"$set": {"changed": True}})
        if db[target].find_one({"_id": 1}) != {"_id": 1}:
            return False, ("the server's $out copy changes with its source: streamed "
                           "through the client")
        return True, "copied on the server (aggregate $out)"
    except OperationFailure as exc:
        return False, (f"the server has no $out ({exc.details.get('errmsg') if exc.details else exc}): "
                       "streamed through the client")
    finally:
        for name in (source, target):
            db.drop_collection(name)


def _probe(db: Database) -> tuple[float, float]:
    """Fastest seconds of a write by ``_id`` on a small and on a larger scratch collection."""
    token = uuid.uuid4().hex[:12]
    names = [probe_name(token, n) for n in (PROBE_SMALL, PROBE_LARGE)]
    try:
        colls = [db[name] for name in names]
        for coll, size in zip(colls, (PROBE_SMALL, PROBE_LARGE), strict=True):
            coll.insert_many([{"_id": i, "v": 0, "pad": "x" * 100} for i in range(size)])
            coll.update_one({"_id": 0}, {"$inc": {"v": 1}})  # warm up
        samples: list[list[float]] = [[], []]
        # interleaved, and the fastest of each: a busy machine only ever adds time, and
        # adds it to both sides alike, while a scanning server is slow on every write
        # (a median of one side timed after the other flipped under load)
        for i in range(PROBE_WRITES):
            for k, (coll, size) in enumerate(zip(colls, (PROBE_SMALL, PROBE_LARGE),
                                                 strict=True)):
                started = time.perf_counter()
                coll.update_one({"_id": (i * 7919) % size}, {"$inc": {"v": 1}})
                samples[k].append(time.perf_counter() - started)
        return min(samples[0]), min(samples[1])
    finally:
        for name in names:
            db.drop_collection(name)
