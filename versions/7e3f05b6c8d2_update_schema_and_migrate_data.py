"""Update database schema and migrate existing data

Revision ID: 7e3f05b6c8d2
Revises: 4c1d7e0a9b21
Create Date: 2026-11-24 09:00:01

The guide's "Updates database schema" and "Migrates existing data" steps.

- Every chat message states its attachments consistently: `file_ids` is a list of hex
  strings (null or absent becomes []; ObjectIds become hex; blanks and repeats go) and
  `has_files` is a bool equal to `len(file_ids) > 0`.
- Every upload gets its true `mime_type`, sniffed from the first bytes of its GridFS file
  (app_patch.sniff, never the client's claim; a claim that differed is kept in
  `claimed_mime_type`), `is_image`, `file_size` equal to the GridFS length, and
  `file_missing`. An upload whose GridFS file is gone is flagged (`file_missing: true`,
  `is_image: false`, type and size left as claimed), never deleted.

Both collections are rewritten in one streaming pass each (mongrate/rewrite.py), side by
side (op.parallel). Messages are read as stored and written back in the same order, which
keeps the (session_id, user_id, created_at) order the backup revision stored them in: the
order the link revision merges in. When the link revision runs next in the same
`upgrade`, the message change is folded into its pass over chat_messages (the collection
is read and written once for both; each revision keeps its own undo record). First
bytes come from one pass over the `fs` bucket's first chunks, joined to the uploads by
file id through server-sorted streams, so memory stays flat. Safe to re-run after an
interruption. Downgrade: fields that did not exist are removed again and changed fields get
their old values back.
"""

from bson import ObjectId
from pymongo.errors import BulkWriteError

from app_patch.rules import (
    SNIFF_BYTES,
    gridfs_oid,
    message_file_changes,
    upload_file_changes,
)
from app_patch.sniff import sniff_mime
from mongrate.mongo.pipeline import read_ahead
from mongrate.operations.ops import RAW, chunked
from mongrate.operations.rewrite import SortedLookup, fast_count

revision = "7e3f05b6c8d2"
down_revision = "4c1d7e0a9b21"
branch_labels = None
depends_on = None

BUCKET = "fs"
CHUNK_BATCH = 32  # first chunks are up to 255 KiB each: keep a fetched batch under ~8 MiB


def upgrade(op):
    # Two collections, two streams at once: one stream leaves part of the server idle.
    _, uploads = op.parallel(lambda: fix_message_fields(op), lambda: fix_upload_facts(op))
    op.results.update(uploads)


def downgrade(op):
    op.results["uploads_restored"] = op.restore_rewrite("file_uploads")
    op.results["messages_restored"] = op.restore_rewrite("chat_messages")
    op.restore_undo()


# ----------------------------------------------------------------------- messages
def fix_message_fields(op) -> int | str | None:
    # As stored, and written back in that order: the backup revision stored them in the
    # order the link revision merges in. In an `upgrade` that runs the link revision next,
    # that revision's pass over chat_messages writes these changes too (op.rewrite_each).
    return op.rewrite_each("chat_messages", message_file_changes, "chat_messages file fields",
                           result="messages_changed")


# ------------------------------------------------------------------------ uploads
def heads_collection(op) -> str:
    return f"mongrate_tmp_{op.revision}_gridfs_heads"


def sniff_first_chunks(op, target: str) -> int:
    """One pass over the bucket's first chunks: ``{_id: files_id, mime, head}`` into
    ``target`` (``head``: bytes the first chunk held, to spot files that need more)."""
    db = op.db
    db.drop_collection(target)
    chunks = db[f"{BUCKET}.chunks"]
    total = fast_count(db, f"{BUCKET}.files")
    cursor = chunks.find({"n": 0}, {"files_id": 1, "data": 1}).batch_size(CHUNK_BATCH)
    written = 0
    for batch in op.progress(chunked(cursor, CHUNK_BATCH), total, "sniff GridFS first chunks",
                             weight=len):
        facts = [{"_id": c["files_id"], "mime": sniff_mime(bytes(c["data"][:SNIFF_BYTES])),
                  "head": len(c["data"])} for c in batch]
        try:
            db[target].insert_many(facts, ordered=False)
        except BulkWriteError as exc:  # a duplicate first chunk: the first one stands
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", ())):
                raise
        written += len(facts)
    return written


