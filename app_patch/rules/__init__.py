"""Domain rules the migration revisions in versions/ use.

Pure (no database, no I/O), except :mod:`.gridfs_files`, which reads GridFS through the
database it is given for the few uploads the revision's streams cannot pair.
"""

from app_patch.rules.file_fields import (
    SNIFF_BYTES,
    gridfs_oid,
    message_file_changes,
    normalise_file_ids,
    upload_file_changes,
)
from app_patch.rules.gridfs_files import (
    first_chunk_facts,
    gridfs_file_facts,
    is_canonical_file_id,
    read_file_head,
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
    "first_chunk_facts",
    "gridfs_file_facts",
    "gridfs_oid",
    "is_canonical_file_id",
    "link_group",
    "link_session",
    "message_file_changes",
    "normalise_file_ids",
    "read_file_head",
    "upload_file_changes",
]
