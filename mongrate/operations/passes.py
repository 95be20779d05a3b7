"""Passes: one helper call's (or several deferred calls') reading and writing of a collection.

A pass reads documents, hands each to its steps (a step is one helper call: a change
function, an update document, or a group change made by the caller), records each step's
prior values in that step's revision's side collection (:mod:`mongrate.operations.undo`)
before the document is written, and writes:

- :class:`InPlaceSink`: the changed documents only, as ``$set``/``$unset`` by ``_id``.
- :class:`RewriteSink`: every document into ``mongrate_tmp_<rev>_<seq>_<collection>``,
  which then replaces the collection (its indexes copied first). The live collection is not
  touched until that swap, so an interrupted pass starts over; a swap cut short is finished.
- :class:`DryRunSink`: nothing; it counts.

Each step has a state record in the undo collection (``kind: "pass"``, ``doc_id:
"pass:<seq>"``; a downgrade's restore by rewrite has ``pass:restore``). A re-run skips done
steps and resumes the rest: an in-place step cut short is first rolled back from its own
records (so non-idempotent updates such as ``$inc`` are not applied twice), a rewrite is
rebuilt, a built copy is swapped in. Each state says which copies of the collection exist
and which one is complete, so that no resumed step drops the only complete one:

============  =====================================================================
``deferred``  waiting for a later pass (rewrite); no copy
``running``   in place: some documents written, each after its records
``building``  the copy (``tmp``) partial or absent; the live collection untouched, and
              the records of the pass describe nothing that happened. Whoever drops a
              built copy without swapping it says ``building`` first
``built``     the copy complete. Live and copy both there: never swapped. The copy alone:
              a rename cut short after the live collection was dropped. The live one
              alone: renamed in
``copying``   copy-back (no rename there): the copy complete, the live collection being
              dropped and filled from it
``copied``    copy-back: the live collection complete; the copy is dropped next
``done``      written (its count in ``result``)
============  =====================================================================

Where the collections left do not fit the state (a ``copying`` copy gone, or neither
collection there), :func:`resume_swap` drops nothing and stops with one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import ReplaceOne
from pymongo.errors import OperationFailure

from mongrate.errors import OpError, RewriteError, UnsettledSwap
from mongrate.mongo.codec import INVALID_NAMESPACE, RAW, id_key
from mongrate.mongo.collections import (
    ContentChecksum,
    bulk_write,
    collection_checksum,
    collection_options,
    copy_collection,
    copy_indexes,
    copy_options,
    create_like,
    fast_count,
    rename_replacing,
)
from mongrate.mongo.conditional import Pending, write_if_unchanged
from mongrate.mongo.pipeline import BackgroundWriter
from mongrate.mongo.rawdoc import Change
from mongrate.mongo.witness import WriteWitness
from mongrate.names import TMP_PREFIX, tmp_name  # noqa: F401 - the names live there
from mongrate.operations.context import state_key
from mongrate.operations.engine import Engine
from mongrate.operations.step import ServerUpdate, Step
from mongrate.operations.undo import WRITE_ATTEMPTS, record, record_key


class PendingNeedsServer(Exception):
    """A deferred step needs the server for a document a group pass was absorbing it
    into: write the deferred steps in a pass of their own first."""

    def __init__(self, collection: str):
        super().__init__(collection)
        self.collection = collection


def rewrite_options(engine: Engine, collection: str) -> dict[str, Any]:
    """The creation options the copy of ``collection`` gets; refused (before anything is
    written) for a collection that no copy can replace."""
    try:
        return copy_options(engine.db, collection)
    except ValueError as exc:
        raise RewriteError(f"{exc}; the rewrite strategy cannot change it: set "
                           "write_strategy = in_place in mongrate.ini") from None


class Sink:
    """Where a pass's documents go. ``start()`` says whether there is work left."""

    def __init__(self, engine: Engine, collection: str, steps: list[Step]):
        self.engine = engine
        self.db = engine.db
        self.collection = collection
        self.steps = steps
        self.own = steps[-1]  # the pass's state record and temp names are the last step's
        self.seen = 0

    def start(self) -> bool:
        raise NotImplementedError

    def absorb(self, base: bytes) -> bytes:
        """``base`` with the deferred steps (all but the last) applied and recorded."""
        for step in self.steps[:-1]:
            change = step.apply(base)
            if isinstance(change, ServerUpdate):
                raise PendingNeedsServer(self.collection)
            if change is not None:
                step.note(base, change)
                base = change.new
        return base

    def watch(self, total: int | None = None) -> None:
        """Called before the pass's first read (see :meth:`RewriteSink.watch`)."""

    def put(self, base: bytes, change: Change | None) -> None:
        raise NotImplementedError

    def hold(self, base: bytes, index: int, update: ServerUpdate) -> None:
        """``base`` goes on with ``steps[index]`` applied by the server (then the rest)."""
        raise RewriteError(f"{self.collection}: this pass cannot hand a document to the server")

    def finish(self) -> int:
        raise NotImplementedError

    def abort(self) -> BaseException | None:
        """Stop writing (the pass failed); what is recorded stays for a resume."""
        return None

    @property
    def changed(self) -> int:
        return self.own.changed


