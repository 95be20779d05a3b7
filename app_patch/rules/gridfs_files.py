"""What an upload's GridFS file says of itself: its length and the type its first bytes sniff as.

The schema revision streams uploads beside ``fs.files`` and each file's first chunk, paired
by ``file_id``; these rules turn what was streamed into facts. The one module of rules/ that
reads the database (the one it is given, e.g. ``op.db``), and only for the rare uploads the
streams cannot pair: a legacy ``file_id`` shape (upper-case hex, an ObjectId) is looked up
by itself, and a first chunk shorter than the sniffer wants (a tiny ``chunkSize``) is read
on into the next chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo.database import Database

from app_patch.rules.file_fields import SNIFF_BYTES, gridfs_oid
from app_patch.sniff import sniff_mime


def first_chunk_facts(chunk: Mapping[str, Any]) -> dict[str, Any]:
    """What a file's first chunk says: its sniffed type (``mime``) and how many bytes it
    held (``head``). Pure: the revision maps each streamed ``fs.chunks`` row through it."""
    data = bytes(chunk.get("data") or b"")
    return {"mime": sniff_mime(data[:SNIFF_BYTES]), "head": len(data)}


def is_canonical_file_id(file_id: Any) -> bool:
    """Whether ``file_id`` is the lower-case hex string the streams pair ``fs.files`` by."""
    return isinstance(file_id, str) and file_id == file_id.lower() and bool(gridfs_oid(file_id))


def gridfs_file_facts(db: Database, file_id: Any, files: Sequence[Mapping[str, Any]],
                      heads: Sequence[Mapping[str, Any]]) -> tuple[int | None, str | None]:
    """(GridFS length, sniffed type) of an upload's file; (None, None) if it is gone.

    ``files`` and ``heads`` are what the streams paired with ``file_id``: its ``fs.files``
    row (``length``) and its first chunk through :func:`first_chunk_facts`.
    """
    if not is_canonical_file_id(file_id):  # rare legacy shapes: looked up one by one
        oid = gridfs_oid(file_id)
        found = db["fs.files"].find_one({"_id": oid}, {"length": 1}) if oid else None
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
    return length, sniff_mime(read_file_head(db, files[0]["_id"]))


def read_file_head(db: Database, file_oid: Any) -> bytes:
    """The first :data:`SNIFF_BYTES` of a GridFS file, read chunk by chunk in order."""
    head = b""
    for chunk in db["fs.chunks"].find({"files_id": file_oid}).sort("n", 1):
        head += bytes(chunk["data"])
        if len(head) >= SNIFF_BYTES:
            break
    return head[:SNIFF_BYTES]