def fix_upload_facts(op) -> dict:
    rw = op.rewrite("file_uploads")
    db = op.db
    heads = heads_collection(op)
    if not rw.start():
        if not op.dry_run:
            db.drop_collection(heads)  # left by a run interrupted during the swap
        return {"uploads": "already done"}
    if op.dry_run:  # sniffing needs the side collection: say what would happen instead
        op.log(f"would sniff the first chunks of {fast_count(db, f'{BUCKET}.files')} GridFS "
               f"files and rewrite {fast_count(db, 'file_uploads')} uploads")
        return {}
    sniff_first_chunks(op, heads)
    files = SortedLookup(read_ahead(db[f"{BUCKET}.files"].find({}, {"length": 1}).sort("_id", 1)
                                    .batch_size(op.batch_size), op.batch_size),
                         "_id", f"{BUCKET}.files")
    sniffed = SortedLookup(read_ahead(db[heads].find().sort("_id", 1).batch_size(op.batch_size),
                                      op.batch_size), "_id", heads)
    counts = {"uploads": 0, "files_missing": 0, "mime_corrected": 0, "images": 0,
              "sizes_corrected": 0, "uploads_changed": 0}
    uploads = db.get_collection("file_uploads", codec_options=RAW)
    total = fast_count(db, "file_uploads")
    cursor = uploads.find().sort("file_id", 1).batch_size(op.batch_size)
    for batch in op.batches(cursor, "file_uploads file facts", total):
        for raw in batch:
            file_id = raw.get("file_id")
            if isinstance(file_id, str) and len(file_id) == 24 and file_id == file_id.lower() \
                    and ObjectId.is_valid(file_id):
                oid = ObjectId(file_id)  # canonical ids arrive in ascending order
                meta, fact = files.get(oid), sniffed.get(oid)
            else:  # rare legacy shapes (upper case, ObjectId): looked up one by one
                oid = gridfs_oid(file_id)
                meta = db[f"{BUCKET}.files"].find_one({"_id": oid}, {"length": 1}) if oid else None
                fact = db[heads].find_one({"_id": oid}) if meta else None
            length = int(meta["length"]) if meta and meta.get("length") is not None else None
            mime = None
            if length == 0:
                mime = sniff_mime(b"")
            elif length is not None:
                if fact is not None and fact["head"] >= min(SNIFF_BYTES, length):
                    mime = fact["mime"]
                else:  # no first chunk, or one shorter than the sniffer wants (tiny chunkSize)
                    mime = sniff_mime(_read_head(db, oid))
            changes = upload_file_changes(raw, length, mime)
            _count(counts, raw, changes, length)
            rw.change(raw, changes)
    counts["uploads_changed"] = rw.finish()
    db.drop_collection(heads)
    return counts


def _read_head(db, oid) -> bytes:
    """First bytes of a file whose first chunk is missing or short: one query for its chunks
    (rare: PyMongo writes 255 KiB chunks)."""
    head = b""
    for chunk in db[f"{BUCKET}.chunks"].find({"files_id": oid}).sort("n", 1):
        head += bytes(chunk["data"])
        if len(head) >= SNIFF_BYTES:
            break
    return head[:SNIFF_BYTES]


def _count(counts: dict, raw, changes: dict, length: int | None) -> None:
    counts["uploads"] += 1
    if length is None:
        counts["files_missing"] += 1
    if "claimed_mime_type" in changes:
        counts["mime_corrected"] += 1
    if changes.get("is_image", raw.get("is_image")) is True:
        counts["images"] += 1
    if "file_size" in changes:
        counts["sizes_corrected"] += 1