class DryRunSink(Sink):
    """Counts what would change; writes nothing."""

    def start(self) -> bool:
        return True

    def put(self, base: bytes, change: Change | None) -> None:
        self.seen += 1
        if change is not None:
            self.own.changed += 1

    def hold(self, base: bytes, index: int, update: ServerUpdate) -> None:
        self.seen += 1
        self.own.changed += 1  # may change: only the server can tell

    def finish(self) -> int:
        return self.own.changed


def roll_back_in_place(engine: Engine, step: Step, state: Mapping[str, Any]) -> None:
    """An in-place pass of ``step`` cut short (``state`` says ``running``, whatever this run's
    strategy is): put back what it wrote from its own records, so that running it again
    does not apply a change such as ``$inc`` twice."""
    if state.get("state") != "running":
        return
    side = step.side()
    side.restore_in_place(batch_size=engine.batch_size, statement_limit=engine.statement_limit,
                          seqs=[step.seq], guard=engine.guard)
    side.coll.delete_many({"_id.s": step.seq})


class InPlaceSink(Sink):
    """Changed documents only: records first, then one bulk of conditional
    ``$set``/``$unset`` per batch. A document the application changed since it was read
    is not overwritten: it is read again and its change computed again
    (:mod:`mongrate.mongo.conditional`)."""

    def __init__(self, engine: Engine, collection: str, steps: list[Step]):
        super().__init__(engine, collection, steps)
        if len(steps) != 1:
            raise RewriteError("in-place passes take no deferred steps")
        self.coll = self.db.get_collection(collection, codec_options=RAW)
        self._updates: list[Pending] = []
        self._writer: BackgroundWriter | None = None
        #: written by the writer thread only: documents the application wrote between
        #: this pass's read and write (read again), of those the ones that then needed no
        #: change or could not be recomputed here (left as the application wrote them),
        #: ones where it is unknown whose write came last, and ones it deleted
        self.raced = self.dropped = self.left = self.unsure = self.gone = 0

    def start(self) -> bool:
        eng, step = self.engine, self.own
        recover_swaps(eng, self.collection)  # a rewrite cut short by a run on another strategy
        state = eng.undo.find_one(step.key) or {}
        if state.get("state") == "done":
            return False
        roll_back_in_place(eng, step, state)
        eng.undo.update_one(step.key, {"$set": {"state": "running", "strategy": "in_place"},
                                       "$unset": {"tmp": "", "steps": ""}}, upsert=True)
        if state.get("tmp"):  # a rewrite's copy, never swapped in (swaps are settled)
            self.db.drop_collection(state["tmp"])
        return True

    def put(self, base: bytes, change: Change | None) -> None:
        self.seen += 1
        if change is None:
            return
        self.own.note(base, change)
        self._updates.append(Pending(base, change))
        if len(self._updates) >= self.engine.batch_size:
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            self._writer = BackgroundWriter(guard=self.engine.guard)
        priors, updates = self.own.take_priors(), self._updates
        self._updates = []
        if priors:
            self._writer.submit(self.own.side().insert, priors)
        if updates:
            self._writer.submit(self._write, updates)

    def _write(self, items: list[Pending]) -> None:
        """Write a batch conditionally; documents the application wrote first are read
        again and their change computed again, their records replaced before the write."""
        step, side = self.own, self.own.side()
        for _attempt in range(WRITE_ATTEMPTS):
            out = write_if_unchanged(self.coll, items, self.engine.statement_limit)
            self.gone += len(out.gone)
            self.unsure += len(out.unsure)
            items, records, stale = [], [], []
            for p, cur in out.missed:
                self.raced += 1
                change = step.apply(cur) if step.changer is not None else None
                if change is None:
                    if step.changer is None:
                        self.left += 1
                    else:
                        self.dropped += 1
                    stale.append(RawBSONDocument(record_key(p.id_element, step.seq), RAW))
                    continue
                items.append(Pending(cur, change))
                if step.ctx.direction == "upgrade":
                    records.append(record(cur, step.seq, change))
            if stale:
                side.coll.delete_many({"_id": {"$in": stale}})
            side.replace(records)
            if not items:
                return
            self.engine.check()
        raise OpError(f"{self.collection}: {len(items)} documents kept changing while "
                      f"{step.label} wrote them ({WRITE_ATTEMPTS} attempts, each read "
                      "again); run the revision again when the application writes them less")

    def finish(self) -> int:
        self._flush()
        if self._writer is not None:
            self._writer.drain()
            self._writer.close()
        own = self.own
        own.changed -= self.dropped + self.left + self.gone + self.unsure
        self.report()
        own.mark_done()
        return own.changed

    def report(self) -> None:
        """Say what the application's writes during the pass did to it."""
        ctx, label = self.own.ctx, self.own.label
        if self.raced:
            ctx.results[f"{label}: written by the application during the pass"] = self.raced
            ctx.log(f"{self.collection}: {self.raced} documents were written by the "
                    "application between this pass's read and write: read again"
                    + (f", {self.dropped} of them needed no change any more"
                       if self.dropped else ""))
        if self.left:
            ctx.results[f"{label}: left as the application wrote them"] = self.left
            ctx.log(f"{self.collection}: {self.left} documents written by the application "
                    "during the pass were left as it wrote them, not changed (their group "
                    "cannot be read again here): run this revision's change on them again")
        if self.unsure:
            ctx.results[f"{label}: unsure, left as the application wrote them"] = self.unsure
            ctx.log(f"{self.collection}: {self.unsure} documents were written by the "
                    "application at the moment of this pass's write; whether the change "
                    "landed first is unknown, so they are left as they are")
        if self.gone:
            ctx.results[f"{label}: deleted by the application during the pass"] = self.gone

    def abort(self) -> BaseException | None:
        if self._writer is None:
            return None
        error, self._writer = self._writer.close(cancel=True), None
        return error


