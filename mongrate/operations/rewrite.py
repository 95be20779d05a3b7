"""Collection rewrites: changing every document of a collection in O(collection size).

On the FerretDB 1.24 (SQLite) server every ``_id`` lookup and every single-document
update is a full table scan, and an update command with ~100 statements deadlocks it
, so ``op.update_each`` / ``op.update_many`` cost
O(changed x size). A rewrite costs one read and one insert per document instead:

1. stream the live collection (in any order the caller likes) and write every document,
   changed or not, into ``mongrate_tmp_<rev>_<collection>``; before a batch of changed
   documents is written, the prior values of the fields it changes go to the side
   collection ``<undo>_<rev>_<collection>`` keyed by the document ``_id`` (insert only: a
   duplicate-key error keeps the first-recorded value, so a re-run never overwrites it);
2. copy the live collection's options and indexes onto the temp collection;
3. swap: drop the live collection, rename the temp one (``dropTarget`` where supported).

A state record in the undo collection (``kind: "rewrite"``) says how far a rewrite got:
``building`` (a re-run starts the copy over; the live collection is untouched),
``built`` (a re-run finishes the swap) or ``done``. The downgrade is the same rewrite with
the live collection and the side collection both sorted by ``_id`` and merged: recorded
fields get their prior values back (fields that did not exist are removed again), other
fields are left as they are now, then the side collection is dropped. Run with the
service stopped (the guide's Step 1): writes made during a rewrite are not carried over.

Folds. A per-document change (``op.rewrite_each``) whose revision is followed, in the same
``upgrade`` run, by a revision that declares ``absorbs = ("<collection>",)`` is not written
on its own: the next revision's rewrite applies it to each document as it reads it
(:meth:`CollectionRewrite.absorb`), records its prior values in the folding revision's own
side collection, and writes the document once. That saves a whole read and write of the
collection. The folding revision's state record says ``folded`` (with a token the built
copy records, so a copy built for an earlier fold is never swapped in for a new one) until
the absorbing rewrite is swapped in; the runner moves the heads past it only after the
absorbing revision succeeded, or, if that revision failed before building its copy, after
writing the change on its own; otherwise both are left to the next run, like after a
kill. A folded change must be idempotent and must not change the fields the absorbing
revision orders or groups its reads by.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson.raw_bson import RawBSONDocument

from mongrate.errors import OrderError, RewriteError  # noqa: F401 - OrderError re-exported
from mongrate.mongo.codec import EXACT, RAW, decode, encode
from mongrate.mongo.collections import (
    collection_options,
    copy_indexes,
    fast_count,
    insert_new,
    rename_replacing,
)
from mongrate.mongo.order import SortedLookup, bson_order_key, in_server_order  # noqa: F401
from mongrate.mongo.pipeline import BackgroundWriter, read_ahead


def undo_collection(op) -> str:
    return op.undo.name


def side_name(op, collection: str, revision: str | None = None) -> str:
    return f"{undo_collection(op)}_{revision or op.revision}_{collection}"


def tmp_name(op, collection: str, revision: str | None = None) -> str:
    return f"mongrate_tmp_{revision or op.revision}_{collection}"


def _state_key(op, collection: str, direction: str, revision: str | None = None
               ) -> dict[str, str]:
    return {"revision": revision or op.revision, "collection": collection, "kind": "rewrite",
            "doc_id": f"rewrite:{direction}"}


Changes = Callable[[RawBSONDocument], Mapping[str, Any]]


@dataclass(eq=False)
class Fold:
    """One revision's per-document change to ``collection``, left for the next revision's
    rewrite of it to write (see the module docstring)."""

    revision: str
    collection: str
    changes: Changes
    label: str
    results: dict[str, Any]  # the folding revision's op.results: its count goes there
    result_key: str
    token: str = ""  # kept in its state record while folded: a built copy names it
    changed: int = 0
    built_into: bool = False  # the absorbing rewrite's copy holds it, not yet swapped in
    done: bool = False
    priors: list[dict[str, Any]] = field(default_factory=list)


def _prior(doc: Mapping[str, Any], touched: Iterable[str]) -> dict[str, Any]:
    touched = list(touched)
    return {"_id": doc["_id"], "fields": {f: doc[f] for f in touched if f in doc},
            "absent": [f for f in touched if f not in doc]}


def _insert_priors(db, side: str, priors: list[dict[str, Any]]) -> None:
    insert_new(db[side], priors)  # recorded by an earlier run: the first record stands


class CollectionRewrite:
    """Write a new version of one collection, then swap it in (see the module docstring).

    ``start()`` says whether there is anything to do; then every document of the collection
    must be passed exactly once to ``keep(raw)`` or ``change(raw, fields)``; ``finish()``
    swaps and returns the number of documents changed. In a dry run nothing is written.
    """

    def __init__(self, op, collection: str, *, direction: str = "upgrade",
                 revision: str | None = None):
        self.op = op
        self.db = op.db
        self.collection = collection
        self.direction = direction
        self.tmp = tmp_name(op, collection, revision)
        self.side = side_name(op, collection, revision)
        self.size = op.batch_size
        #: earlier revisions' changes this rewrite writes too (handed over by the runner)
        self.folds: list[Fold] = [] if revision else [
            f for f in getattr(op, "inbox", ()) if f.collection == collection and not f.done]
        self.changed = 0
        self.seen = 0
        self.absorbed = 0  # documents read through absorb()
        self._docs: list[RawBSONDocument] = []
        self._priors: list[dict[str, Any]] = []
        self._key = _state_key(op, collection, direction, revision)
        self._undo = op.undo
        self._writer: BackgroundWriter | None = None  # stores batch n while batch n + 1 is read

    # ---------------------------------------------------------------- phases
    def start(self) -> bool:
        """False if this rewrite already finished (a re-run after an interruption)."""
        if self.op.dry_run:
            return True
        state = self._undo.find_one(self._key)
        if state and state.get("state") == "done":
            self.op.log(f"{self.collection}: {self.direction} rewrite already done")
            # a fold still pending here was written by that pass (killed before marking it)
            self._folds_finished(counted=False)
            return False
        if state and state.get("state") == "built":
            built_with = state.get("folds") or {}
            if all(built_with.get(f.revision) == f.token for f in self.folds):
                self.op.log(f"{self.collection}: finishing an interrupted swap")
                self._swap()  # its copy was built with these very folds applied
                self._folds_finished(counted=False)
                return False
            if self.collection not in self.db.list_collection_names():
                raise RewriteError(
                    f"{self.collection} is missing and {self.tmp} holds its documents, built "
                    "for changes other than the ones now folded into it: rename it back to "
                    f"{self.collection}, then run again")
        self.db.drop_collection(self.tmp)  # a half-written copy from an interrupted run
        self._undo.update_one(self._key, {"$set": {"state": "building", "tmp": self.tmp,
                                                   "side": self.side}}, upsert=True)
        return True

    def absorb(self, docs: Iterable[RawBSONDocument]) -> Iterator[RawBSONDocument]:
        """``docs`` (read from the live collection) with the folded changes applied, in
        the order of the revisions that made them; their prior values are recorded (in
        each folding revision's side collection) before the documents are written."""
        if not self.folds:
            yield from docs
            return
        for raw in docs:
            self.absorbed += 1
            for fold in self.folds:
                fields = fold.changes(raw)
                if not fields:
                    continue
                fold.changed += 1
                if self.op.dry_run:
                    continue
                doc = decode(raw)
                fold.priors.append(_prior(doc, fields))
                doc.update(fields)
                raw = encode(doc)
            yield raw

    def _folds_finished(self, *, counted: bool = True) -> None:
        """Mark the folded changes written (after this rewrite's swap and its own "done":
        a run killed in between finds this rewrite done, and comes back here)."""
        for fold in self.folds:
            if fold.done:
                continue
            self._undo.update_one(
                _state_key(self.op, fold.collection, "upgrade", fold.revision),
                {"$set": {"state": "done"}}, upsert=True)
            fold.results[fold.result_key] = fold.changed if counted else "written by the interrupted run"
            fold.done = True

    def keep(self, raw: RawBSONDocument) -> None:
        self.seen += 1
        if not self.op.dry_run:
            self._docs.append(raw)
            self._maybe_flush()

    def change(self, raw: RawBSONDocument, fields: Mapping[str, Any],
               *, remove: Iterable[str] = ()) -> None:
        """Write ``raw`` with ``fields`` set (in place, new ones last) and ``remove`` unset.

        On the upgrade the prior values are recorded first; on the downgrade (restoring
        from the side collection) nothing is recorded.
        """
        if not fields and not remove:
            self.keep(raw)
            return
        self.seen += 1
        self.changed += 1
        if self.op.dry_run:
            return
        doc = decode(raw)
        remove = [f for f in remove if f in doc]
        if self.direction == "upgrade":
            self._priors.append(_prior(doc, list(fields) + remove))
        doc.update(fields)
        for f in remove:
            del doc[f]
        self._docs.append(encode(doc))
        self._maybe_flush()

    def restart(self) -> None:
        """Throw away what was built since :meth:`start` (the live collection was not
        touched) and begin again. Prior values already recorded stay: they were read from
        the live collection, so restoring one that ends up unchanged is a no-op."""
        if self._writer is not None:
            error = self._writer.close(cancel=True)
            self._writer = None
            if error is not None:  # e.g. the lock was lost: not a reason to start over
                raise error
        self._docs, self._priors = [], []
        self.changed = self.seen = self.absorbed = 0
        for fold in self.folds:  # recorded priors stay (first record wins, same values)
            fold.changed, fold.priors = 0, []
        if not self.op.dry_run:
            self.op.check()
            self.db.drop_collection(self.tmp)

    def finish(self) -> int:
        """Flush, swap the new version in (unless nothing changed) and return changes."""
        if self.op.dry_run:
            self.op.log(f"{self.collection}: would rewrite {self.changed} of {self.seen} documents")
            return self.changed
        self._flush()
        if self._writer is not None:
            self._writer.drain()
            self._writer.close()
        if self.folds and self.absorbed != self.seen:
            raise RewriteError(
                f"{self.collection}: {self.seen - self.absorbed} of {self.seen} documents were "
                f"written without passing through absorb(), so the change of "
                f"{', '.join(f.revision for f in self.folds)} folded into this rewrite would be "
                "lost; nothing was swapped: read the collection through rw.absorb(...)")
        if self.changed == 0 and not any(f.changed for f in self.folds):
            self.db.drop_collection(self.tmp)
            self._undo.update_one(self._key, {"$set": {"state": "done"}})
            self._folds_finished()
            return 0
        live_count = fast_count(self.db, self.collection)
        if self.seen != live_count:
            raise RewriteError(
                f"{self.collection}: {self.seen} documents were rewritten but the collection "
                f"holds {live_count}; was the service writing to it? Stop it and run again"
            )
        built = fast_count(self.db, self.tmp)
        if built != self.seen:
            raise RewriteError(f"{self.tmp} holds {built} documents, not the {self.seen} "
                               "written: was another run building it? Run again")
        self._copy_options_and_indexes()
        self.op.check()  # the swap cannot be taken back by this run: only under the lock
        self._undo.update_one(self._key, {"$set": {
            "state": "built", "folds": {f.revision: f.token for f in self.folds}}})
        for fold in self.folds:
            fold.built_into = True
        self._swap()
        self._folds_finished()
        return self.changed

    # --------------------------------------------------------------- helpers
    def _maybe_flush(self) -> None:
        if len(self._docs) >= self.size:
            self._flush()

    def _flush(self, *, wait: bool = False) -> None:
        """Hand the pending batch (prior values first) to the writer (``wait``: and wait
        until it is stored)."""
        if self._writer is None:
            self._writer = self.op.writer()
        # One writer, in order: a document is never rewritten before its prior values.
        for fold in self.folds:
            if fold.priors:
                self._writer.submit(_insert_priors, self.db,
                                    side_name(self.op, fold.collection, fold.revision),
                                    fold.priors)
                fold.priors = []
        if self._priors:
            self._writer.submit(self._insert_priors, self._priors)
            self._priors = []
        if self._docs:
            self._writer.submit(self.db.get_collection(self.tmp, codec_options=RAW).insert_many,
                                self._docs, ordered=False)
            self._docs = []
        if wait:
            self._writer.drain()

    def _insert_priors(self, priors: list[dict[str, Any]]) -> None:
        _insert_priors(self.db, self.side, priors)

    def _copy_options_and_indexes(self) -> None:
        options = collection_options(self.db, self.collection)
        if options:
            raise RewriteError(
                f"{self.collection} has collection options {sorted(options)} that a rewrite "
                "would have to recreate; not supported: migrate it in place instead"
            )
        copy_indexes(self.db, self.collection, self.tmp)

    def _swap(self) -> None:
        self.op.check()
        names = set(self.db.list_collection_names())
        if self.tmp in names:
            rename_replacing(self.db, self.tmp, self.collection)
        self._undo.update_one(self._key, {"$set": {"state": "done"}})


def rewrite_each(op, collection: str, changes: Changes, label: str) -> int | str:
    """Every document of ``collection`` as stored, ``changes(raw)`` set on it, written back
    in the same order; returns documents changed, or "already done"."""
    rw = CollectionRewrite(op, collection)
    return _change_each(op, rw, changes, label) if rw.start() else "already done"


def _change_each(op, rw: CollectionRewrite, changes: Changes, label: str) -> int:
    """The pass of a started ``rw``: every document as stored, with the changes folded into
    ``rw`` and then ``changes(raw)``; returns what ``finish()`` does."""
    coll = op.db.get_collection(rw.collection, codec_options=RAW)
    cursor = coll.find().batch_size(op.batch_size)
    for batch in op.batches(cursor, label, fast_count(op.db, rw.collection)):
        for raw in rw.absorb(batch):
            rw.change(raw, changes(raw))
    return rw.finish()


def fold_alone(op, fold: Fold) -> None:
    """Write a folded change on its own (its absorbing pass will not run, or has run)."""
    rw = CollectionRewrite(op, fold.collection, revision=fold.revision)
    fold.changed, fold.priors = 0, []  # what an abandoned absorbing pass counted is void
    if rw.start():
        op.log(f"{fold.collection}: writing {fold.revision}'s change on its own")
        fold.changed = _change_each(op, rw, fold.changes, fold.label)
        fold.results[fold.result_key] = fold.changed
    else:
        fold.results[fold.result_key] = "already done"
    fold.done = True


def restore(op, collection: str) -> int:
    """Downgrade: put back the prior values this revision's rewrite of ``collection``
    recorded, then drop its side collection. Returns documents restored."""
    side = side_name(op, collection)
    if op.dry_run:
        n = fast_count(op.db, side) if side in op.db.list_collection_names() else 0
        op.log(f"{collection}: would restore {n} documents")
        return n
    rw = CollectionRewrite(op, collection, direction="downgrade")
    restored = 0
    if side in op.db.list_collection_names() and rw.start():
        live = op.db.get_collection(collection, codec_options=RAW).find().sort("_id", 1)
        records = op.db.get_collection(side, codec_options=EXACT).find().sort("_id", 1)
        records = records.batch_size(op.batch_size)
        total = fast_count(op.db, collection)
        pending = SortedLookup(read_ahead(records, op.batch_size), "_id", side)
        stream = in_server_order(read_ahead(live.batch_size(op.batch_size), op.batch_size),
                                 "_id", collection)
        for raw in op.progress(stream, total, f"restore {collection}"):
            rec = pending.pop(raw["_id"])
            if rec is None:
                rw.keep(raw)
                continue
            rw.change(raw, dict(rec.get("fields") or {}), remove=rec.get("absent") or ())
            restored += 1
        left = pending.remaining()
        if left:
            op.log(f"{collection}: {left} recorded documents no longer exist; nothing to restore")
        rw.finish()
    op.db.drop_collection(side)
    op.undo.delete_many({"revision": op.revision, "collection": collection, "kind": "rewrite"})
    return restored
