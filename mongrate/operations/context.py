"""One call of a revision's ``upgrade`` or ``downgrade``: what its helpers, their steps and
their passes share (the revision and direction, the counts it reports, its log lines and
progress, the lock check, the numbering of its helper calls, their pass states and side
collections). The ``op`` facade holds one; nothing here knows the facade.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from mongrate.mongo.dryrun import RecordingDatabase
from mongrate.mongo.pipeline import chunked, prefetch
from mongrate.names import OwnNames
from mongrate.operations.engine import Engine
from mongrate.operations.undo import SideCollection

T = TypeVar("T")


def state_key(revision: str, collection: str, seq: int | str) -> dict[str, Any]:
    """The undo-collection key of the state record of one helper call's pass."""
    return {"revision": revision, "collection": collection, "kind": "pass",
            "doc_id": f"pass:{seq}"}


class RevisionContext:
    """One revision's call: its identity, its reported counts, and its run's state."""

    def __init__(self, engine: Engine, revision: str, direction: str):
        self.engine = engine
        self.revision = revision
        self.direction = direction
        self.batch_size = engine.batch_size
        self.dry_run = engine.dry_run
        #: counts reported (op.report, and each helper's own); logged with the step
        self.results: dict[str, Any] = {}
        self._seq = 0

    def report(self, **counts: Any) -> None:
        self.results.update(counts)

    def log(self, message: str) -> None:
        """A line in the run's output, tagged with this revision."""
        self.engine.reporter.info(f"  [{self.revision}] {message}")

    def progress(self, iterable: Iterable[T], total: int | None = None, label: str = "",
                 *, weight: Callable[[T], int] | None = None) -> Iterator[T]:
        """Report progress; between items, stop at once if the run has lost its lock."""
        for item in self.engine.reporter.progress(iterable, total, label or self.revision,
                                                  weight=weight):
            yield item
            self.check()

    def batches(self, cursor: Iterable[T], label: str, total: int | None = None
                ) -> Iterator[list[T]]:
        """``cursor`` in lists of ``batch_size``, read ahead on a worker thread, with
        progress and the lock check between batches."""
        return self.progress(prefetch(chunked(cursor, self.batch_size)), total, label, weight=len)

    def check(self) -> None:
        """Raise if the run lost its lock (or a parallel step failed)."""
        self.engine.check()

    def next_seq(self) -> int:
        """The number of the next helper call, which keys its pass state. A downgrade's
        calls count -1, -2...: they must never find its upgrade's calls' states (and
        record no prior values: restoring those after it would revert its own writes)."""
        self._seq += 1
        return self._seq if self.direction == "upgrade" else -self._seq

    def key(self, collection: str) -> dict[str, str]:
        return {"revision": self.revision, "collection": collection}

    def pass_state(self, collection: str, seq: int | str) -> dict[str, Any]:
        return self.engine.undo.find_one(state_key(self.revision, collection, seq)) or {}

    def side(self, collection: str) -> SideCollection:
        """The side collection of this revision's prior values for ``collection``."""
        eng = self.engine
        return SideCollection(eng.db, eng.undo_name, self.revision, collection,
                              eng.write_concern)

    def side_collections(self) -> list[str]:
        """The collections this revision's data helpers changed (with records kept)."""
        own = OwnNames(undo=self.engine.undo_name)
        names = self.engine.db.list_collection_names()
        return [coll for _, coll in own.side_collections(names, self.revision)]

    def would(self, collection: str, method: str, args: str) -> None:
        """Say in a dry run's list of writes what a helper would do."""
        if isinstance(self.engine.db, RecordingDatabase):
            self.engine.db.writes.append({"collection": collection, "method": method,
                                          "args": args})
        self.log(f"{collection}: would {method} {args}")
