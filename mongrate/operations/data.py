"""Data helpers of ``op``: change documents, linear on every server.

- ``op.update_many(collection, filter, update)``: MongoDB's own update semantics.
- ``op.change_each(collection, change, filter=None)``: a Python function edits each
  document (decoded exactly: dates past 9999 and every other BSON type included).
- ``op.change_groups(change, **sources)``: several collections read together, grouped by a
  key (``op.source(...)``), and the function edits the documents of each group.

How they write is the run's write strategy (:mod:`mongrate.operations.strategy`), never
the revision's concern: in place (only changed documents are sent), or a streamed rewrite
of the collection where single-document writes scan the table. Either way each change's
prior values are recorded first (:mod:`mongrate.operations.undo`).
"""

from __future__ import annotations

import heapq
import itertools
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson.errors import InvalidDocument
from bson.raw_bson import RawBSONDocument

from mongrate.errors import OpError, OrderError
from mongrate.mongo.codec import RAW, decode, owned, raw_bytes, utcnow
from mongrate.mongo.collections import collection_options, fast_count
from mongrate.mongo.conditional import Pending, write_if_unchanged
from mongrate.mongo.dryrun import summarise
from mongrate.mongo.order import bson_order_key
from mongrate.mongo.pipeline import chunked, prefetch, read_ahead
from mongrate.mongo.rawdoc import Change, diff, elements
from mongrate.mongo.update import UnsupportedUpdate, UpdateError, compile_update
from mongrate.operations.context import RevisionContext
from mongrate.operations.deferral import Deferral, LazyCount
from mongrate.operations.engine import Engine
from mongrate.operations.passes import (
    DryRunSink,
    InPlaceSink,
    PendingNeedsServer,
    RewriteSink,
    Sink,
    recover_swaps,
    rewrite_options,
    roll_back_in_place,
)
from mongrate.operations.rewrite import rewrite_pass
from mongrate.operations.step import ServerUpdate, Step
from mongrate.operations.undo import WRITE_ATTEMPTS, record, record_key

#: records a map source keeps in memory before sorting them to a temporary file
SPILL_RECORDS = 200_000
#: documents a map source reads at a time (they are the large ones)
MAP_BATCH = 32


