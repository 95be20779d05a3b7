"""Pure rules the migration revisions in versions/ use (no database, no I/O)."""

from app_patch.rules.file_fields import (
    SNIFF_BYTES,
    gridfs_oid,
    message_file_changes,
    normalise_file_ids,
    upload_file_changes,
)
from app_patch.rules.linking import (
    AMBIGUITY_MARGIN,
    LINK_WINDOW,
    GroupLinks,
    LinkDecision,
    MessageRef,
    Outcome,
    UploadRef,
    choose_carrier,
    link_group,
    link_session,
)

__all__ = [
    "AMBIGUITY_MARGIN",
    "LINK_WINDOW",
    "SNIFF_BYTES",
    "GroupLinks",
    "LinkDecision",
    "MessageRef",
    "Outcome",
    "UploadRef",
    "choose_carrier",
    "gridfs_oid",
    "link_group",
    "link_session",
    "message_file_changes",
    "normalise_file_ids",
    "upload_file_changes",
]
