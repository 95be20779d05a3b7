"""The rewrite pass: one streamed read of a collection applying one or several steps (a
helper call and the deferred changes waiting for it) to every document, written into a
copy that replaces the collection (:class:`~mongrate.operations.passes.RewriteSink`); and
its reverse, a downgrade's restore of recorded values by the same kind of pass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson.raw_bson import RawBSONDocument

from mongrate.errors import LockLostError
from mongrate.mongo.codec import RAW, id_key, raw_bytes
from mongrate.mongo.collections import fast_count
from mongrate.mongo.order import bson_order_key, in_server_order
from mongrate.mongo.pipeline import read_ahead
from mongrate.mongo.rawdoc import Change
from mongrate.operations.context import RevisionContext
from mongrate.operations.engine import Engine
from mongrate.operations.passes import RewriteSink
from mongrate.operations.step import ServerUpdate, Step
from mongrate.operations.undo import SideCollection, grouped, restore_counting


def rewrite_pass(engine: Engine, collection: str, steps: list[Step],
                 label: str | None = None) -> int:
    """One streamed rewrite of ``collection`` applying ``steps`` in order (the first may
    carry a server-side filter) to every document; returns what the last step changed."""
    own = steps[-1]
    sink = RewriteSink(engine, collection, steps)
    if not sink.start():
        # already written by an earlier run: the steps' records say done
        for step in steps:
            step.mark_done()
        return own.changed
    ctx = own.ctx
    total = fast_count(engine.db, collection)
    sink.watch(total)
    first = steps[0]
    for sorted_by_id in (False, True):
        match = (FilterMatch(engine.db, collection, first.filter, engine.batch_size,
                             sorted_by_id=sorted_by_id) if first.filter else None)
        cursor = engine.db.get_collection(collection, codec_options=RAW).find()
        if sorted_by_id:
            cursor = cursor.sort("_id", 1)
        cursor = cursor.batch_size(engine.batch_size)
        try:
            for batch in ctx.batches(cursor, label or own.label, total):
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
            sink.watch(total)  # restart stopped the watch: the new scan begins one
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


def restore_rewrite(ctx: RevisionContext, collection: str, side: SideCollection,
                    void: frozenset[int]) -> int:
    """Put ``side``'s recorded values back by rewriting ``collection``: the live documents
    and the records, both sorted by ``_id``, merged in one pass."""
    eng = ctx.engine
    if not side.exists():
        return 0
    step = Step(ctx, collection, "restore", None, f"{collection} restored")  # type: ignore[arg-type]
    sink = RewriteSink(eng, collection, [step])
    if not sink.start():  # restored by an earlier run, or its built copy swapped in now
        return int(step.state().get("result") or 0)
    records = grouped(side.sorted_records(batch_size=eng.batch_size), void)
    head = next(records, None)
    gone = 0
    total = fast_count(eng.db, collection)
    sink.watch(total)
    live = eng.db.get_collection(collection, codec_options=RAW).find().sort("_id", 1)
    live = live.batch_size(eng.batch_size)
    try:
        for batch in ctx.batches(live, f"restore {collection}", total):
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
        ctx.log(f"{collection}: {gone} recorded documents no longer exist")
    return restored


class FilterMatch:
    """Which documents of a full scan match a server-side filter, without a lookup per
    document: the matching ``_id``s are streamed in the same (natural) order as the scan
    and merged with it. If the two orders disagree (detected within a window, or by ids
    left over at the end), :class:`OrderMismatch` is raised and the caller scans again
    sorted by ``_id``."""

    def __init__(self, db, collection: str, filter: Mapping[str, Any], batch_size: int,
                 *, sorted_by_id: bool = False):
        cursor = db[collection].find(filter, {"_id": 1}).batch_size(batch_size)
        if sorted_by_id:
            cursor = cursor.sort("_id", 1)
        self._ids = read_ahead((id_key(d["_id"]) for d in cursor), batch_size)
        self._window: list[bytes] = []
        self._in_window: set[bytes] = set()
        self._size = 2 * batch_size
        self._refill()
        self.matched = 0

    def _refill(self) -> None:
        while len(self._window) < self._size:
            nxt = next(self._ids, None)
            if nxt is None:
                return
            self._window.append(nxt)
            self._in_window.add(nxt)

    def matches(self, raw: RawBSONDocument) -> bool:
        key = id_key(raw["_id"])
        if not self._window or key not in self._in_window:
            return False
        if self._window[0] != key:
            raise OrderMismatch()
        self._window.pop(0)
        self._in_window.discard(key)
        self._refill()
        self.matched += 1
        return True

    def finish(self) -> None:
        if self._window:
            raise OrderMismatch()

    def close(self) -> None:
        close = getattr(self._ids, "close", None)
        if close:
            close()


class OrderMismatch(Exception):
    """A scan and its filter's ids came in different orders."""
