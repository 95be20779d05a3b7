"""Create necessary indexes

Revision ID: c2d8e9f0a1b3
Revises: 9a6b41d3e5f7
Create Date: 2026-11-24 09:00:03

The guide's "Creates indexes" step: the indexes the history and file queries need. Each is
created only if absent (an index with the same keys under another name is kept and serves
instead). Downgrade drops only the indexes this revision created, and a collection only if
creating an index brought it into being (thumbnails.files, which the app fills lazily) and
it is still empty.
"""

from mongrate import Operations

revision = "c2d8e9f0a1b3"
down_revision = "9a6b41d3e5f7"
branch_labels = None
depends_on = None

#: (collection, keys, name, options)
INDEXES = (
    ("chat_messages", [("session_id", 1), ("created_at", 1)], "session_created", {}),
    ("chat_messages", [("session_id", 1), ("has_files", 1), ("created_at", 1)],
     "session_files_created", {}),
    ("chat_messages", [("user_id", 1), ("has_files", 1), ("created_at", -1)],
     "user_files_created", {}),
    ("file_uploads", [("file_id", 1)], "file_id_unique", {"unique": True}),
    ("file_uploads", [("message_id", 1), ("user_id", 1)], "message_user", {}),
    ("file_uploads", [("session_id", 1), ("user_id", 1), ("uploaded_at", -1)],
     "session_user_uploaded", {}),
    ("fs.files", [("metadata.user_id", 1), ("metadata.session_id", 1)],
     "metadata_user_session", {}),
    ("thumbnails.files", [("filename", 1)], "thumb_key", {}),
)


def upgrade(op: Operations) -> None:
    created = [name for collection, keys, name, options in INDEXES
               if op.create_index(collection, keys, name=name, **options)]
    op.report(indexes_created=len(created), indexes_present=len(INDEXES) - len(created))


def downgrade(op: Operations) -> None:
    op.restore_undo()
