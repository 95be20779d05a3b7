"""The ``op`` object handed to ``upgrade(op)`` and ``downgrade(op)``: the whole authoring
surface. A revision needs nothing else from mongrate.

Data helpers (:mod:`mongrate.operations.data`): ``update_many``, ``change_each``,
``change_groups`` with ``source``. Schema helpers (:mod:`mongrate.operations.schema_ops`):
``create_index``, ``drop_index``. Backups (:mod:`mongrate.operations.backup_ops`):
``backup_collection``. Each records what it is about to change before it writes, so
``restore_undo()`` puts everything back exactly, whatever the write strategy was. In a dry
run they read, count and say what they would write, and write nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from pymongo.database import Database

from mongrate.errors import StepCancelled
from mongrate.mongo.collections import collection_options, fast_count
from mongrate.operations.backup_ops import BackupOps
from mongrate.operations.context import RevisionContext
from mongrate.operations.data import DataOps
from mongrate.operations.deferral import Deferral
from mongrate.operations.passes import recover_swaps
from mongrate.operations.rewrite import restore_rewrite
from mongrate.operations.schema_ops import SchemaOps, restore_schema
from mongrate.operations.undo import SideCollection

T = TypeVar("T")


class Operations(DataOps, SchemaOps, BackupOps):
    """Helpers for revision authors. ``op.db`` is the pymongo ``Database``."""

    def __init__(self, ctx: RevisionContext, deferral: Deferral, db: Database | None = None):
        self._ctx = ctx
        self._engine = ctx.engine
        self._deferral = deferral
        #: the database; reading or writing a collection through it first writes any
        #: change still waiting for that collection (so it sees everything done before)
        self.db = db if db is not None else ctx.engine.db
        self.revision = ctx.revision
        self.direction = ctx.direction
        self.batch_size = ctx.batch_size
        self.dry_run = ctx.dry_run

    # ------------------------------------------------------------- reporting
    def report(self, **counts: Any) -> None:
        """Counts to log with this step and print after it, one ``name: count`` a line
        (``op.report(linked=5, orphaned=2)``, or ``op.report(**tally)`` for names with
        spaces). A name reported again takes the new value; helpers report their own."""
        self._ctx.report(**counts)

    def log(self, message: str) -> None:
        """A line in the run's output, tagged with this revision."""
        self._ctx.log(message)

    def progress(self, iterable: Iterable[T], total: int | None = None, label: str = "",
                 *, weight: Callable[[T], int] | None = None) -> Iterator[T]:
        """Report progress; between items, stop at once if the run has lost its lock."""
        return self._ctx.progress(iterable, total, label, weight=weight)

    def batches(self, cursor: Iterable[T], label: str, total: int | None = None
                ) -> Iterator[list[T]]:
        """``cursor`` in lists of ``batch_size``, read ahead on a worker thread, with
        progress and the lock check between batches."""
        return self._ctx.batches(cursor, label, total)

    def check(self) -> None:
        """Raise if this run lost its lock (or a parallel step failed): call it before
        anything that cannot be taken back, in loops of your own."""
        self._ctx.check()

    def parallel(self, *steps: Callable[[], T], workers: int = 2) -> list[T]:
        """Run independent steps (work on different collections) at the same time and
        return their results in order. If one fails, the others stop at their next batch
        and the first error is raised."""
        if not steps:
            return []
        stop = self._engine.stop
        first: BaseException | None = None
        with ThreadPoolExecutor(max_workers=max(1, workers),
                                thread_name_prefix="mongrate-step") as pool:
            futures = [pool.submit(step) for step in steps]
            try:
                for future in as_completed(futures):
                    exc = None if future.cancelled() else future.exception()
                    if exc is None or isinstance(exc, StepCancelled):
                        continue
                    if first is None:
                        first = exc
                        stop.set()
                        for other in futures:
                            other.cancel()
                    else:
                        self.log(f"a parallel step also failed: {type(exc).__name__}: {exc}")
            except BaseException:  # Ctrl-C here: the steps stop at their next batch
                stop.set()
                for other in futures:
                    other.cancel()
                raise
        stop.clear()
        if first is not None:
            raise first
        return [f.result() for f in futures]

    # ------------------------------------------------------------------ undo
    def restore_undo(self, collection: str | None = None) -> int:
        """Reverse everything this revision's helpers recorded (optionally for one
        collection): changed fields get their values back byte for byte and in their place,
        added fields go again, indexes it created are dropped and ones it dropped come
        back, snapshots it made are dropped. Fields nobody recorded are left alone.
        Returns the number of documents and records restored."""
        eng = self._engine
        undone = 0
        query: dict[str, Any] = {"revision": self.revision}
        if collection is not None:
            query["collection"] = collection
        if not self.dry_run:
            self._settle_passes(query)
        for coll in self._ctx.side_collections():
            if collection is not None and coll != collection:
                continue
            undone += self._restore_collection(coll)
        undone += restore_schema(eng, query)
        if not self.dry_run:
            eng.undo.delete_many({**query, "kind": "pass"})
        return undone

    def _settle_passes(self, query: dict[str, Any]) -> None:
        """Before restoring: swaps an interrupted run cut short are finished (their records
        then count), and copies of passes that never swapped in (a failed or interrupted
        pass) are dropped."""
        eng = self._engine
        states = list(eng.undo.find({**query, "kind": "pass"}))
        for coll in sorted({s["collection"] for s in states}):
            recover_swaps(eng, coll)
        names = set(eng.db.list_collection_names())
        for s in eng.undo.find({**query, "kind": "pass", "state": {"$in": ["building", "built"]}}):
            if s.get("tmp") in names and s["collection"] in names:
                # "built" with its copy gone reads as swapped: say "building" (its records
                # describe nothing; a restore's copy is built again) before the copy goes
                eng.undo.update_one({"_id": s["_id"]}, {"$set": {"state": "building"}})
                eng.db.drop_collection(s["tmp"])

    def _restore_collection(self, collection: str) -> int:
        eng = self._engine
        side = self._ctx.side(collection)
        # records of passes that never replaced the collection describe nothing that
        # happened (swaps cut short are settled by now: those left "built" never began)
        void = frozenset(
            int(s["doc_id"].split(":", 1)[1])
            for s in eng.undo.find({**self._ctx.key(collection), "kind": "pass",
                                    "state": {"$in": ["building", "built", "deferred"]}})
            if s["doc_id"].split(":", 1)[1].isdigit())
        if self.dry_run:
            n = fast_count(eng.db, side.name)
            self._ctx.would(collection, "restore", f"recorded values of up to {n} documents")
            return n
        # a capped collection's natural order is its insertion order, which a restore by
        # rewrite (merged in _id order) would not keep: it is restored in place
        if eng.strategy.rewrite and not collection_options(eng.db, collection).get("capped"):
            restored = restore_rewrite(self._ctx, collection, side, void)
        else:
            restored, gone = side.restore_in_place(
                batch_size=self.batch_size, statement_limit=eng.statement_limit, skip=void,
                guard=eng.guard)
            if gone:
                self.log(f"{collection}: {gone} recorded documents no longer exist")
        eng.db.drop_collection(side.name)
        eng.undo.delete_many({**self._ctx.key(collection), "kind": "pass"})
        self._ctx.results.setdefault(f"{collection} restored", restored)
        self._report_restore(collection, side)
        return restored

    def _report_restore(self, collection: str, side: SideCollection) -> None:
        """Say what the application's writes did to a restore."""
        if side.kept:
            self._ctx.results[f"{collection} restored: fields the application wrote since, "
                              "kept"] = side.kept
            self.log(f"{collection}: {side.kept} fields the application wrote after this "
                     "revision changed them keep the application's value")
        if side.raced:
            self._ctx.results[f"{collection} restored: written by the application during the "
                              "restore"] = side.raced
            self.log(f"{collection}: {side.raced} documents were written by the application "
                     "while they were being restored: read again")
        if side.unsure:
            self._ctx.results[f"{collection} restored: unsure, left as the application wrote "
                              "them"] = side.unsure
            self.log(f"{collection}: {side.unsure} documents were written by the "
                     "application at the moment they were restored; whether the restore "
                     "landed first is unknown, so they are left as they are")


def reported(op: Operations) -> dict[str, Any]:
    """The counts ``op`` reported (its revision's and its helpers'), in order."""
    return dict(op._ctx.results)
