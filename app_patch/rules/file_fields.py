"""File-field rules of the image-rendering revisions: a message's file fields, an upload's file facts.

Pure (no database, no I/O): decided from documents already read. The revisions stream the
data and call these; the tests call them directly on hand-made cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import ObjectId

from app_patch.sniff import OCTET, is_image_mime

#: Bytes the sniffer wants to see (sniff.py examines up to 8 KiB; >= 4 KiB when available).
SNIFF_BYTES = 8192


# --------------------------------------------------------------------------- messages
def normalise_file_ids(value: Any) -> list[str]:
    """``file_ids`` as the contract wants it: hex strings, no blanks or repeats, order kept.

    ``None``/absent becomes ``[]``; ObjectIds become their hex string; a lone string is
    wrapped in a list; anything else in the list (numbers, nulls) is dropped.
    """
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, ObjectId):
            item = str(item)
        if isinstance(item, str) and item and item not in out:
            out.append(item)
    return out


def message_file_changes(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Fields to set so ``doc`` has a list ``file_ids`` and ``has_files == bool(file_ids)``.

    Empty when the message already complies (so a re-run changes nothing).
    """
    ids = normalise_file_ids(doc.get("file_ids"))
    changes: dict[str, Any] = {}
    current = doc.get("file_ids", _MISSING)
    if not (isinstance(current, list) and current == ids
            and all(type(i) is str for i in current)):
        changes["file_ids"] = ids
    has = doc.get("has_files", _MISSING)
    if not (type(has) is bool and has == bool(ids)):
        changes["has_files"] = bool(ids)
    return changes


# ---------------------------------------------------------------------------- uploads
def upload_file_changes(upload: Mapping[str, Any], length: int | None,
                        true_mime: str | None) -> dict[str, Any]:
    """Fields to set on a ``file_uploads`` row from its GridFS file.

    ``length`` is the GridFS ``length`` (None: the file is gone) and ``true_mime`` what
    :func:`app_patch.sniff.sniff_mime` says of its first bytes. A claim that differs from
    the true type is kept in ``claimed_mime_type``. A missing file is flagged and keeps its
    claimed type and size. Empty when the row already complies (a re-run changes nothing).
    """
    if length is None:
        want: dict[str, Any] = {"file_missing": True, "is_image": False}
    else:
        true_mime = true_mime or OCTET
        want = {"mime_type": true_mime, "is_image": is_image_mime(true_mime),
                "file_size": int(length), "file_missing": False}
        claimed = upload.get("mime_type", _MISSING)
        if (claimed is not _MISSING and claimed != true_mime
                and "claimed_mime_type" not in upload):
            want["claimed_mime_type"] = claimed
    return {k: v for k, v in want.items() if not _same(upload.get(k, _MISSING), v)}


def gridfs_oid(file_id: Any) -> ObjectId | None:
    """The GridFS ``_id`` a ``file_id`` names (a 24-hex string, either case), else None."""
    if isinstance(file_id, ObjectId):
        return file_id
    if isinstance(file_id, str) and ObjectId.is_valid(file_id):
        return ObjectId(file_id)
    return None


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _same(current: Any, wanted: Any) -> bool:
    """Equal and of the same kind (True is not 1, 1.0 is not 1 for a size)."""
    if current is _MISSING:
        return False
    if isinstance(wanted, bool) or isinstance(current, bool):
        return type(current) is type(wanted) and current == wanted
    if isinstance(wanted, int):
        return isinstance(current, int) and current == wanted
    return type(current) is type(wanted) and current == wanted