class DataOps:
    """The data helpers (mixed into :class:`mongrate.operations.ops.Operations`)."""

    _ctx: RevisionContext
    _engine: Engine
    _deferral: Deferral

    # ------------------------------------------------------------ update_many
    def update_many(self, collection: str, filter: Mapping[str, Any] | None,
                    update: Mapping[str, Any], *, array_filters: Sequence[Mapping] | None = None,
                    label: str | None = None) -> int | LazyCount:
        """Apply ``update`` (MongoDB update operators) to every document matching
        ``filter``, with MongoDB's semantics; returns the number of documents changed.

        Prior values of the top-level fields the update names are recorded first.
        Pipeline updates are not accepted: use :meth:`change_each` for those.
        """
        if not isinstance(update, Mapping):
            raise OpError(f"{collection}: op.update_many takes an update document of "
                          "operators ($set, $unset...); for a pipeline or any other change "
                          "use op.change_each")
        compiled = None
        try:
            compiled = compile_update(update)
            touched, supported = set(compiled.fields), array_filters is None
        except UpdateError as exc:
            raise OpError(f"{collection}: invalid update {dict(update)!r}: {exc}") from None
        except UnsupportedUpdate:
            touched, supported = _top_level_fields(update), False
        if "_id" in touched:
            raise OpError(f"{collection}: op.update_many cannot change _id")
        if supported and collection_options(self._engine.db, collection).get("collation"):
            supported = False  # the server compares strings by it; the evaluator cannot
        filter = dict(filter or {})
        label = label or f"{collection} updated"
        seq = self._ctx.next_seq()
        now = utcnow()

        def changer(raw: RawBSONDocument) -> Change | ServerUpdate | None:
            base = raw_bytes(raw)
            try:
                return diff(base, dict(compiled.apply(decode(base), now=now)))
            except UpdateError as exc:
                raise OpError(f"{collection}: cannot apply {dict(update)!r} to document "
                              f"{raw['_id']!r}: {exc}") from None
            except UnsupportedUpdate:  # decided by these values: the server applies it
                return ServerUpdate(update, _prior(base, touched))

        if self.dry_run:
            return self._dry_run_pass(collection, filter, changer if supported else None, label,
                                      "update_many", f"{summarise(dict(update))}: ")
        if self._engine.strategy.rewrite and supported:
            return self._rewrite_step(Step(self._ctx, collection, seq, changer, label, filter or None))
        if self._engine.strategy.rewrite:
            self.log(f"{collection}: this update form is applied by the server document by "
                     "document; on this server that costs a scan per document")
        self._deferral.flush(collection)
        exact = changer if supported and "$currentDate" not in update else None
        return self._server_update(collection, filter, update, touched, seq, label,
                                   array_filters, exact)

    def _server_update(self, collection: str, filter: dict, update: Mapping[str, Any],
                       touched: set[str], seq: int, label: str,
                       array_filters: Sequence[Mapping] | None,
                       changer: Callable[[RawBSONDocument], Change | None] | None) -> int:
        """The server applies ``update`` in place, a batch of matched documents at a time,
        each batch's prior values recorded first.

        Where the client can compute what the update does (``changer``), each document's
        statement holds only while the fields the update reads or writes are as read, and
        its record says exactly what it wrote; a document the application changed first
        is read again. Otherwise one statement per batch covers its ``_id``s."""
        eng = self._engine
        step = Step(self._ctx, collection, seq, None, label)
        sink = InPlaceSink(eng, collection, [step])
        if not sink.start():
            return self._done_before(collection, seq, label)
        coll = eng.db.get_collection(collection, codec_options=RAW)
        side = step.side()
        for batch in self.batches(_by_id(coll.find(filter)), label):
            eng.check()
            if changer is not None:
                step.changed += self._update_conditionally(
                    coll, side, batch, changer, update, filter, touched, seq, sink)
                continue
            if self.direction == "upgrade":
                side.insert([record(base, seq, _prior(base, touched), known=False)
                             for base in map(raw_bytes, batch)])
            ids = [raw["_id"] for raw in batch]
            query = {"$and": [filter, {"_id": {"$in": ids}}]} if filter else {"_id": {"$in": ids}}
            result = eng.db[collection].update_many(query, dict(update),
                                                    array_filters=array_filters)
            step.changed += result.modified_count
        sink.report()
        step.mark_done()
        return step.changed

    def _update_conditionally(self, coll, side, batch: list[RawBSONDocument],
                              changer: Callable[[RawBSONDocument], Change | None],
                              update: Mapping[str, Any], filter: dict, touched: set[str],
                              seq: int, sink: InPlaceSink) -> int:
        """One batch of ``update_many`` as conditional statements; returns documents
        changed."""
        eng = self._engine
        upgrade = self.direction == "upgrade"
        items, plain = [], []
        for raw in batch:
            change = changer(raw)
            if isinstance(change, ServerUpdate):  # the server applies it, unconditionally
                plain.append(raw)
            elif change is not None:
                items.append(Pending(raw_bytes(raw), change, update=dict(update), on=touched,
                                     extra=filter or None))
        plain_bases = [raw_bytes(raw) for raw in plain]
        if upgrade:
            side.insert([record(p.base, seq, p.change) for p in items]
                        + [record(base, seq, _prior(base, touched), known=False)
                           for base in plain_bases])

        def server_applies(bases: list[bytes]) -> int:
            """The server applies ``update`` to these documents (values the client cannot
            decide on), unconditionally, in one command; their records are written."""
            if not bases:
                return 0
            ids = {"_id": {"$in": [RawBSONDocument(b, RAW)["_id"] for b in bases]}}
            query = {"$and": [filter, ids]} if filter else ids
            return coll.update_many(query, dict(update)).modified_count

        changed = server_applies(plain_bases)
        for _attempt in range(WRITE_ATTEMPTS):
            out = write_if_unchanged(coll, items, eng.statement_limit)
            changed += len(out.applied)
            sink.gone += len(out.gone)
            sink.unsure += len(out.unsure)
            if not out.missed:
                return changed
            sink.raced += len(out.missed)
            missed = {p.id_element: cur for p, cur in out.missed}
            still = set(missed)
            if filter:  # does what the application wrote still match the filter?
                ids = [p.doc_id() for p, _ in out.missed]
                found = coll.find({"$and": [filter, {"_id": {"$in": ids}}]}, {"_id": 1})
                still = {elements(raw_bytes(d))["_id"] for d in found}
            items, records, stale, plain_bases = [], [], [], []
            for p, cur in out.missed:
                change = changer(RawBSONDocument(cur, RAW)) if p.id_element in still else None
                if isinstance(change, ServerUpdate):  # now a value only the server decides
                    plain_bases.append(cur)
                    records.append(record(cur, seq, _prior(cur, touched), known=False))
                    continue
                if change is None:
                    sink.dropped += 1
                    stale.append(RawBSONDocument(record_key(p.id_element, seq), RAW))
                    continue
                items.append(Pending(cur, change, update=p.update, on=touched, extra=p.extra))
                records.append(record(cur, seq, change))
            if upgrade:
                if stale:
                    side.coll.delete_many({"_id": {"$in": stale}})
                side.replace(records)
            changed += server_applies(plain_bases)
            if not items:
                return changed
            eng.check()
        raise OpError(f"{coll.name}: {len(items)} documents kept changing while the update "
                      f"was applied to them ({WRITE_ATTEMPTS} attempts, each read again); run "
                      "the revision again when the application writes them less")

    # ------------------------------------------------------------ change_each
    def change_each(self, collection: str,
                    change: Callable[[dict[str, Any]], Mapping[str, Any] | None], *,
                    filter: Mapping[str, Any] | None = None,
                    label: str | None = None) -> int | LazyCount:
        """Call ``change(doc)`` on every document (matching ``filter``) and store what it
        did: edit ``doc`` in place, or return a new document. Returns documents changed.

        ``doc`` is decoded exactly (``Int64`` stays ``Int64``, dates outside Python's range
        are ``DatetimeMS``); fields it does not touch are written back byte for byte.
        Existing fields keep their place and new ones are appended as MongoDB's ``$set``
        appends them. ``_id`` cannot change. ``change`` must be deterministic: an
        interrupted run calls it again.
        """
        label = label or f"{collection} changed"
        seq = self._ctx.next_seq()
        changer = _doc_changer(change, collection)
        filter = dict(filter or {})
        if self.dry_run:
            return self._dry_run_pass(collection, filter, changer, label, "change_each")
        if self._engine.strategy.rewrite:
            return self._rewrite_step(Step(self._ctx, collection, seq, changer, label, filter or None))
        step = Step(self._ctx, collection, seq, changer, label)
        sink = InPlaceSink(self._engine, collection, [step])
        if not sink.start():
            return self._done_before(collection, seq, label)
        coll = self._engine.db.get_collection(collection, codec_options=RAW)
        try:
            for batch in self.batches(_by_id(coll.find(filter)), label, None):
                for raw in batch:
                    raw = owned(raw)
                    sink.put(raw.raw, changer(raw))
            return sink.finish()
        except BaseException:
            sink.abort()
            raise

    def _done_before(self, collection: str, seq: int, label: str) -> int:
        """What a pass an earlier run finished changed (it is not run again)."""
        n = int(self._ctx.pass_state(collection, seq).get("result") or 0)
        self._ctx.results.setdefault(label, n)
        return n

    def _rewrite_step(self, step: Step) -> int | LazyCount:
        eng, queue = self._engine, self._deferral
        recover_swaps(eng, step.collection)  # a swap cut short may have written this step
        state = step.state()
        if state.get("state") == "done":  # an earlier run wrote it
            step.done = True
            return self._done_before(step.collection, step.seq, step.label)
        rewrite_options(eng, step.collection)  # refused before anything is written
        roll_back_in_place(eng, step, state)  # cut short by a run on the in-place strategy
        if queue.can_defer:
            return queue.defer(step)
        if step.filter:
            queue.flush(step.collection)
        pending = queue.take_pending(step.collection)
        try:
            return rewrite_pass(eng, step.collection, [*pending, step])
        except BaseException:
            queue.give_back(step.collection, pending)
            raise

    def _dry_run_pass(self, collection: str, filter: dict,
                      changer: Callable[[RawBSONDocument], Change | None] | None, label: str,
                      what: str, detail: str = "") -> int:
        """Read what a real run would read and count what it would change."""
        coll = self._engine.db.get_collection(collection, codec_options=RAW)
        matched = changed = 0
        for batch in self.batches(coll.find(filter), label):
            for raw in batch:
                matched += 1
                if changer is None or changer(raw) is not None:
                    changed += 1
        how = self._engine.strategy.name.replace("_", "-")
        self._ctx.would(collection, what, f"{detail}changes {changed} of {matched} matching "
                                             f"documents ({how})")
        return changed

    # ---------------------------------------------------------- change_groups
    def source(self, collection: str, key: str | Sequence[str], *, order: str | None = None,
               filter: Mapping[str, Any] | None = None,
               projection: Mapping[str, Any] | None = None,
               convert: Callable[[Any], Any] | None = None,
               map: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None) -> Source:
        """One collection of a :meth:`change_groups` pass, grouped by ``key`` (a field or
        a tuple of fields), each group sorted by ``order``.

        A source with ``filter``, ``projection`` or ``map`` is read only. ``convert`` turns
        each key value into what other sources hold (e.g. ``str`` for ObjectIds kept as hex
        elsewhere); it must keep the server's order. ``map`` reduces each document (read in
        stored order) to a small one before grouping, so large documents are not sorted by
        the server (e.g. GridFS chunks reduced to what their first bytes say).
        """
        keys = (key,) if isinstance(key, str) else tuple(key)
        if not keys:
            raise OpError(f"op.source({collection!r}): a key needs at least one field")
        return Source(collection, keys, order, dict(filter) if filter is not None else None,
                      dict(projection) if projection is not None else None, convert, map)

    def change_groups(self, change: Callable[..., Any], /, **sources: Source) -> dict[str, int]:
        """Read ``sources`` together in key order and call ``change(key, **groups)`` once
        per key, ``groups`` holding each source's documents with that key (a list, maybe
        empty). Edits ``change`` makes to documents of writable sources are stored, with
        their prior values recorded. Returns documents changed per writable collection.

        Memory holds one group. Documents are decoded exactly, as in :meth:`change_each`.
        """
        if not sources:
            raise OpError("op.change_groups needs at least one op.source(...)")
        for name, src in sources.items():
            if not isinstance(src, Source):
                raise OpError(f"op.change_groups: {name}= must be op.source(...)")
        writable = {name: s for name, s in sources.items() if s.writable}
        colls = [s.collection for s in writable.values()]
        if len(set(colls)) != len(colls):
            raise OpError("op.change_groups: a collection can be written by one source only")
        seq = self._ctx.next_seq()
        label = ", ".join(colls) or ", ".join(s.collection for s in sources.values())
        eng, queue = self._engine, self._deferral
        for src in sources.values():
            if not src.writable:
                queue.accessed(src.collection)  # read what is stored, changes included
        for _attempt in range(len(writable) + 1):  # each retry writes one waiting change
            sinks: dict[str, Sink] = {}
            taken: dict[str, list[Step]] = {}
            try:
                for name, src in writable.items():
                    step = Step(self._ctx, src.collection, seq, None, f"{src.collection} changed")
                    if self.dry_run:
                        sinks[name] = DryRunSink(eng, src.collection, [step])
                        continue
                    if eng.strategy.rewrite:
                        rewrite_options(eng, src.collection)  # refused before any write
                        pending = queue.take_pending(src.collection)
                        if pending and pending[0].filter:  # absorbed only in stored order
                            queue.give_back(src.collection, pending)
                            queue.flush(src.collection)
                            pending = queue.take_pending(src.collection)
                        taken[src.collection] = pending
                        sink: Sink = RewriteSink(eng, src.collection, [*pending, step])
                    else:
                        queue.flush(src.collection)
                        sink = InPlaceSink(eng, src.collection, [step])
                    if sink.start():
                        sinks[name] = sink
                    elif pending := taken.pop(src.collection, None):
                        queue.give_back(src.collection, pending)  # its pass was done already
                if writable and not sinks:  # an earlier run wrote them all
                    return {s.collection: self._done_before(s.collection, seq,
                                                            f"{s.collection} changed")
                            for s in writable.values()}
                counts = self._group_pass(change, sources, sinks, label)
                if self.dry_run:
                    how = eng.strategy.name.replace("_", "-")
                    for sink in sinks.values():
                        self._ctx.would(sink.collection, "change_groups",
                                           f"changes {sink.changed} of {sink.seen} documents "
                                           f"({how})")
                for coll, pending in taken.items():
                    queue.give_back(coll, pending)  # those not written (none, normally)
                return counts
            except (_KeyChanged, PendingNeedsServer) as exc:
                for sink in sinks.values():
                    sink.abort()
                for coll, pending in taken.items():
                    queue.give_back(coll, pending)
                why = ("alters its grouping key" if isinstance(exc, _KeyChanged)
                       else "needs the server for some documents")
                self.log(f"{exc.collection}: a change waiting for it {why}; writing that "
                         "change first")
                queue.flush(exc.collection)
            except BaseException:
                for sink in sinks.values():
                    sink.abort()
                for coll, pending in taken.items():
                    queue.give_back(coll, pending)
                raise
        raise OpError(f"op.change_groups over {label}: could not settle waiting changes")

    def _group_pass(self, change: Callable[..., Any], sources: Mapping[str, Source],
                    sinks: Mapping[str, Sink], label: str) -> dict[str, int]:
        eng = self._engine
        first = next(iter(sources))
        total = fast_count(eng.db, sources[first].collection)  # for the progress line
        for name, sink in sinks.items():  # before any source is read
            sink.watch(total if name == first else None)
        streams = {}
        for name, src in sources.items():
            sink = sinks.get(name)
            stream = src.stream(self._ctx, absorb=sink.absorb if sink is not None else None)
            if name == first:
                stream = self.progress(stream, total, f"{label} ({src.collection})")
            streams[name] = stream
        try:
            for key, groups in _merge(streams):
                docs = {name: [decode(base) for base in raws] for name, raws in groups.items()}
                change(key if len(key) > 1 else key[0], **docs)
                for name, sink in sinks.items():
                    for base, doc in zip(groups[name], docs[name], strict=True):
                        try:
                            sink.put(base, diff(base, doc))
                        except ValueError as exc:
                            raise OpError(f"{sources[name].collection}: {exc}") from None
        finally:
            for stream in streams.values():
                close = getattr(stream, "close", None)
                if close:
                    close()
        return {sources[name].collection: sink.finish() for name, sink in sinks.items()}


