"""Back up existing data

Revision ID: 4c1d7e0a9b21
Revises:
Create Date: 2026-11-24 09:00:00

The guide's "Creates data backup" step (run with the service stopped, as the guide's step 1
says). chat_messages, file_uploads and chat_sessions are snapshotted into
<name>_backup_<YYYYMMDD_HHMMSS> collections that share one backup id (the stamp). Each has
a manifest in mongrate_backups (source, target, count, content checksum, revision, time);
`mongrate backup restore <stamp>` puts them back (verifying the checksum first).

The snapshots are made by swapping (op.backup_collection(method="swap")): each collection
is streamed as raw BSON in batches into a new collection with the same indexes, counts are
checked, and then the original collection is renamed to the snapshot name and the copy
takes its place. The snapshot is thus the original documents themselves, exact by
construction, and its checksum is computed from them as they are read; a verifying re-read
of a copy would cost more than the copy on FerretDB (reads are the expensive half), which
bench/migrate.py measures. chat_messages is copied beside the other two (op.parallel).

GridFS bytes are not copied. The ids and lengths of the files in the `fs` bucket are
recorded in the side collection mongrate_backups_gridfs_<stamp> (one small document per
file: 20k ids in the manifest itself would make it ~0.5 MB and grow with the data); the
file_uploads manifest names that collection with its count and checksum.

Re-running after an interruption starts an unfinished snapshot over and keeps finished
ones. Downgrade drops the snapshots and the side collection this revision made.
"""

from mongrate.mongo.codec import RAW
from mongrate.mongo.collections import ContentChecksum, collection_checksum, fast_count
from mongrate.mongo.pipeline import chunked

revision = "4c1d7e0a9b21"
down_revision = None
branch_labels = None
depends_on = None

SOURCES = ("chat_messages", "file_uploads", "chat_sessions")
BUCKET = "fs"
#: The snapshots are the original collections, renamed; the live ones become verified-count
#: copies (Operations.backup_collection says why: one read instead of two on FerretDB).
METHOD = "swap"
#: The live copy of chat_messages is stored in the order the link revision merges in; the
#: schema revision keeps it. Only the speed of those passes depends on it (they check it).
MESSAGE_ORDER = [("session_id", 1), ("user_id", 1), ("created_at", 1)]


def gridfs_ids_collection(op, stamp: str) -> str:
    # TODO(engine): public name of the backups collection (ENGINE_REQUESTS.md)
    return f"{op.backups.name}_gridfs_{stamp}"


def record_gridfs_ids(op, target: str) -> dict:
    """Copy ``{_id, length}`` of every GridFS file into ``target``; verify; describe it."""
    db = op.db
    if not op.dry_run:
        db.drop_collection(target)  # a half-made list from an interrupted run
    total = fast_count(db, f"{BUCKET}.files")
    summer = ContentChecksum()
    dst = db.get_collection(target, codec_options=RAW)
    cursor = db.get_collection(f"{BUCKET}.files", codec_options=RAW).find(
        {}, {"length": 1}).batch_size(op.batch_size)
    for batch in op.progress(chunked(cursor, op.batch_size), total, "GridFS ids", weight=len):
        for doc in batch:
            summer.add(doc.raw)
        dst.insert_many(batch, ordered=False)
    record = {"bucket": BUCKET, "ids_collection": target, "count": summer.count,
              "checksum": summer.hexdigest}
    if not op.dry_run and collection_checksum(db, target, op.batch_size) != (
            summer.count, summer.hexdigest):
        raise RuntimeError(f"{target} does not hold the GridFS ids that were read: "
                           "was the service uploading files? Stop it and run again")
    return record


def upgrade(op):
    """Snapshot the three collections and record the GridFS ids; chat_messages (most of the
    work) runs beside the rest."""
    def messages() -> list[dict]:
        return [op.backup_collection("chat_messages", method=METHOD, sort=MESSAGE_ORDER)]

    def the_rest() -> list[dict]:
        uploads = op.backup_collection("file_uploads", method=METHOD)
        # After the manifest, so that the side collection is named by a stamp already kept.
        ids = gridfs_ids_collection(op, uploads["backup_id"])
        if not (uploads.get("gridfs") and ids in op.db.list_collection_names()):
            uploads["gridfs"] = record_gridfs_ids(op, ids)
            if not op.dry_run:
                op.backups.update_one({"_id": uploads["_id"]}, {"$set": {"gridfs": uploads["gridfs"]}})
        return [uploads, op.backup_collection("chat_sessions", method=METHOD)]

    manifests = [m for part in op.parallel(messages, the_rest) for m in part]
    op.results.update({
        "backup_id": manifests[0]["backup_id"],
        **{m["source"]: m.get("count") for m in manifests},
        "gridfs_files": manifests[1]["gridfs"]["count"],
    })


def downgrade(op):
    """Drop the side collection of GridFS ids, then the snapshots (op.restore_undo)."""
    stamps = {m.get("backup_id") for m in op.backups.find({"revision": op.revision})}
    for stamp in sorted(s for s in stamps if s):
        op.db.drop_collection(gridfs_ids_collection(op, stamp))
    op.restore_undo()