class RewriteSink(Sink):
    """Every document into a new collection that then replaces the live one."""

    def __init__(self, engine: Engine, collection: str, steps: list[Step]):
        super().__init__(engine, collection, steps)
        self.tmp = tmp_name(self.own.ctx.revision, self.own.seq, collection)
        #: what the pass read of the live collection, checked again before the swap
        self.read_sum = ContentChecksum()
        self._docs: list[RawBSONDocument] = []
        self._held: list[tuple[bytes, int, ServerUpdate]] = []
        self._writer: BackgroundWriter | None = None
        self.options: dict[str, Any] = {}
        self._bytes = 0
        #: who else wrote to the server during the pass, where the server can say
        self.witness: WriteWitness | None = None

    def start(self) -> bool:
        eng, own = self.engine, self.own
        recover_swaps(eng, self.collection)
        state = eng.undo.find_one(own.key) or {}
        if state.get("state") == "done":
            return False
        roll_back_in_place(eng, own, state)
        wanted = [s.ident for s in self.steps]
        if state.get("state") == "built" and state.get("steps") == wanted:
            for step, n in zip(self.steps, state.get("counts") or (), strict=False):
                step.changed = n
            self._swap()  # built, never swapped (recover_swaps settled the rest): swap it in
            return False
        self.options = rewrite_options(eng, self.collection)
        # "building" before the old copy goes: "built" with its copy gone means swapped
        eng.undo.update_one(own.key, {"$set": {"state": "building", "strategy": "rewrite",
                                               "tmp": self.tmp, "steps": wanted}}, upsert=True)
        self.db.drop_collection(self.tmp)  # half built, or built for other steps
        create_like(self.db, self.tmp, self.options)  # capped, validator, collation...
        if len(self.steps) > 1:
            eng.reporter.info(f"  {self.collection}: one pass writes the changes of "
                              f"{', '.join(wanted)}")
        return True

    def watch(self, total: int | None = None) -> None:
        """Before the pass's first read of its ``total`` documents (counted here if not
        given): where the server can prove later that nobody else wrote meanwhile, start
        watching. A collection one batch holds is cheaper to read again than the server's
        status twice."""
        if total is None:
            total = fast_count(self.db, self.collection)
        if total > self.engine.batch_size:
            self.witness = WriteWitness.begin(self.db, self.collection)

    def _unwatch(self) -> None:
        """Stop watching without an answer (an open witness makes every later command of
        the client count for it)."""
        if self.witness is not None:
            self.witness.close()
            self.witness = None

    def read(self, raw: bytes) -> None:
        """Note a document as read from the live collection (before any change)."""
        self.read_sum.add(raw)

    def absorb(self, base: bytes) -> bytes:
        self.read(base)
        return super().absorb(base)

    def put(self, base: bytes, change: Change | None) -> None:
        self.seen += 1
        if change is not None:
            self.own.note(base, change)
            base = change.new
        self._bytes += len(base)
        self._docs.append(RawBSONDocument(base, RAW))
        if len(self._docs) >= self.engine.batch_size:
            self._flush()

    def hold(self, base: bytes, index: int, update: ServerUpdate) -> None:
        """The copy-side update: ``base`` is written to the copy as it is, then the server
        applies ``steps[index]``'s update to it there (one command per step and batch),
        and the steps after it go on from what the server stored."""
        self.seen += 1
        self.steps[index].note(base, update)
        self._bytes += len(base)
        self._docs.append(RawBSONDocument(base, RAW))
        self._held.append((base, index, update))
        if len(self._docs) >= self.engine.batch_size:
            self._flush()

    def _settle(self, held: list[tuple[bytes, int, ServerUpdate]]) -> None:
        """Apply the held documents' updates on the copy (they are written), then the later
        steps to what the server made of them; repeat while a later step needs it too."""
        tmp = self.db.get_collection(self.tmp, codec_options=RAW)
        while held:
            groups: dict[int, tuple[ServerUpdate, list[Any]]] = {}
            for base, index, update in held:
                groups.setdefault(index, (update, []))[1].append(
                    RawBSONDocument(base, RAW)["_id"])
            for _index, (update, ids) in sorted(groups.items()):
                self.engine.check()
                try:
                    tmp.update_many({"_id": {"$in": ids}}, dict(update.update))
                except OperationFailure as exc:
                    raise OpError(f"{self.collection}: the server refused {dict(update.update)!r} "
                                  f"on one of the documents {ids[:5]!r}: "
                                  f"{str(exc).split(', full error')[0]}") from None
            ids = [RawBSONDocument(base, RAW)["_id"] for base, _, _ in held]
            stored = {id_key(d["_id"]): bytes(d.raw) for d in tmp.find({"_id": {"$in": ids}})}
            again: list[tuple[bytes, int, ServerUpdate]] = []
            replace = []
            for (base, index, _update), _id in zip(held, ids, strict=True):
                after = stored[id_key(_id)]
                if after == bytes(base):
                    self.steps[index].changed -= 1  # the server left it as it was
                doc = after
                for later in range(index + 1, len(self.steps)):
                    change = self.steps[later].apply(doc)
                    if isinstance(change, ServerUpdate):
                        self.steps[later].note(doc, change)
                        again.append((doc, later, change))
                        break
                    if change is not None:
                        self.steps[later].note(doc, change)
                        doc = change.new
                if doc != after:
                    replace.append(ReplaceOne({"_id": _id}, RawBSONDocument(doc, RAW)))
            for step in self.steps:  # records first, then what they protect
                priors = step.take_priors()
                if priors:
                    step.side().insert(priors)
            if replace:
                self.engine.check()
                bulk_write(tmp, replace, self.engine.statement_limit, ordered=True)
            held = again

    def _flush(self) -> None:
        if self._writer is None:
            self._writer = BackgroundWriter(guard=self.engine.guard)
        # one writer, in order: a document is never written before its prior values
        for step in self.steps:
            priors = step.take_priors()
            if priors:
                self._writer.submit(step.side().insert, priors)
        if self._docs:
            docs, self._docs = self._docs, []
            # stored documents are carried as they are, valid or not (as in place)
            bypass = {"bypass_document_validation": True} if self.options.get("validator") else {}
            self._writer.submit(self.db.get_collection(self.tmp, codec_options=RAW).insert_many,
                                docs, ordered=False, **bypass)
        if self._held:  # the server's part needs those documents written
            held, self._held = self._held, []
            self._writer.drain()
            self._settle(held)

    def restart(self) -> None:
        """Throw away what was built (the live collection was not touched) and begin again."""
        error = self.abort()
        if error is not None and not isinstance(error, RewriteError):
            raise error  # e.g. the lock was lost: not a reason to start over
        self._docs = []
        self._held = []
        self.seen = self._bytes = 0
        self.read_sum = ContentChecksum()
        self.engine.check()
        for step in self.steps:
            step.changed, step.priors = 0, []
            # records the first scan wrote may be wrong (a filtered step it misapplied):
            # 'the first record stands' must not keep them
            step.side().coll.delete_many({"_id.s": step.seq})
        self.db.drop_collection(self.tmp)

    def abort(self) -> BaseException | None:
        """Stop writing; never raises (the error being handled stays the one raised), but
        returns the writer's own error, if any."""
        self._unwatch()
        if self._writer is None:
            return None
        error = self._writer.close(cancel=True)
        self._writer = None
        return error

    def finish(self) -> int:
        self._flush()
        if self._writer is not None:
            self._writer.drain()
            self._writer.close()
            self._writer = None
        backups = [s.backup for s in self.steps if s.backup is not None]
        if backups and not self.read_sum.count:  # nothing to keep: no snapshot, as a copy
            for backup in backups:
                backup.empty(self.read_sum.hexdigest)
            backups = []
        if not any(s.changed for s in self.steps) and not backups:
            self._unwatch()  # nothing is swapped: nothing to check
            self.db.drop_collection(self.tmp)
            for step in self.steps:
                step.mark_done()
            return 0
        built = fast_count(self.db, self.tmp)
        if built != self.seen and self.options.get("capped"):
            cap = f"size {self.options.get('size')} bytes" + (
                f", max {self.options['max']} documents" if self.options.get("max") else "")
            raise RewriteError(
                f"{self.collection} is capped ({cap}): its {self.seen} rewritten documents "
                f"({self._bytes} bytes) do not fit, so the copy dropped the oldest; nothing was "
                "swapped. Raise the cap first (collMod cappedSize), or change less")
        if built != self.seen:
            raise RewriteError(f"{self.tmp} holds {built} documents, not the {self.seen} "
                               "written: was another run building it? Run again")
        copy_indexes(self.db, self.collection, self.tmp)
        self.check_unchanged()  # last before the swap: the window for a write stays short
        for backup in backups:  # what was read, checked unchanged: the snapshot's figures
            backup.read(self.read_sum.count, self.read_sum.hexdigest)
        self.engine.check()  # the swap cannot be taken back by this run: only under the lock
        self.engine.undo.update_one(self.own.key, {"$set": {
            "state": "built", "counts": [s.changed for s in self.steps]}})
        self._swap()
        return self.own.changed

    def check_unchanged(self) -> None:
        """Refuse the swap if the live collection is not what the pass read: an insert, a
        delete or any update the application made meanwhile would be lost with it. Its
        count first; then, where the server's command counters prove that no other client
        wrote anywhere on it since the pass began (:mod:`mongrate.mongo.witness`), that is
        enough; otherwise one more read of the collection, a checksum of every document."""
        live = fast_count(self.db, self.collection)
        if live == self.read_sum.count:
            witness, self.witness = self.witness, None  # quiet() closes it
            reporter = self.engine.reporter
            if witness is not None and witness.quiet():
                if reporter.verbose:
                    reporter.info(f"  {self.collection}: no other client wrote to the server "
                                  "during the pass (its command counters say so): not read "
                                  "again before the swap")
                return
            if reporter.verbose:
                reporter.info(f"  {self.collection}: read again before the swap, to check "
                              "that nobody wrote to it during the pass")
            live, digest = collection_checksum(self.db, self.collection,
                                               self.engine.batch_size)
            if live == self.read_sum.count and digest == self.read_sum.hexdigest:
                return
            what = "documents were updated"
        else:
            self._unwatch()
            what = f"it held {self.read_sum.count} documents and now holds {live}"
        raise RewriteError(
            f"{self.collection}: the application wrote to it while mongrate rewrote it "
            f"({what}); nothing was swapped in and it is as the application left it: stop "
            "the application's writers (this server's strategy is rewrite) and run again")

    def _swap(self) -> None:
        self.engine.check()
        backup = next((s.backup for s in self.steps if s.backup is not None), None)
        if backup is not None:  # the original is kept, renamed, as the snapshot
            backup.swap(self.tmp)
        elif self.tmp in self.db.list_collection_names(filter={"name": self.tmp}):
            swap_in(self.engine, self.own.key, self.tmp, self.collection)
        for step in self.steps:
            step.mark_done()