# ------------------------------------------------------------------ sources
@dataclass
class Source:
    """A collection read by :meth:`DataOps.change_groups` (made by ``op.source``)."""

    collection: str
    keys: tuple[str, ...]
    order: str | None
    filter: dict[str, Any] | None
    projection: dict[str, Any] | None
    convert: Callable[[Any], Any] | None
    map: Callable[[dict[str, Any]], Mapping[str, Any]] | None

    @property
    def writable(self) -> bool:
        return self.filter is None and self.projection is None and self.map is None

    def key_of(self, doc: Mapping[str, Any]) -> tuple:
        values = tuple(_field(doc, k) for k in self.keys)
        return tuple(self.convert(v) for v in values) if self.convert else values

    def stream(self, ctx: RevisionContext, absorb: Callable[[bytes], bytes] | None = None
               ) -> Iterator[tuple[tuple, tuple, bytes]]:
        """(order key, key, document bytes) in key order, checked as they come."""
        db = ctx.engine.db
        if self.map is not None:
            return _sorted_maps(self, ctx)
        sort = [(k, 1) for k in self.keys] + ([(self.order, 1)] if self.order else [])
        sort.append(("_id", 1))
        projection = self.projection
        if projection is not None and any(v for v in projection.values()):
            projection = {**projection, **{k: 1 for k in self.keys}}
            if self.order:
                projection[self.order] = 1
        cursor = db.get_collection(self.collection, codec_options=RAW).find(
            self.filter or {}, projection).sort(sort).allow_disk_use(True)
        return self._checked(read_ahead(cursor.batch_size(ctx.batch_size), ctx.batch_size), absorb)

    def _checked(self, docs: Iterable[RawBSONDocument], absorb: Callable[[bytes], bytes] | None
                 ) -> Iterator[tuple[tuple, tuple, bytes]]:
        last = None
        for raw in docs:
            key = self.key_of(raw)
            order = tuple(bson_order_key(v) for v in key)
            if last is not None and order < last:
                raise OrderError(
                    f"{self.collection}: documents did not come in the order of "
                    f"{', '.join(self.keys)}{' after convert' if self.convert else ''}; "
                    "a convert function must keep the server's order", collection=self.collection)
            last = order
            read = base = raw_bytes(raw)
            if absorb is not None:
                base = absorb(base)
                if base is not read and self.key_of(RawBSONDocument(base, RAW)) != key:
                    raise _KeyChanged(self.collection)
            yield order, key, base


