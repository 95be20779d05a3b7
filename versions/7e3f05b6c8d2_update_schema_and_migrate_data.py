"""Update database schema and migrate existing data

Revision ID: 7e3f05b6c8d2
Revises: 4c1d7e0a9b21
Create Date: 2026-11-24 09:00:01

The guide's "Updates database schema" and "Migrates existing data" steps.

- Every chat message states its attachments consistently: `file_ids` is a list of hex
  strings (null or absent becomes []; ObjectIds become hex; blanks and repeats go) and
  `has_files` is a bool equal to `len(file_ids) > 0`.
- Every upload gets its true `mime_type`, sniffed from the first bytes of its GridFS file
  (never the client's claim; a claim that differed is kept in `claimed_mime_type`),
  `is_image`, `file_size` equal to the GridFS length, and `file_missing`. An upload whose
  GridFS file is gone is flagged (`file_missing: true`, `is_image: false`, type and size
  left as claimed), never deleted.

Uploads are read together with the GridFS file list and each file's first chunk, grouped
by file id. Downgrade: changed fields get their old values back, new fields go again.
"""

from app_patch.rules import SNIFF_BYTES, gridfs_oid, message_file_changes, upload_file_changes
from app_patch.sniff import sniff_mime
from mongrate import Operations

revision = "7e3f05b6c8d2"
down_revision = "4c1d7e0a9b21"
branch_labels = None
depends_on = None


def upgrade(op: Operations) -> None:
    op.change_each("chat_messages", set_message_file_fields)
    facts = {"files_missing": 0, "mime_corrected": 0, "images": 0, "sizes_corrected": 0}
    op.change_groups(
        lambda file_id, uploads, files, heads: set_upload_facts(op, uploads, files, heads, facts),
        uploads=op.source("file_uploads", key="file_id"),
        files=op.source("fs.files", key="_id", convert=str, projection={"length": 1}),
        heads=op.source("fs.chunks", key="files_id", convert=str, filter={"n": 0},
                        map=first_bytes),
    )
    op.report(**facts)


def downgrade(op: Operations) -> None:
    op.restore_undo()


def set_message_file_fields(message):
    message.update(message_file_changes(message))


def first_bytes(chunk):
    """What the file's first chunk says: its sniffed type and how many bytes it held."""
    data = bytes(chunk.get("data") or b"")
    return {"mime": sniff_mime(data[:SNIFF_BYTES]), "head": len(data)}


def set_upload_facts(op: Operations, uploads, files, heads, facts):
    for upload in uploads:
        length, mime = file_facts(op, upload.get("file_id"), files, heads)
        changes = upload_file_changes(upload, length, mime)
        upload.update(changes)
        facts["files_missing"] += length is None
        facts["mime_corrected"] += "claimed_mime_type" in changes
        facts["images"] += upload.get("is_image") is True
        facts["sizes_corrected"] += "file_size" in changes


def file_facts(op: Operations, file_id, files, heads):
    """(GridFS length, sniffed type) of an upload's file; (None, None) if it is gone."""
    if not _canonical(file_id):  # rare legacy shapes (upper case, ObjectId): looked up
        oid = gridfs_oid(file_id)
        found = op.db["fs.files"].find_one({"_id": oid}, {"length": 1}) if oid else None
        files = [found] if found else []
        heads = []
    if not files or files[0].get("length") is None:
        return None, None
    length = int(files[0]["length"])
    if length == 0:
        return 0, sniff_mime(b"")
    if heads and heads[0]["head"] >= min(SNIFF_BYTES, length):
        return length, heads[0]["mime"]
    # no first chunk, or one shorter than the sniffer wants (a tiny chunkSize)
    return length, sniff_mime(read_head(op, files[0]["_id"]))


def read_head(op: Operations, oid):
    head = b""
    for chunk in op.db["fs.chunks"].find({"files_id": oid}).sort("n", 1):
        head += bytes(chunk["data"])
        if len(head) >= SNIFF_BYTES:
            break
    return head[:SNIFF_BYTES]


def _canonical(file_id):
    return isinstance(file_id, str) and file_id == file_id.lower() and gridfs_oid(file_id)
