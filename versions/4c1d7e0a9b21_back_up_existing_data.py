"""Back up existing data

Revision ID: 4c1d7e0a9b21
Revises:
Create Date: 2026-11-24 09:00:00

The guide's "Creates data backup" step (run with the service stopped, as the guide's step 1
says). chat_messages, file_uploads, chat_sessions and the GridFS file list fs.files are
snapshotted into <name>_backup_<YYYYMMDD_HHMMSS> collections that share one backup id, each
with a manifest (count, content checksum). The GridFS bytes in fs.chunks are not copied: no
later revision changes them. `mongrate backup list` shows the snapshots and
`mongrate backup restore <id>` puts them back (the guide's rollback procedure).

Downgrade drops the snapshots.
"""

from mongrate import Operations

revision = "4c1d7e0a9b21"
down_revision = None
branch_labels = None
depends_on = None

COLLECTIONS = ("chat_messages", "file_uploads", "chat_sessions", "fs.files")


def upgrade(op: Operations) -> None:
    op.backup_collection(*COLLECTIONS)


def downgrade(op: Operations) -> None:
    op.restore_undo()
