"""What the data helpers of one run share: the write strategy, the database, and the
changes deferred to the next pass over their collection.

Deferring (``rewrite`` strategy, upgrades only): a whole-collection change (``change_each``
or ``update_many``; the first one may have a filter) is not written at once. The next pass
over that collection in this run applies it to each document as it reads it, recording its
prior values in its own revision's side collection, and writes the document once: two
revisions that each change every message cost one read and one write, not two. The change
is written on its own:

- when anything reads or writes the collection through ``op.db`` (it sees every change
  made before it), or takes a backup of it, or creates an index on it;
- when a revision ends without having touched the collection;
- at the end of the run, and before a failed revision is reported.

A revision whose change waits is applied (its heads move) only once the change is written;
if the run dies first, the next run runs it again (its finished passes are skipped).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pymongo.collection import Collection
from pymongo.database import Database

from mongrate.errors import LockLostError
from mongrate.mongo.codec import MAJORITY, MAJORITY_READ, RAW, exact_dates, raw_bytes
from mongrate.mongo.collections import fast_count
from mongrate.operations.passes import (
    SWAP_STATES,
    TMP_PREFIX,
    FilterMatch,
    LazyCount,
    OrderMismatch,
    RewriteSink,
    ServerUpdate,
    Step,
    resume_swap,
    state_key,
)
from mongrate.operations.strategy import Strategy
from mongrate.progress import Reporter

if TYPE_CHECKING:
    from mongrate.operations.ops import Operations



class Engine:
    """The run-wide side of the ``op`` objects of one upgrade or downgrade."""

    def __init__(self, db: Database, *, undo_collection: str, backups_collection: str,
                 strategy: Strategy, statement_limit: int, batch_size: int,
                 reporter: Reporter | None = None, dry_run: bool = False,
                 guard: Callable[[], None] | None = None, direction: str = "upgrade"):
        # every read of a pass (filters, _id lists) must decode any valid BSON date
        db = exact_dates(db) if isinstance(db, Database) else db
        self.db = db
        self.undo_name = undo_collection
        self.write_concern = MAJORITY
        self.undo: Collection = db.get_collection(undo_collection, write_concern=MAJORITY,
                                                  read_concern=MAJORITY_READ)
        self.backups: Collection = db.get_collection(backups_collection, write_concern=MAJORITY,
                                                     read_concern=MAJORITY_READ)
        self.strategy = strategy
        self.statement_limit = statement_limit
        self.batch_size = batch_size
        self.reporter = reporter or Reporter()
        self.dry_run = dry_run
        self.guard = guard
        self.direction = direction
        self.pending: dict[str, list[Step]] = {}
        self.touched: set[str] = set()  # collections the running revision deferred or passed
        self.stop = threading.Event()  # set by op.parallel when one of its steps failed
        self._lock = threading.RLock()
        self.backup_stamp: str | None = None
        self.defer_enabled = True  # tests turn it off to see each helper write at once
        #: called after a pass wrote deferred changes (the runner applies held revisions)
        self.on_flushed: Callable[[], None] | None = None

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Raise if the run lost its lock or a parallel step failed."""
        from mongrate.errors import StepCancelled

        if self.guard is not None:
            self.guard()
        if self.stop.is_set():
            raise StepCancelled("stopped because a parallel step failed")

    @property
    def can_defer(self) -> bool:
        return (self.defer_enabled and self.strategy.rewrite and self.direction == "upgrade"
                and not self.dry_run)

    # ------------------------------------------------------------------ states
    def state(self, step: Step) -> dict[str, Any]:
        return self.undo.find_one(step.key) or {}

    def mark_done(self, step: Step) -> None:
        if step.done:
            return
        self.undo.update_one(step.key, {"$set": {"state": "done", "result": step.changed}},
                             upsert=True)
        step.done = True
        if isinstance(step.result, LazyCount):
            step.result.set(step.changed)
        step.op._results.setdefault(step.label, step.changed)

    def recover_swaps(self, collection: str) -> None:
        """Settle what an interrupted run left of a pass over ``collection`` at its swap,
        before anything decides what is still to do or what its records describe (see
        :func:`~mongrate.operations.passes.resume_swap`): a swap that happened, or is
        finished now, has its steps marked done (a re-run must not write them twice; a
        downgrade must restore them)."""
        for state in self.undo.find({"collection": collection, "kind": "pass",
                                     "state": {"$in": list(SWAP_STATES)}}):
            if resume_swap(self, state, collection):
                self._mark_steps_done(state, collection)

    def _mark_steps_done(self, state: dict[str, Any], collection: str) -> None:
        """The steps of a pass an interrupted run swapped in are done, with the counts it
        recorded when the copy was built."""
        self.undo.update_one({"_id": state["_id"]}, {"$set": {"state": "done"}})
        steps = state.get("steps", ())
        counts = state.get("counts") or [0] * len(steps)
        for ident, n in zip(steps, counts, strict=False):
            rev, _, seq = str(ident).rpartition(":")
            self.undo.update_one(state_key(rev, collection, seq),
                                 {"$set": {"state": "done", "result": n}}, upsert=True)

    # ----------------------------------------------------------------- deferring
    def defer(self, step: Step) -> LazyCount:
        """Leave ``step`` to the next pass over its collection (see the module docstring)."""
        with self._lock:
            self.touched.add(step.collection)
            if step.filter and self.pending.get(step.collection):
                self.flush(step.collection)  # a filter must see the stored documents
            stale = self.state(step).get("tmp")
            self.undo.update_one(step.key, {"$set": {"state": "deferred"},
                                            "$unset": {"tmp": "", "steps": ""}}, upsert=True)
            if stale:  # built by an interrupted run; the pass that writes the step builds anew
                self.db.drop_collection(stale)
            step.result = LazyCount(lambda: self.flush(step.collection))
            self.pending.setdefault(step.collection, []).append(step)
            return step.result

    def take_pending(self, collection: str) -> list[Step]:
        """The deferred steps a pass over ``collection`` is about to write (they leave the
        queue; :meth:`give_back` returns them if that pass does not happen)."""
        with self._lock:
            self.touched.add(collection)
            return [s for s in self.pending.pop(collection, []) if not s.done]

    def give_back(self, collection: str, steps: list[Step]) -> None:
        with self._lock:
            left = [s for s in steps if not s.done]
            if left:
                self.pending[collection] = left + self.pending.get(collection, [])

    def accessed(self, name: str | None) -> None:
        """``op.db`` is about to touch ``name`` (None: anything): write what waits for it."""
        if not self.pending:
            return
        with self._lock:
            for coll in list(self.pending):
                if name is None or coll == name or coll.startswith(f"{name}."):
                    self.flush(coll)

    def flush(self, collection: str) -> None:
        """Write the deferred steps of ``collection`` in one pass of their own."""
        with self._lock:
            steps = self.take_pending(collection)
            if not steps:
                return
            try:
                rewrite_pass(self, collection, steps)
            except BaseException:
                self.give_back(collection, steps)
                raise
            if self.on_flushed is not None:
                self.on_flushed()

    def flush_untouched(self) -> None:
        """A revision ended: write what waits for collections it did not touch."""
        with self._lock:
            for coll in [c for c in self.pending if c not in self.touched]:
                self.flush(coll)
            self.touched = set()

    def flush_all(self) -> None:
        with self._lock:
            for coll in list(self.pending):
                self.flush(coll)

    def waiting(self, op: Operations) -> bool:
        """True while a deferred step of ``op``'s revision is not written yet."""
        return any(s.op is op and not s.done for steps in self.pending.values() for s in steps)

    def discard(self, op: Operations) -> None:
        """Forget ``op``'s deferred steps (its revision failed: the next run redoes them)."""
        with self._lock:
            for coll in list(self.pending):
                self.pending[coll] = [s for s in self.pending[coll] if s.op is not op]
                if not self.pending[coll]:
                    del self.pending[coll]


