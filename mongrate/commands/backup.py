"""``mongrate backup list|restore|drop``: the rollback procedure as one command.

A backup id is the ``YYYYMMDD_HHMMSS`` stamp shared by the snapshots one backup
revision made (a snapshot's collection name also works). Restore compares the live
collection with the snapshot, refuses without ``yes`` when they differ, keeps a copy
of the live collection first, then replaces only the documents that differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from pymongo import ReplaceOne

from mongrate.commands.project import Project
from mongrate.config import DEFAULT_LOCK_TIMEOUT
from mongrate.errors import BackupError, BackupNotFound
from mongrate.mongo.codec import RAW, id_key, utcnow
from mongrate.mongo.collections import (
    bulk_write,
    collection_checksum,
    copy_collection,
    server_copy_collection,
    statement_limit,
)
from mongrate.mongo.pipeline import chunked
from mongrate.names import prerestore_name
from mongrate.operations.strategy import server_copy
from mongrate.runtime.lock import Lock


@dataclass
class RestoreReport:
    backup_id: str
    source: str
    snapshot: str
    changed: int
    missing: int
    added: int
    restored: bool
    safety_copy: str | None = None

    @property
    def differing(self) -> int:
        return self.changed + self.missing + self.added

    def describe(self) -> str:
        if not self.differing:
            return f"{self.source}: identical to {self.snapshot}; nothing to restore"
        return (f"{self.source}: restored from {self.snapshot} ({self.changed} changed, "
                f"{self.missing} missing, {self.added} added documents put back); the live "
                f"collection was kept as {self.safety_copy}")


def list_backups(project: Project) -> list[dict]:
    return list(project.store.backups.find().sort([("created_at", -1), ("_id", 1)]))


def _manifests(project: Project, backup_id: str, collections: Sequence[str] = ()) -> list[dict]:
    query = {"$or": [{"backup_id": backup_id}, {"target": backup_id}],
                 "status": {"$ne": "dropped"}}
    found = list(project.store.backups.find(query).sort("source", 1))
    if not found:
        raise BackupNotFound(f"no backup {backup_id!r}: see 'mongrate backup list'")
    if collections:
        unknown = set(collections) - {m["source"] for m in found}
        if unknown:
            raise BackupNotFound(
                f"backup {backup_id} has no snapshot of {', '.join(sorted(unknown))}")
        found = [m for m in found if m["source"] in collections]
    return found


def _digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=16).digest()


def _compare(db, live: str, snapshot: str, batch_size: int, fix: bool = False) -> tuple[int, int, int]:
    """Count (changed, missing, added) documents of ``live`` against ``snapshot``; with
    ``fix``, put each differing batch back as it goes.

    Streams both sides in batches, looking each batch up in the other side with one ``$in``
    query, so memory stays flat however large the collections are.
    """
    snap = db.get_collection(snapshot, codec_options=RAW)
    cur = db.get_collection(live, codec_options=RAW)
    changed = missing = added = 0
    for batch in chunked(snap.find().batch_size(batch_size), batch_size):
        ids = [d["_id"] for d in batch]
        have = {id_key(d["_id"]): _digest(d.raw) for d in cur.find({"_id": {"$in": ids}})}
        differing = []
        for d in batch:
            got = have.get(id_key(d["_id"]))
            if got is None:
                missing += 1
            elif got != _digest(d.raw):
                changed += 1
            else:
                continue
            differing.append(d)
        if fix and differing:
            bulk_write(db[live], [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in differing],
                       statement_limit(db))
    for batch in chunked(cur.find({}, {"_id": 1}).batch_size(batch_size), batch_size):
        ids = [d["_id"] for d in batch]
        known = {id_key(d["_id"]) for d in snap.find({"_id": {"$in": ids}}, {"_id": 1})}
        extra = [i for i in ids if id_key(i) not in known]
        added += len(extra)
        if fix and extra:
            db[live].delete_many({"_id": {"$in": extra}})
    return changed, missing, added


def restore_backup(project: Project, backup_id: str, *, collections: Sequence[str] = (),
                   yes: bool = False, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> list[RestoreReport]:
    db = project.store.db
    size = project.config.batch_size
    manifests = _manifests(project, backup_id, collections)
    for m in manifests:
        if m.get("status") != "complete":
            raise BackupError(f"snapshot {m['target']} is {m.get('status')}, not complete: cannot restore it")
    reports: list[RestoreReport] = []
    with Lock(project.store.leases, lease=project.config.lock_lease_seconds, timeout=lock_timeout,
              command=f"backup restore {backup_id}", reporter=project.reporter):
        plans = []
        for m in manifests:
            count, checksum = collection_checksum(db, m["target"], size)
            if (count, checksum) != (m["count"], m["checksum"]):
                raise BackupError(
                    f"snapshot {m['target']} no longer matches its manifest ({count} docs, "
                    f"checksum {checksum[:12]} vs {m['count']}, {m['checksum'][:12]}): not restoring"
                )
            plans.append((m, *_compare(db, m["source"], m["target"], size)))
        if any(sum(p[1:]) for p in plans) and not yes:
            detail = "; ".join(f"{m['source']}: {c + mi + a} differ "
                               f"({c} changed, {mi} missing, {a} added)"
                               for m, c, mi, a in plans if c or mi or a)
            raise BackupError(
                f"the live collections changed since backup {backup_id} ({detail}); "
                "pass --yes to overwrite them (a copy of each is kept first)"
            )
        stamp = utcnow().strftime("%Y%m%d_%H%M%S")
        for m, changed, missing, added in plans:
            report = RestoreReport(backup_id, m["source"], m["target"], changed, missing, added,
                                   restored=False)
            if report.differing:
                safety = prerestore_name(m["source"], stamp)
                db.drop_collection(safety)
                # the server's own copy where it has one (probed once per client)
                copy = server_copy_collection if server_copy(db)[0] else copy_collection
                count, checksum = copy(db, m["source"], safety, size)
                project.store.backups.insert_one({
                    "backup_id": f"prerestore_{stamp}", "revision": None,
                    "source": m["source"], "target": safety, "status": "complete", "count": count,
                    "checksum": checksum, "created_at": utcnow(), "kind": "prerestore",
                })
                report.safety_copy = safety
                _compare(db, m["source"], m["target"], size, fix=True)
                after = collection_checksum(db, m["source"], size)
                if after != (m["count"], m["checksum"]):
                    raise BackupError(
                        f"{m['source']} does not match {m['target']} after the restore; "
                        f"the pre-restore copy is {safety}"
                    )
                report.restored = True
            reports.append(report)
    return reports


def drop_backup(project: Project, backup_id: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> dict:
    """Drop a backup's snapshot collections (under the lock: never one being copied)."""
    manifests = _manifests(project, backup_id)
    with Lock(project.store.leases, lease=project.config.lock_lease_seconds, timeout=lock_timeout,
              command=f"backup drop {backup_id}", reporter=project.reporter):
        manifests = _manifests(project, backup_id)
        # "built": a swap is under way and the snapshot may be the only copy of the data
        copying = [m["target"] for m in manifests if m.get("status") in ("copying", "built")]
        if copying:
            raise BackupError(f"snapshot {', '.join(copying)} is still being made (or its "
                              "run died): finish the upgrade first ('mongrate upgrade')")
        for m in manifests:
            project.store.db.drop_collection(m["target"])
            project.store.backups.update_one({"_id": m["_id"]},
                                             {"$set": {"status": "dropped", "dropped_at": utcnow()}})
    return {"backup_id": backup_id, "target": ", ".join(m["target"] for m in manifests)}