def swap_in(engine: Engine, key: dict[str, Any], tmp: str, collection: str) -> None:
    """Replace ``collection`` by ``tmp`` (the pass's state says ``built``): a rename, or a
    copy where the server cannot rename it (FerretDB v1 and names with a dot; its rename
    attempt has dropped the live collection by then, so a run cut short finds ``tmp``
    alone and comes here again)."""
    try:
        rename_replacing(engine.db, tmp, collection)
    except OperationFailure as exc:
        if exc.code != INVALID_NAMESPACE:
            raise
        copy_back(engine, key, tmp, collection)


def copy_back(engine: Engine, key: dict[str, Any], tmp: str, collection: str) -> None:
    """Replace ``collection`` by ``tmp`` by copying, for servers that cannot rename it.
    ``copying`` from before the live collection is dropped until the copy is complete
    (``tmp`` is the complete one: a run cut short copies again), then ``copied`` before
    ``tmp`` is dropped (the live one is complete: a run cut short only drops ``tmp``)."""
    db = engine.db
    engine.undo.update_one(key, {"$set": {"state": "copying"}})
    engine.check()
    options = collection_options(db, tmp)
    db.drop_collection(collection)
    create_like(db, collection, options)  # the copy's options (capped...), as a rename keeps
    copy_indexes(db, tmp, collection)
    copy_collection(db, tmp, collection, engine.batch_size, guard=engine.guard)
    if fast_count(db, collection) != fast_count(db, tmp):
        raise RewriteError(f"copying {tmp} back into {collection} lost documents; run again")
    engine.undo.update_one(key, {"$set": {"state": "copied"}})
    db.drop_collection(tmp)