def rewrite_pass(engine: Engine, collection: str, steps: list[Step],
                 label: str | None = None) -> int:
    """One streamed rewrite of ``collection`` applying ``steps`` in order (the first may
    carry a server-side filter) to every document; returns what the last step changed."""
    own = steps[-1]
    sink = RewriteSink(engine, collection, steps)
    if not sink.start():
        # already written by an earlier run: the steps' records say done
        for step in steps:
            engine.mark_done(step)
        return own.changed
    op = own.op
    total = fast_count(engine.db, collection)
    first = steps[0]
    for sorted_by_id in (False, True):
        match = (FilterMatch(engine.db, collection, first.filter, engine.batch_size,
                             sorted_by_id=sorted_by_id) if first.filter else None)
        cursor = engine.db.get_collection(collection, codec_options=RAW).find()
        if sorted_by_id:
            cursor = cursor.sort("_id", 1)
        cursor = cursor.batch_size(engine.batch_size)
        try:
            for batch in op.batches(cursor, label or own.label, total):
                for raw in batch:
                    base = raw_bytes(raw)
                    sink.read(base)
                    for index, step in enumerate(steps):
                        if step is first and match is not None and not match.matches(raw):
                            continue
                        change = step.apply(base)
                        if isinstance(change, ServerUpdate):  # the copy-side update
                            sink.hold(base, index, change)
                            base = None
                            break
                        if change is not None:
                            if step is own:
                                sink.put(base, change)
                                base = None  # written
                                break
                            step.note(base, change)
                            base = change.new
                    if base is not None:
                        sink.put(base, None)
            if match is not None:
                match.finish()
            break
        except OrderMismatch:
            if sorted_by_id:
                raise
            engine.reporter.info(f"  {collection}: the filter's matches came in another "
                                 "order than the scan; scanning again sorted by _id")
            sink.restart()
        except BaseException:
            sink.abort()
            raise
        finally:
            if match is not None:
                match.close()
    try:
        return sink.finish()
    except LockLostError:
        raise
    except BaseException:
        sink.abort()
        raise