class _KeyChanged(Exception):
    def __init__(self, collection: str):
        super().__init__(collection)
        self.collection = collection


def _by_id(cursor):
    """An in-place pass's cursor walks the ``_id`` index: a filter answered from another
    index could meet a document again after the pass moved it in that index (and apply a
    change such as ``$inc`` twice)."""
    return cursor.hint([("_id", 1)])


def _field(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _sorted_maps(src: Source, ctx: RevisionContext) -> Iterator[tuple[tuple, tuple, bytes]]:
    """A map source: read in stored order, reduced by ``map``, sorted here (in memory, or
    in sorted runs on a temporary disk file when there are many)."""
    import bson

    from mongrate.mongo.codec import EXACT

    coll = ctx.engine.db.get_collection(src.collection, codec_options=RAW)
    # a map source is for large documents (GridFS chunks hold up to 255 KiB): small batches
    # keep the read-ahead's memory bounded whatever the batch_size
    size = min(ctx.batch_size, MAP_BATCH)
    cursor = coll.find(src.filter or {}, src.projection).batch_size(size)
    runs: list[str] = []
    items: list[tuple] = []
    counter = itertools.count()

    def spill() -> None:
        items.sort(key=lambda t: (t[0], t[1]))
        fd, path = tempfile.mkstemp(prefix="mongrate-sort-")
        with os.fdopen(fd, "wb") as out:
            for item in items:
                pickle.dump(item, out)
        runs.append(path)
        items.clear()

    batches = ctx.progress(prefetch(chunked(cursor, size)), None, f"read {src.collection}",
                          weight=len)
    for batch in batches:
        for raw in batch:
            doc = decode(raw.raw)
            key = src.key_of(doc)
            reduced = dict(src.map(doc) or {})
            reduced.setdefault("_id", doc.get("_id"))
            order = tuple(bson_order_key(v) for v in key)
            items.append((order, next(counter), key, bson.encode(reduced, codec_options=EXACT)))
            if len(items) >= SPILL_RECORDS:
                spill()

    def read_run(path: str) -> Iterator[tuple]:
        try:
            with open(path, "rb") as f:
                while True:
                    try:
                        yield pickle.load(f)
                    except EOFError:
                        return
        finally:
            os.unlink(path)

    items.sort(key=lambda t: (t[0], t[1]))
    merged = heapq.merge(items, *(read_run(p) for p in runs), key=lambda t: (t[0], t[1]))
    return ((order, key, raw) for order, _, key, raw in merged)


def _merge(streams: Mapping[str, Iterator[tuple[tuple, tuple, bytes]]]
           ) -> Iterator[tuple[tuple, dict[str, list[bytes]]]]:
    """Group several key-ordered streams: each key once, with every stream's documents."""
    heads = {name: next(stream, None) for name, stream in streams.items()}
    while True:
        live = [h for h in heads.values() if h is not None]
        if not live:
            return
        low = min(h[0] for h in live)
        key = next(h[1] for h in live if h[0] == low)
        groups: dict[str, list[bytes]] = {name: [] for name in streams}
        for name, stream in streams.items():
            head = heads[name]
            while head is not None and head[0] == low:
                groups[name].append(head[2])
                head = next(stream, None)
            heads[name] = head
        yield key, groups


def _prior(raw: bytes, touched: set[str]) -> Change:
    """A Change standing for "these fields may change": their current elements as priors,
    the missing ones as absent, and the field order (an update may remove fields)."""
    elems = elements(raw)
    return Change(new=raw, set={}, removed=[],
                  prior={f: elems[f] for f in touched if f in elems},
                  absent=sorted(f for f in touched if f not in elems), keys=list(elems))


def _top_level_fields(update: Mapping[str, Any]) -> set[str]:
    fields: set[str] = set()
    for operator, spec in update.items():
        if isinstance(spec, Mapping):
            fields.update(str(k).split(".")[0] for k in spec)
            if operator == "$rename":
                fields.update(str(v).split(".")[0] for v in spec.values())
    return fields


def _doc_changer(fn: Callable[[dict[str, Any]], Mapping[str, Any] | None], collection: str
                 ) -> Callable[[RawBSONDocument], Change | None]:
    """The changer of ``op.change_each``: ``fn`` edits a decoded document in place, or
    returns a new one."""
    def change(raw: RawBSONDocument) -> Change | None:
        base = raw_bytes(raw)
        doc = decode(base)
        out = fn(doc)
        if out is not None and not isinstance(out, Mapping):
            raise OpError(f"{collection}: the change function returned {out!r:.60}, not a "
                          "document: edit the document it is given and return None, or "
                          "return the new document")
        try:
            return diff(base, doc if out is None else out)
        except (ValueError, InvalidDocument) as exc:  # _id changed, or a value BSON lacks
            raise OpError(f"{collection}: document {raw['_id']!r}: {exc}") from None

    return change


__all__ = ["DataOps", "Source"]
