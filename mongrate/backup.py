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

from pymongo import DeleteMany, ReplaceOne

from mongrate.commands import Project
from mongrate.errors import BackupError
from mongrate.ops import RAW, ContentChecksum, chunked, collection_checksum
from mongrate.runner import Lock
from mongrate.store import utcnow


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
    query = {"$or": [{"backup_id": backup_id}, {"_id": backup_id}]}
    found = list(project.store.backups.find(query).sort("source", 1))
    if not found:
        raise BackupError(f"no backup {backup_id!r}: see 'mongrate backup list'")
    if collections:
        unknown = set(collections) - {m["source"] for m in found}
        if unknown:
            raise BackupError(f"backup {backup_id} has no snapshot of {', '.join(sorted(unknown))}")
        found = [m for m in found if m["source"] in collections]
    return found


def _digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=16).digest()


def diff_collections(db, live: str, snapshot: str, batch_size: int = 1000):
    """(changed ids, missing ids, added ids) of ``live`` against ``snapshot``.

    Holds one 16-byte digest per snapshot document, not the documents.
    """
    snap = {doc["_id"]: _digest(doc.raw)
            for doc in db.get_collection(snapshot, codec_options=RAW).find().batch_size(batch_size)}
    changed, added = [], []
    for doc in db.get_collection(live, codec_options=RAW).find().batch_size(batch_size):
        want = snap.pop(doc["_id"], None)
        if want is None:
            added.append(doc["_id"])
        elif want != _digest(doc.raw):
            changed.append(doc["_id"])
    return changed, list(snap), added


def _copy(db, source: str, target: str, batch_size: int) -> tuple[int, str]:
    summer = ContentChecksum()
    dst = db.get_collection(target, codec_options=RAW)
    for batch in chunked(db.get_collection(source, codec_options=RAW).find().batch_size(batch_size),
                         batch_size):
        for doc in batch:
            summer.add(doc.raw)
        dst.insert_many(batch, ordered=False)
    return summer.count, summer.hexdigest


def restore_backup(project: Project, backup_id: str, *, collections: Sequence[str] = (),
                   yes: bool = False, lock_timeout: float = 60.0) -> list[RestoreReport]:
    db = project.store.db
    size = project.config.batch_size
    manifests = _manifests(project, backup_id, collections)
    for m in manifests:
        if m.get("status") != "complete":
            raise BackupError(f"snapshot {m['target']} is {m.get('status')}, not complete: cannot restore it")
    reports: list[RestoreReport] = []
    with Lock(project.store, lease=project.config.lock_lease_seconds, timeout=lock_timeout,
              command=f"backup restore {backup_id}", reporter=project.reporter):
        plans = []
        for m in manifests:
            count, checksum = collection_checksum(db, m["target"], size)
            if (count, checksum) != (m["count"], m["checksum"]):
                raise BackupError(
                    f"snapshot {m['target']} no longer matches its manifest ({count} docs, "
                    f"checksum {checksum[:12]} vs {m['count']}, {m['checksum'][:12]}): not restoring"
                )
            plans.append((m, *diff_collections(db, m["source"], m["target"], size)))
        changed_total = sum(len(c) + len(mi) + len(a) for _, c, mi, a in plans)
        if changed_total and not yes:
            detail = "; ".join(f"{m['source']}: {len(c) + len(mi) + len(a)} differ "
                               f"({len(c)} changed, {len(mi)} missing, {len(a)} added)"
                               for m, c, mi, a in plans if c or mi or a)
            raise BackupError(
                f"the live collections changed since backup {backup_id} ({detail}); "
                "pass --yes to overwrite them (a copy of each is kept first)"
            )
        stamp = utcnow().strftime("%Y%m%d_%H%M%S")
        for m, changed, missing, added in plans:
            report = RestoreReport(backup_id, m["source"], m["target"], len(changed), len(missing),
                                   len(added), restored=False)
            if report.differing:
                safety = f"{m['source']}_prerestore_{stamp}"
                db.drop_collection(safety)
                count, checksum = _copy(db, m["source"], safety, size)
                project.store.backups.insert_one({
                    "_id": safety, "backup_id": f"prerestore_{stamp}", "revision": None,
                    "source": m["source"], "target": safety, "status": "complete", "count": count,
                    "checksum": checksum, "created_at": utcnow(), "kind": "prerestore",
                })
                report.safety_copy = safety
                snap = db.get_collection(m["target"], codec_options=RAW)
                live = db[m["source"]]
                for ids in chunked(changed + missing, size):
                    live.bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True)
                                     for d in snap.find({"_id": {"$in": ids}})], ordered=False)
                for ids in chunked(added, size):
                    live.bulk_write([DeleteMany({"_id": {"$in": ids}})])
                after = collection_checksum(db, m["source"], size)
                if after != (m["count"], m["checksum"]):
                    raise BackupError(
                        f"{m['source']} does not match {m['target']} after the restore; "
                        f"the pre-restore copy is {safety}"
                    )
                report.restored = True
            reports.append(report)
    return reports


def drop_backup(project: Project, backup_id: str) -> dict:
    manifests = _manifests(project, backup_id)
    for m in manifests:
        project.store.db.drop_collection(m["target"])
        project.store.backups.update_one({"_id": m["_id"]},
                                         {"$set": {"status": "dropped", "dropped_at": utcnow()}})
    return {"backup_id": backup_id, "target": ", ".join(m["target"] for m in manifests)}