__all__ = ["Engine", "TMP_PREFIX", "rewrite_pass"]


def restore_rewrite(op: Operations, collection: str, side, void: frozenset[int]) -> int:
    """Put ``side``'s recorded values back by rewriting ``collection``: the live documents
    and the records, both sorted by ``_id``, merged in one pass."""
    from mongrate.mongo.order import bson_order_key, in_server_order
    from mongrate.mongo.rawdoc import Change
    from mongrate.operations.undo import grouped, restore_counting

    eng = op._engine
    if not side.exists():
        return 0
    step = Step(op, collection, "restore", None, f"{collection} restored")  # type: ignore[arg-type]
    sink = RewriteSink(eng, collection, [step])
    if not sink.start():  # restored by an earlier run, or its built copy swapped in now
        return int(eng.state(step).get("result") or 0)
    records = grouped(side.sorted_records(batch_size=eng.batch_size), void)
    head = next(records, None)
    gone = 0
    live = eng.db.get_collection(collection, codec_options=RAW).find().sort("_id", 1)
    live = live.batch_size(eng.batch_size)
    try:
        for batch in op.batches(live, f"restore {collection}", fast_count(eng.db, collection)):
            for raw in in_server_order(batch, "_id", collection):
                sink.read(raw_bytes(raw))
                key = bson_order_key(raw["_id"])
                while head is not None and bson_order_key(head[0]) < key:
                    gone += 1
                    head = next(records, None)
                cur = raw_bytes(raw)
                if head is not None and bson_order_key(head[0]) == key:
                    target, kept = restore_counting(cur, head[1])
                    side.kept += kept
                    head = next(records, None)
                    if target != cur:
                        sink.put(cur, Change(target, {}, [], {}, [], None))
                        continue
                sink.put(cur, None)
        gone += sum(1 for _ in records) + (head is not None)
        restored = sink.finish()
    except BaseException:
        sink.abort()
        raise
    if gone:
        op.log(f"{collection}: {gone} recorded documents no longer exist")
    return restored


