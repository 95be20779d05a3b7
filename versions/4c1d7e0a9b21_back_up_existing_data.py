"""Back up existing data

Revision ID: 4c1d7e0a9b21
Revises:
Create Date: 2026-11-24 09:00:00

The guide's "Creates data backup" step. chat_messages, file_uploads and chat_sessions are
copied as raw BSON, streamed in batches, into <name>_backup_<YYYYMMDD_HHMMSS> collections
that share one backup id (the stamp). Each has a manifest in mongrate_backups (source,
target, count, content checksum, revision, time) and is verified by count and checksum
before this revision counts as done; `mongrate backup restore <stamp>` puts them back.

GridFS bytes are not copied. The ids and lengths of the files in the `fs` bucket are
recorded in the side collection mongrate_backups_gridfs_<stamp> (one small document per
file: 20k ids in the manifest itself would make it ~0.5 MB and grow with the data); the
file_uploads manifest names that collection with its count and checksum.

Re-running after an interruption starts an unfinished snapshot over and keeps finished
ones. Downgrade drops the snapshots and the side collection this revision made.
"""

from mongrate.ops import RAW, ContentChecksum, chunked, collection_checksum
from mongrate.rewrite import fast_count

revision = "4c1d7e0a9b21"
down_revision = None
branch_labels = None
depends_on = None

SOURCES = ("chat_messages", "file_uploads", "chat_sessions")
BUCKET = "fs"


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
    """Snapshot the three collections (verified) and record the GridFS ids."""
    first = op.backup_collection(SOURCES[0])
    stamp = first["backup_id"]
    gridfs = record_gridfs_ids(op, gridfs_ids_collection(op, stamp))
    manifests = [first]
    manifests.append(op.backup_collection("file_uploads", extra={"gridfs": gridfs}))
    manifests.extend(op.backup_collection(s) for s in SOURCES[2:])
    op.results.update({
        "backup_id": stamp,
        **{m["source"]: m.get("count") for m in manifests},
        "gridfs_files": gridfs["count"],
    })


def downgrade(op):
    """Drop the side collection of GridFS ids, then the snapshots (op.restore_undo)."""
    stamps = {m.get("backup_id") for m in op.backups.find({"revision": op.revision})}
    for stamp in sorted(s for s in stamps if s):
        op.db.drop_collection(gridfs_ids_collection(op, stamp))
    op.restore_undo()
