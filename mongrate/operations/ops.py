"""The ``op`` object handed to ``upgrade(op)`` and ``downgrade(op)``.

Every helper that changes data first writes what it is about to change into the undo
collection (prior field values, indexes created or dropped, collections created), so
``op.restore_undo()`` in a downgrade reverses the upgrade exactly, and a re-run after
an interruption never overwrites the first-recorded prior values.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from typing import Any, TypeVar

from pymongo import InsertOne, UpdateOne
from pymongo.database import Database

from mongrate.errors import BackupError, OpError, StepCancelled
from mongrate.mongo.codec import RAW, id_key, utcnow  # noqa: F401 - RAW re-exported for now
from mongrate.mongo.collections import (
    FERRETDB_STATEMENT_LIMIT,
    bulk_write,
    collection_checksum,
    collection_options,
    copy_collection,
    copy_indexes,
    fast_count,
)
from mongrate.mongo.pipeline import BackgroundWriter, chunked, prefetch
from mongrate.operations.schema import SchemaOps, restore_schema
from mongrate.progress import Reporter

T = TypeVar("T")
_NO_UNDO_OPERATORS = {"$setOnInsert"}


def touched_fields(update: Mapping[str, Any]) -> set[str]:
    """Top-level fields an update document may change (undo is kept per top-level field)."""
    if not update or not all(str(k).startswith("$") for k in update):
        raise OpError("op updates must use operators such as $set/$unset, not a replacement document")
    fields: set[str] = set()
    for operator, spec in update.items():
        if operator in _NO_UNDO_OPERATORS:
            continue
        if not isinstance(spec, Mapping):
            raise OpError(f"{operator} needs a document of fields")
        fields.update(str(k).split(".")[0] for k in spec)
        if operator == "$rename":
            fields.update(str(v).split(".")[0] for v in spec.values())
    if "_id" in fields:
        raise OpError("op helpers cannot change _id")
    return fields


class Operations(SchemaOps):
    """Helpers for revision authors. ``op.db`` is the pymongo ``Database``."""

    def __init__(self, db: Database, *, undo, backups, revision: str, direction: str,
                 batch_size: int = 1000, reporter: Reporter | None = None,
                 dry_run: bool = False, guard: Callable[[], None] | None = None,
                 statement_limit: int = FERRETDB_STATEMENT_LIMIT,
                 next_absorbs: Iterable[str] = (), inbox: Iterable[Any] = ()):
        self.db = db
        self.statement_limit = statement_limit
        self.revision = revision
        self.direction = direction
        self.batch_size = batch_size
        self.reporter = reporter or Reporter()
        self.dry_run = dry_run
        self.results: dict[str, Any] = {}  # a revision may report counts here; they are logged
        self._undo = undo
        self._backups = backups
        self._guard = guard  # raises if the run lost its lock; checked after every batch
        self._writers: list[BackgroundWriter] = []
        self._stop = threading.Event()  # set by parallel() when one of its steps failed
        self._stamp: str | None = None  # this run's backup id, once one is made
        self._stamp_lock = threading.Lock()
        #: collections the next revision of this run rewrites and takes changes for
        self.next_absorbs = frozenset(next_absorbs)
        self.inbox = list(inbox)  # folds of the revision before, for this one's rewrites
        self.outbox: list[Any] = []  # this revision's folds, for the next one

    def writer(self) -> BackgroundWriter:
        """A :class:`~mongrate.mongo.pipeline.BackgroundWriter` bound to this run's lock check;
        the runner cancels it when the revision ends, so nothing is written afterwards."""
        w = BackgroundWriter(guard=self._guard)
        self._writers.append(w)
        return w

    def check(self) -> None:
        """Raise if this run lost its lock or a parallel step failed (call before a step
        that cannot be taken back, such as a swap)."""
        if self._guard is not None:
            self._guard()
        if self._stop.is_set():
            raise StepCancelled(f"{self.revision}: stopped because a parallel step failed")

    def parallel(self, *steps: Callable[[], T], workers: int = 2) -> list[T]:
        """Run independent steps (work on different collections) at the same time and
        return their results in order.

        The server does most of the work and a single stream of reads leaves part of it
        idle, so two steps at once finish sooner. If a step fails, the others stop at their
        next batch (every helper's progress checks) and the first error is raised.
        """
        if not steps:
            return []
        self._stop.clear()
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
                        self._stop.set()
                        for other in futures:
                            other.cancel()  # those not started yet never start
                    else:
                        self.log(f"a parallel step also failed: {type(exc).__name__}: {exc}")
            except BaseException:  # Ctrl-C here: the steps stop at their next batch
                self._stop.set()
                for other in futures:
                    other.cancel()
                raise
        self._stop.clear()
        if first is not None:
            raise first
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop this revision's background writers (called by the runner, success or not)."""
        for w in self._writers:
            w.close(cancel=True)
        self._writers.clear()

    @property
    def undo(self):
        """The undo collection (revisions may keep their own state records there, with a
        ``kind`` of their own and ``revision`` set to ``op.revision``)."""
        return self._undo

    @property
    def backups(self):
        """The backup manifests collection."""
        return self._backups

    # ------------------------------------------------------------- reporting
    def log(self, message: str) -> None:
        self.reporter.info(f"  [{self.revision}] {message}")

    def progress(self, iterable: Iterable[T], total: int | None = None, label: str = "",
                 *, weight=None) -> Iterator[T]:
        """Report progress; between items, stop at once if the run has lost its lock."""
        for item in self.reporter.progress(iterable, total, label or self.revision, weight=weight):
            yield item
            self.check()

    def batches(self, cursor: Iterable[T], label: str, total: int | None = None
                ) -> Iterator[list[T]]:
        """``cursor`` in lists of ``batch_size``, read ahead on a worker thread (the server
        reads the next batch while this one is worked on), with progress and the lock
        check between batches."""
        return self.progress(prefetch(chunked(cursor, self.batch_size)), total, label, weight=len)

    # ------------------------------------------------------------ field undo
    def _key(self, collection: str) -> dict[str, str]:
        return {"revision": self.revision, "collection": collection}

    def _record_prior(self, collection: str, docs: list[Mapping],
                      wanted: Mapping[Any, set[str]]) -> None:
        """Write prior values of ``wanted[id_key(_id)]`` fields not yet recorded."""
        if not docs:
            return
        ids = [d["_id"] for d in docs]
        recorded = {
            id_key(u["doc_id"]): (u["_id"], set(u.get("recorded", ())))
            for u in self._undo.find(
                {**self._key(collection), "kind": "fields", "doc_id": {"$in": ids}},
                {"doc_id": 1, "recorded": 1},
            )
        }
        requests = []
        for doc in docs:
            undo_id, seen = recorded.get(id_key(doc["_id"]), (None, set()))
            new = sorted(wanted[id_key(doc["_id"])] - seen)
            if not new:
                continue
            values = {f: doc[f] for f in new if f in doc}
            absent = [f for f in new if f not in doc]
            if undo_id is None:
                requests.append(InsertOne({
                    **self._key(collection), "kind": "fields", "doc_id": doc["_id"],
                    "fields": values, "absent": absent, "recorded": new, "at": utcnow(),
                }))
            else:
                update: dict[str, Any] = {"$push": {"recorded": {"$each": new}}}
                if absent:
                    update["$push"]["absent"] = {"$each": absent}
                if values:
                    update["$set"] = {f"fields.{f}": v for f, v in values.items()}
                requests.append(UpdateOne({"_id": undo_id}, update))
        if requests:
            bulk_write(self._undo, requests, self.statement_limit, ordered=True)

    def update_many(self, collection: str, filter: Mapping[str, Any], update: Mapping[str, Any],
                    *, batch_size: int | None = None, label: str | None = None) -> int:
        """``update_many`` in bounded batches, recording prior values first.

        Streams the matching ``_id``s with one cursor; each batch costs one undo read,
        one undo write and one ``update_many`` with ``$in``. Returns documents modified.
        """
        fields = touched_fields(update)
        size = batch_size or self.batch_size
        coll = self.db[collection]
        total = coll.count_documents(filter)
        # _id order: an index scan that updates cannot make revisit a document (on
        # MongoDB a collection scan may, and a $inc would then apply twice)
        cursor = coll.find(filter, {f: 1 for f in fields} or {"_id": 1}).sort("_id", 1)
        modified = 0
        for batch in self.progress(chunked(cursor.batch_size(size), size), total,
                                   label or f"{collection} update", weight=len):
            self._record_prior(collection, batch, {id_key(d["_id"]): fields for d in batch})
            ids = [d["_id"] for d in batch]
            result = coll.update_many({"$and": [dict(filter), {"_id": {"$in": ids}}]}, update)
            modified += result.modified_count
        return modified

    def update_each(self, collection: str, updates: Iterable[tuple[Any, Mapping[str, Any]]],
                    *, batch_size: int | None = None, total: int | None = None,
                    label: str | None = None) -> int:
        """Apply a different update to each ``_id``, batched into ``bulk_write`` calls.

        Prior values are recorded per batch (one ``$in`` read of the documents, one of the
        undo log) before the batch is written.
        """
        size = batch_size or self.batch_size
        coll = self.db[collection]
        modified = 0
        for batch in self.progress(chunked(updates, size), total, label or f"{collection} update",
                                   weight=len):
            wanted: dict[Any, set[str]] = {}
            for _id, upd in batch:
                wanted.setdefault(id_key(_id), set()).update(touched_fields(upd))
            projection = {f: 1 for fs in wanted.values() for f in fs}
            ids = [_id for _id, _ in batch]
            docs = list(coll.find({"_id": {"$in": ids}}, projection or {"_id": 1}))
            self._record_prior(collection, docs, wanted)
            modified += bulk_write(coll, [UpdateOne({"_id": _id}, upd) for _id, upd in batch],
                                   self.statement_limit)
        return modified

    # --------------------------------------------------------------- backups
    def backup_collection(self, source: str, *, target: str | None = None,
                          extra: Mapping[str, Any] | None = None,
                          now: datetime | None = None, method: str = "copy",
                          sort: list[tuple[str, int]] | None = None) -> dict:
        """Snapshot ``source`` into ``target`` (default ``<source>_backup_<YYYYMMDD_HHMMSS>``).

        ``method="copy"`` streams raw BSON into ``target`` in batches, then re-reads the
        copy to verify its count and content checksum; ``source`` is never touched.

        ``method="swap"`` streams ``source`` into a new collection (indexes included) and
        swaps it in: the original collection, renamed, *is* the snapshot, exact by
        construction, and the checksum is that of its own documents as read. It costs one
        read and one write instead of two reads and a write (reads are the expensive half on
        FerretDB); the live collection becomes a copy, so writers must be stopped, as for
        :meth:`rewrite`. A change in the number of documents during the copy is detected
        and nothing is swapped; updates during the copy are *not* carried over to the live
        collection (they stay in the snapshot), and the live copy is checked by count, not
        re-read. A collection with options (validator, capped...) is copied.

        ``sort``: write the copy in that order (with ``swap``, the live copy), for a pass
        that reads in it (a server sort delays every write of a pass until it is done).

        An interrupted snapshot is started over (a swap that was under way is finished);
        a completed one is kept as is. The manifest lives in the backups collection;
        ``restore_undo`` drops snapshots it made.
        """
        if method not in ("copy", "swap"):
            raise OpError(f"backup method {method!r} is not 'copy' or 'swap'")
        manifest = self._backups.find_one(
            {"revision": self.revision, "source": source,
             "status": {"$in": ["copying", "built", "complete"]}}
        )
        if manifest and manifest["status"] == "complete":
            self.log(f"backup of {source} already done: {manifest['target']} ({manifest['count']} docs)")
            return manifest
        if manifest is None:
            stamp = self._backup_stamp(now)
            target = target or f"{source}_backup_{stamp}"
            if target in self.db.list_collection_names():
                raise BackupError(f"backup target {target} already exists; it is never "
                                  "overwritten: drop or rename it, or choose another target")
            if method == "swap" and collection_options(self.db, source):
                method = "copy"  # a new collection would not carry the options over
            manifest = {
                "backup_id": stamp, "revision": self.revision, "source": source,
                "target": target, "status": "copying", "method": method,
                "created_at": utcnow(), **dict(extra or {}),
            }
            if method == "swap":
                manifest["tmp"] = f"mongrate_tmp_{self.revision}_{source}_backup"
            # the undo record first: a run killed in between leaves no snapshot undropped
            self._undo.update_one(
                {**self._key(target), "kind": "collection_created", "doc_id": f"collection:{target}"},
                {"$setOnInsert": {"at": utcnow()}},
                upsert=True,
            )
            manifest["_id"] = self._backups.insert_one(manifest).inserted_id
        target = manifest["target"]
        swap = manifest.get("method") == "swap"
        if manifest["status"] == "built":  # interrupted during the swap: finish it
            if self.dry_run:
                self.log(f"would finish swapping the copy of {source} in")
                return manifest
            return self._backup_swap(manifest)
        dest = manifest["tmp"] if swap else target
        if not self.dry_run:
            self.db.drop_collection(dest)  # a half-made copy from an interrupted run
        total = fast_count(self.db, source)
        read = copy_collection(
            self.db, source, dest, self.batch_size,
            lambda batches: self.progress(batches, total, f"backup {source}", weight=len),
            guard=self._guard, sort=sort)
        if self.dry_run:
            if swap:
                self.log(f"would rename {source} to {target} and the copy to {source}")
            return manifest
        if swap:
            count, checksum = fast_count(self.db, dest), read[1]
        else:
            count, checksum = collection_checksum(self.db, target, self.batch_size)
            if (count, checksum) != read:
                raise BackupError(
                    f"backup {target} does not match what was read from {source}: {count} docs / "
                    f"{checksum[:12]} stored vs {read[0]} / {read[1][:12]} read"
                )
        after = fast_count(self.db, source)
        if after != total or count != total or read[0] != total:
            if swap:
                self.db.drop_collection(dest)
            raise BackupError(
                f"{source} changed while it was being backed up ({total} documents before, "
                f"{after} after, {read[0]} copied): stop the application and run again"
            )
        done = {"count": count, "checksum": checksum}
        if swap and read[0] == 0:  # nothing to swap: like a copy, the snapshot stays empty
            self.db.drop_collection(dest)
            return self._backup_done(manifest, done)
        if swap:
            copy_indexes(self.db, source, dest)
            self.check()  # the swap cannot be taken back by this run: only under the lock
            self._backups.update_one({"_id": manifest["_id"]}, {"$set": {**done, "status": "built"}})
            manifest.update(done, status="built")
            return self._backup_swap(manifest)
        return self._backup_done(manifest, done)

    def _backup_swap(self, manifest: dict) -> dict:
        """Rename source -> snapshot, then the copy -> source. Each rename is skipped if it
        already happened, so an interrupted swap is finished by running it again."""
        source, target, tmp = manifest["source"], manifest["target"], manifest["tmp"]
        self.check()
        names = set(self.db.list_collection_names())
        if source in names and target not in names and tmp in names:
            self.db[source].rename(target)
            names = set(self.db.list_collection_names())
        if tmp in names and source not in names:
            self.check()
            self.db[tmp].rename(source)
            names = set(self.db.list_collection_names())
        if not (source in names and target in names and tmp not in names):
            raise BackupError(
                f"cannot finish swapping in the copy of {source}: expected {target} and "
                f"{source} without {tmp}, found {sorted(names & {source, target, tmp})}; was "
                "the service writing? Stop it; the original documents are in "
                f"{target if target in names else source}"
            )
        return self._backup_done(manifest, {"count": manifest["count"],
                                            "checksum": manifest["checksum"]})

    def _backup_done(self, manifest: dict, done: dict) -> dict:
        done = {**done, "status": "complete", "finished_at": utcnow()}
        self._backups.update_one({"_id": manifest["_id"]}, {"$set": done})
        manifest.update(done)
        self.log(f"backed up {manifest['source']} -> {manifest['target']}: {done['count']} docs, "
                 f"checksum {done['checksum'][:12]}")
        return manifest

    def _backup_stamp(self, now: datetime | None) -> str:
        """One id for all snapshots of this revision, kept across an interrupted run."""
        with self._stamp_lock:  # parallel backups of one revision share it too
            earlier = self._backups.find_one({"revision": self.revision,
                                              "status": {"$in": ["copying", "built", "complete"]}})
            if earlier and earlier.get("backup_id"):
                return earlier["backup_id"]
            if self._stamp is None:
                self._stamp = (now or utcnow()).strftime("%Y%m%d_%H%M%S")
            return self._stamp

    # -------------------------------------------------------------- rewrites
    def rewrite(self, collection: str):
        """A streaming rewrite of ``collection`` (:class:`mongrate.operations.rewrite.CollectionRewrite`):
        every document is written once into a new collection, changed fields' prior values
        go to a side undo collection first, then the new collection replaces the live one.
        O(collection) where per-document updates are slow (FerretDB); needs writers stopped.
        """
        from mongrate.operations.rewrite import CollectionRewrite

        return CollectionRewrite(self, collection)

    def rewrite_each(self, collection: str, changes: Callable[[Any], Mapping[str, Any]],
                     label: str = "", *, result: str = "changed") -> int | str | None:
        """Set ``changes(raw)`` (a dict of fields, {} for none) on every document of
        ``collection``, with a :meth:`rewrite`; documents keep their stored order.

        ``changes`` must be idempotent (nothing to change the second time) and must not
        change the fields the next revision orders or groups its reads by. When the next
        revision of this ``upgrade`` run declares ``absorbs = ("<collection>",)``, the change
        is folded into that revision's own rewrite instead: one pass over the collection
        instead of two, and None is returned (the count goes to ``op.results[result]``
        once written). Returns documents changed, or "already done" on a re-run.
        """
        from mongrate.operations.rewrite import Fold, _state_key, rewrite_each, tmp_name

        label = label or f"{collection} ({self.revision})"
        if collection in self.next_absorbs and not self.dry_run and self.direction == "upgrade":
            key = _state_key(self, collection, "upgrade")
            record = self._undo.find_one(key) or {}
            state = record.get("state")
            if state not in ("done", "built"):
                self.db.drop_collection(tmp_name(self, collection))  # left by a standalone run
                # a resumed fold keeps its token: a copy built for it may be swapped in
                token = record.get("token") if state == "folded" else None
                token = token or uuid.uuid4().hex
                self._undo.update_one(key, {"$set": {"state": "folded", "token": token}},
                                      upsert=True)
                # earlier folds of this collection travel on with this one, in order
                self.outbox.extend(f for f in self.inbox if f.collection == collection
                                   and not f.done and f not in self.outbox)
                self.outbox.append(Fold(self.revision, collection, changes, label,
                                        self.results, result, token))
                self.log(f"{collection}: changes folded into the next revision's pass over it")
                return None
        changed = rewrite_each(self, collection, changes, label)
        self.results[result] = changed
        return changed

    def restore_rewrite(self, collection: str) -> int:
        """Undo this revision's :meth:`rewrite` of ``collection`` exactly (downgrade)."""
        from mongrate.operations.rewrite import restore

        return restore(self, collection)

    # ------------------------------------------------------------------ undo
    def restore_undo(self, collection: str | None = None) -> int:
        """Reverse everything this revision's helpers recorded (optionally one collection).

        Field values come back exactly (fields that did not exist are unset again);
        indexes it created are dropped, indexes it dropped come back, snapshots it made
        are dropped. Fields nobody recorded are left alone. Returns records undone.
        """
        query: dict[str, Any] = {"revision": self.revision}
        if collection:
            query["collection"] = collection
        undone = 0
        fields_query = {**query, "kind": "fields"}
        total = self._undo.count_documents(fields_query)
        cursor = self._undo.find(fields_query).batch_size(self.batch_size)
        for batch in self.progress(chunked(cursor, self.batch_size), total, "restore fields",
                                   weight=len):
            by_coll: dict[str, list] = {}
            for rec in batch:
                update: dict[str, Any] = {}
                if rec.get("fields"):
                    update["$set"] = dict(rec["fields"])
                if rec.get("absent"):
                    update["$unset"] = {f: "" for f in rec["absent"]}
                if update:
                    by_coll.setdefault(rec["collection"], []).append(UpdateOne({"_id": rec["doc_id"]}, update))
            for coll, requests in by_coll.items():
                bulk_write(self.db[coll], requests, self.statement_limit)
            self._undo.delete_many({"_id": {"$in": [r["_id"] for r in batch]}})
            undone += len(batch)
        undone += restore_schema(self, collection)
        return undone
