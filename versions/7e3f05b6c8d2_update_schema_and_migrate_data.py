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
by file id; the few the streams cannot pair (a legacy `file_id` shape, a first chunk
shorter than the sniffer wants) are read from GridFS one by one
(app_patch/rules/gridfs_files.py). Downgrade: changed fields get their old values back, new fields go again.
"""

from app_patch.rules import (
    first_chunk_facts,
    gridfs_file_facts,
    message_file_changes,
    upload_file_changes,
)
from mongrate import Operations

revision = "7e3f05b6c8d2"
down_revision = "4c1d7e0a9b21"
branch_labels = None
depends_on = None


def upgrade(op: Operations) -> None:
    op.change_each("chat_messages", set_message_file_fields)
    facts = {"files_missing": 0, "mime_corrected": 0, "images": 0, "sizes_corrected": 0}

    def set_upload_facts(file_id, uploads, files, heads):
        for upload in uploads:
            length, mime = gridfs_file_facts(op.db, upload.get("file_id"), files, heads)
            changes = upload_file_changes(upload, length, mime)
            upload.update(changes)
            facts["files_missing"] += length is None
            facts["mime_corrected"] += "claimed_mime_type" in changes
            facts["images"] += upload.get("is_image") is True
            facts["sizes_corrected"] += "file_size" in changes

    op.change_groups(
        set_upload_facts,
        uploads=op.source("file_uploads", key="file_id"),
        files=op.source("fs.files", key="_id", convert=str, projection={"length": 1}),
        heads=op.source("fs.chunks", key="files_id", convert=str, filter={"n": 0},
                        map=first_chunk_facts),
    )
    op.report(**facts)


def downgrade(op: Operations) -> None:
    op.restore_undo()


def set_message_file_fields(message):
    message.update(message_file_changes(message))