#: Pass states whose copy may be, or may have become, the live collection.
SWAP_STATES = ("built", "copying", "copied")


def resume_swap(engine: Engine, state: Mapping[str, Any], collection: str) -> bool:
    """Finish the swap an interrupted run left of a pass in a :data:`SWAP_STATES` state.
    True once the pass's copy is the live collection (its steps are done); False if the
    swap never began (both collections are there, untouched). Where the two collections
    left cannot say which one is complete, nothing is dropped: it stops with one line."""
    db, tmp, now = engine.db, state.get("tmp"), state.get("state")
    key = {"_id": state["_id"]}
    names = set(db.list_collection_names())
    has_tmp, has_live = tmp in names, collection in names
    if not has_tmp and not has_live:
        raise UnsettledSwap(
            f"{collection}: neither it nor its rewritten copy {tmp} exists, although the "
            "swap between them was under way: restore it from a backup")
    if now == "copied" and has_live:  # the live collection is complete: drop the copy
        if has_tmp:
            db.drop_collection(tmp)
        return True
    if now in ("copying", "copied"):  # the copy is the complete one: copy it (again)
        if not has_tmp:
            raise UnsettledSwap(
                f"{collection}: a copy back from {tmp} was cut short and {tmp} is gone, so "
                f"mongrate cannot tell whether {collection} is complete; compare it with a "
                "backup before running mongrate on it again")
        engine.check()
        copy_back(engine, key, tmp, collection)
    elif has_tmp and has_live:
        return False  # built, never swapped: the live collection is untouched
    elif has_tmp:  # a rename cut short after the live collection was dropped
        engine.check()
        swap_in(engine, key, tmp, collection)
    # else built and renamed in: the copy is the live collection
    engine.reporter.info(f"  finished the interrupted swap of {collection}")
    return True


def recover_swaps(engine: Engine, collection: str) -> None:
    """Settle what an interrupted run left of a pass over ``collection`` at its swap,
    before anything decides what is still to do or what its records describe (see
    :func:`resume_swap`): a swap that happened, or is finished now, has its steps marked
    done (a re-run must not write them twice; a downgrade must restore them)."""
    for state in engine.undo.find({"collection": collection, "kind": "pass",
                                   "state": {"$in": list(SWAP_STATES)}}):
        if resume_swap(engine, state, collection):
            _mark_steps_done(engine, state, collection)


def _mark_steps_done(engine: Engine, state: dict[str, Any], collection: str) -> None:
    """The steps of a pass an interrupted run swapped in are done, with the counts it
    recorded when the copy was built."""
    engine.undo.update_one({"_id": state["_id"]}, {"$set": {"state": "done"}})
    steps = state.get("steps", ())
    counts = state.get("counts") or [0] * len(steps)
    for ident, n in zip(steps, counts, strict=False):
        rev, _, seq = str(ident).rpartition(":")
        engine.undo.update_one(state_key(rev, collection, seq),
                               {"$set": {"state": "done", "result": n}}, upsert=True)
