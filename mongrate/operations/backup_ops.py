"""Backups of whole collections (``op.backup_collection``), made the way the write
strategy suits: a verified copy where writes are indexed (the application may keep
running), a swap where a rewrite is the cheap way to write (FerretDB v1)."""

from __future__ import annotations

import threading
from datetime import datetime
from functools import partial
from typing import Any

from mongrate.errors import BackupError, OpError
from mongrate.mongo.codec import utcnow
from mongrate.mongo.collections import (
    collection_checksum,
    collection_options,
    copy_collection,
    copy_indexes,
    fast_count,
    server_copy_collection,
)
from mongrate.names import snapshot_name, tmp_name
from mongrate.operations.context import RevisionContext
from mongrate.operations.deferral import Deferral
from mongrate.operations.engine import Engine
from mongrate.operations.step import FoldedBackup, Step
from mongrate.operations.strategy import server_copy

_stamp_lock = threading.Lock()


class BackupOps:
    """``op.backup_collection`` (mixed into :class:`mongrate.operations.ops.Operations`)."""

    _ctx: RevisionContext
    _engine: Engine
    _deferral: Deferral

    _stamp_lock = _stamp_lock

    def backup_collection(self, *sources: str) -> list[dict]:
        """Snapshot each of ``sources`` into ``<source>_backup_<YYYYMMDD_HHMMSS>`` (one stamp
        for all, kept across an interrupted run), two at a time; returns the manifests.

        With the ``in_place`` write strategy a snapshot is a streamed raw-BSON copy,
        re-read to verify its count and content checksum; the source is never touched.
        With ``rewrite`` the source is streamed into a new collection (indexes included)
        that then takes its place: the original collection, renamed, *is* the snapshot,
        exact by construction, at one read instead of two (reads are the expensive half on
        FerretDB). Within an upgrade on ``rewrite`` the copy is not even made here: the
        swap waits, like a deferred change, for the next pass over the collection in the
        run (a later revision's rewrite, else one of its own when the next revision ends),
        whose swap renames the original to the snapshot instead of dropping it; the
        snapshot's figures are that pass's read, checked unchanged before the swap, and the
        revision counts as applied once it is made. A change in the number of documents
        during the copy stops it before the swap; updates made meanwhile would stay in the
        snapshot only: stop the application, as for every rewrite. Collections with
        options (validator, capped...) are copied.
        A manifest (count, checksum) goes to the backups collection; ``mongrate backup
        restore`` puts a snapshot back, ``restore_undo`` drops the snapshots.
        """
        if not sources:
            raise OpError("op.backup_collection needs at least one collection name")
        method = "swap" if self._engine.strategy.rewrite else "copy"
        for source in sources:
            self._deferral.accessed(source)  # changes waiting for it are written first
        # a swap is folded into the next pass over the collection in this run (one read
        # and one write fewer): that pass's step number, shared by the sources
        fold = self._ctx.next_seq() if method == "swap" and self._deferral.can_defer else None
        manifests = self.parallel(*(lambda s=s: self._backup_one(s, method, fold=fold)
                                    for s in sources))
        self.report(**{f"{m['source']} backed up": m.get("count") for m in manifests})
        if manifests:
            self.report(backup_id=manifests[0].get("backup_id"))
        return manifests

    def _backup_one(self, source: str, method: str, now: datetime | None = None, *,
                    fold: int | None = None) -> dict:
        """Snapshot one collection (see :meth:`backup_collection`). ``fold``: a swap is
        left to the next rewrite pass over ``source`` (step ``fold``), which reads the
        collection anyway: it keeps the original, renamed, as the snapshot, instead of
        dropping it (:meth:`_fold_swap`)."""
        db = self._engine.db
        manifest = self._engine.backups.find_one(
            {"revision": self.revision, "source": source,
             "status": {"$in": ["copying", "built", "complete"]}}
        )
        if manifest and manifest["status"] == "complete":
            self.log(f"backup of {source} already done: {manifest['target']} ({manifest['count']} docs)")
            return manifest
        if manifest is None:
            stamp = self._backup_stamp(now)
            target = snapshot_name(source, stamp)
            if target in db.list_collection_names():
                raise BackupError(f"backup target {target} already exists; it is never "
                                  "overwritten: drop or rename it, or choose another target")
            # a new collection would not carry options over, and FerretDB v1 cannot rename
            # a collection whose name holds a dot (GridFS's fs.files)
            if method == "swap" and ("." in source or collection_options(db, source)):
                method = "copy"  # a new collection would not carry the options over
            if method == "swap" and fold is not None:
                method = "fold"
            manifest = {
                "backup_id": stamp, "revision": self.revision, "source": source,
                "target": target, "status": "copying", "method": method,
                "created_at": utcnow(),
            }
            if method == "swap":
                manifest["tmp"] = tmp_name(self.revision, "backup", source)
            elif method == "fold":
                manifest["seq"] = fold
            # the undo record first: a run killed in between leaves no snapshot undropped
            self._engine.undo.update_one(
                {**self._ctx.key(target), "kind": "collection_created", "doc_id": f"collection:{target}"},
                {"$setOnInsert": {"at": utcnow()}},
                upsert=True,
            )
            manifest["_id"] = self._engine.backups.insert_one(manifest).inserted_id
        target = manifest["target"]
        swap = manifest.get("method") == "swap"
        if manifest.get("method") == "fold" and manifest["status"] == "copying":
            return self._fold(manifest)
        if manifest["status"] == "built":  # interrupted during the swap: finish it
            if self.dry_run:
                self.log(f"would finish swapping the copy of {source} in")
                return manifest
            return self._backup_swap(manifest)
        dest = manifest["tmp"] if swap else target
        if not self.dry_run:
            db.drop_collection(dest)  # a half-made copy from an interrupted run
        total = fast_count(db, source)
        # the server's own copy where it has one (probed once per run); else streamed
        on_server, how = server_copy(db, probe=not self.dry_run)
        if self._engine.reporter.verbose:
            self.log(f"backup of {source} ({total} docs): {how}")
        if on_server:
            # (count, checksum) read from the copy itself: the manifest's exact figures
            read = server_copy_collection(db, source, dest, self.batch_size,
                                          guard=self._engine.guard)
        else:
            read = copy_collection(
                db, source, dest, self.batch_size,
                lambda batches: self.progress(batches, total, f"backup {source}", weight=len),
                guard=self._engine.guard)
        if self.dry_run:
            if swap:
                self.log(f"would rename {source} to {target} and the copy to {source}")
            return manifest
        if swap:
            count, checksum = fast_count(db, dest), read[1]
        elif on_server:
            count, checksum = read  # already read back from the snapshot itself
        else:
            count, checksum = collection_checksum(db, target, self.batch_size)
            if (count, checksum) != read:
                raise BackupError(
                    f"backup {target} does not match what was read from {source}: {count} docs / "
                    f"{checksum[:12]} stored vs {read[0]} / {read[1][:12]} read"
                )
        after = fast_count(db, source)
        if after != total or count != total or read[0] != total:
            if swap:
                db.drop_collection(dest)
            raise BackupError(
                f"{source} changed while it was being backed up ({total} documents before, "
                f"{after} after, {read[0]} copied): stop the application and run again"
            )
        done = {"count": count, "checksum": checksum}
        if swap and read[0] == 0:  # nothing to swap: like a copy, the snapshot stays empty
            db.drop_collection(dest)
            return self._backup_done(manifest, done)
        if swap:
            copy_indexes(db, source, dest)
            self.check()  # the swap cannot be taken back by this run: only under the lock
            self._engine.backups.update_one({"_id": manifest["_id"]}, {"$set": {**done, "status": "built"}})
            manifest.update(done, status="built")
            return self._backup_swap(manifest)
        return self._backup_done(manifest, done)

    def _fold(self, manifest: dict) -> dict:
        """Leave the snapshot to the next pass over the collection (deferred like a
        change that changes nothing); the pass's swap renames the original to it."""
        source = manifest["source"]
        backup_id = manifest["_id"]
        handle = FoldedBackup(partial(self._fold_read, backup_id),
                              partial(self._fold_swap, backup_id),
                              partial(self._fold_empty, backup_id))
        step = Step(self._ctx, source, manifest["seq"], None, f"{source} backed up",
                    backup=handle)
        if step.state().get("state") == "done":  # cannot be: see _fold_swap
            raise BackupError(f"backup of {source}: its pass is done but its manifest says "
                              "copying; check the snapshot by hand")
        if self.dry_run:
            self.log(f"would back up {source} by a pass over it")
            return manifest
        count = fast_count(self._engine.db, source)
        self._deferral.defer(step)
        if not self._deferral.can_defer:  # resumed by a run that does not defer: made now
            self._deferral.flush(source)
            return self._engine.backups.find_one({"_id": manifest["_id"]}) or manifest
        self.log(f"backup of {source} is made by the next pass over it")
        return {**manifest, "count": count}

    def _fold_swap(self, backup_id: Any, tmp: str) -> None:
        """The swap of a pass that carries a folded backup (its copy ``tmp`` built and
        checked, the pass's state ``built``, the manifest's figures set): the original
        becomes the snapshot and ``tmp`` the collection (:meth:`_backup_swap`: a run cut
        short between the renames finishes them)."""
        manifest = self._engine.backups.find_one({"_id": backup_id})
        if manifest is None:
            raise BackupError(f"the manifest of a backup folded into {tmp} is gone")
        if manifest["status"] == "complete":
            return
        manifest = {**manifest, "tmp": tmp, "status": "built"}
        self._engine.backups.update_one({"_id": backup_id},
                                        {"$set": {"tmp": tmp, "status": "built"}})
        self._backup_swap(manifest)

    def _fold_read(self, backup_id: Any, count: int, checksum: str) -> None:
        """The snapshot's figures: what its pass read, checked unchanged (set before the
        pass's state says ``built``, so a resumed swap finds them)."""
        self._engine.backups.update_one({"_id": backup_id},
                                        {"$set": {"count": count, "checksum": checksum}})

    def _fold_empty(self, backup_id: Any, checksum: str) -> None:
        """A folded backup of a collection its pass found empty: no snapshot is made."""
        manifest = self._engine.backups.find_one({"_id": backup_id})
        if manifest is not None and manifest["status"] != "complete":
            self._backup_done(manifest, {"count": 0, "checksum": checksum})

    def _backup_swap(self, manifest: dict) -> dict:
        """Rename source -> snapshot, then the copy -> source. Each rename is skipped if it
        already happened, so an interrupted swap is finished by running it again."""
        db = self._engine.db
        source, target, tmp = manifest["source"], manifest["target"], manifest["tmp"]
        self.check()
        names = set(db.list_collection_names())
        if source in names and target not in names and tmp in names:
            db[source].rename(target)
            names = set(db.list_collection_names())
        if tmp in names and source not in names:
            self.check()
            db[tmp].rename(source)
            names = set(db.list_collection_names())
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
        self._engine.backups.update_one({"_id": manifest["_id"]}, {"$set": done})
        manifest.update(done)
        self.log(f"backed up {manifest['source']} -> {manifest['target']}: {done['count']} docs, "
                 f"checksum {done['checksum'][:12]}")
        return manifest

    def _backup_stamp(self, now: datetime | None) -> str:
        """One id for all snapshots of this revision, kept across an interrupted run."""
        with self._stamp_lock:  # parallel backups of one revision share it too
            earlier = self._engine.backups.find_one({"revision": self.revision,
                                               "status": {"$in": ["copying", "built", "complete"]}})
            if earlier and earlier.get("backup_id"):
                return earlier["backup_id"]
            if self._engine.backup_stamp is None:
                self._engine.backup_stamp = (now or utcnow()).strftime("%Y%m%d_%H%M%S")
            return self._engine.backup_stamp

    # -------------------------------------------------------------- rewrites