#: Collection methods that read or write what a waiting change would alter.
_DATA_METHODS = (
    "aggregate", "aggregate_raw_batches", "bulk_write", "count_documents", "create_index",
    "create_indexes", "delete_many", "delete_one", "distinct", "drop", "drop_index",
    "drop_indexes", "estimated_document_count", "find", "find_one", "find_one_and_delete",
    "find_one_and_replace", "find_one_and_update", "find_raw_batches", "index_information",
    "insert_many", "insert_one", "list_indexes", "options", "rename", "replace_one",
    "update_many", "update_one", "watch",
)


class RunCollection(Collection):
    """A collection of ``op.db``: every read or write first writes the changes still
    waiting for it, however long ago the revision took the collection object."""

    def __init__(self, database: Database, name: str, engine: Engine, **options: Any):
        super().__init__(database, name, **options)
        self._mongrate_engine = engine

    @classmethod
    def of(cls, coll: Collection, engine: Engine) -> RunCollection:
        return cls(coll.database, coll.name, engine, codec_options=coll.codec_options,
                   read_preference=coll.read_preference, write_concern=coll.write_concern,
                   read_concern=coll.read_concern)

    def __getitem__(self, name: str) -> RunCollection:
        return RunCollection.of(super().__getitem__(name), self._mongrate_engine)

    def with_options(self, *args: Any, **kwargs: Any) -> RunCollection:
        return RunCollection.of(super().with_options(*args, **kwargs), self._mongrate_engine)


def _flushing(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: RunCollection, *args: Any, **kwargs: Any) -> Any:
        self._mongrate_engine.accessed(self.name)
        return method(self, *args, **kwargs)

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


for _name in _DATA_METHODS:
    setattr(RunCollection, _name, _flushing(getattr(Collection, _name)))


class RunDatabase(Database):
    """``op.db`` in a real run: the pymongo ``Database``, except that touching a collection
    first writes the changes still waiting for it, so a revision reading or writing through
    ``op.db`` always sees every change made before it (commands and aggregations on the
    database: all of them)."""

    def __init__(self, db: Database, engine: Engine):
        super().__init__(db.client, db.name, db.codec_options, db.read_preference,
                         db.write_concern, db.read_concern)
        self._mongrate_engine = engine

    def __getitem__(self, name: str) -> RunCollection:
        self._mongrate_engine.accessed(name)
        return RunCollection.of(super().__getitem__(name), self._mongrate_engine)

    def get_collection(self, name: str, *args: Any, **kwargs: Any) -> RunCollection:
        self._mongrate_engine.accessed(name)
        return RunCollection.of(super().get_collection(name, *args, **kwargs),
                                self._mongrate_engine)

    def create_collection(self, name: str, *args: Any, **kwargs: Any) -> RunCollection:
        self._mongrate_engine.accessed(name)
        return RunCollection.of(super().create_collection(name, *args, **kwargs),
                                self._mongrate_engine)

    def drop_collection(self, name_or_collection: Any, *args: Any, **kwargs: Any):
        self._mongrate_engine.accessed(getattr(name_or_collection, "name", name_or_collection))
        return super().drop_collection(name_or_collection, *args, **kwargs)

    def command(self, *args: Any, **kwargs: Any):
        self._mongrate_engine.accessed(None)
        return super().command(*args, **kwargs)

    def aggregate(self, *args: Any, **kwargs: Any):
        self._mongrate_engine.accessed(None)
        return super().aggregate(*args, **kwargs)
