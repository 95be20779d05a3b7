"""How documents are read and written when every byte must survive the trip."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

#: Documents as the server sent them: nothing decoded, nothing re-encoded.
RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=False,
                   datetime_conversion=DatetimeConversion.DATETIME_AUTO)
#: Decoding for documents that are changed: every BSON value comes back as it was stored
#: (dates outside Python's range as DatetimeMS, int64 as Int64, naive UTC datetimes).
EXACT = CodecOptions(document_class=dict, tz_aware=False,
                     datetime_conversion=DatetimeConversion.DATETIME_AUTO)

#: Server error codes mongrate tells apart.
DUPLICATE_KEY = 11000
INVALID_NAMESPACE = 73  # FerretDB v1 cannot rename a collection whose name holds a dot
NOT_IMPLEMENTED = 238  # FerretDB v1: dropTarget, $expr...
COMMAND_NOT_FOUND = 59  # e.g. "hello" on MongoDB < 4.4.2 and mongo-java-server
#: For what decides a run's next step (heads, log, lock, undo): on a replica set or a
#: sharded cluster it is never written to, or read from, one member alone.
MAJORITY = WriteConcern("majority")
MAJORITY_READ = ReadConcern("majority")


def id_key(_id: Any) -> bytes:
    """A hashable, type-exact key for any BSON ``_id`` (subdocuments and arrays included;
    1 and 1.0 and True stay distinct, as they are in MongoDB)."""
    return bson.encode({"i": _id})


def decode(raw: RawBSONDocument | bytes) -> dict[str, Any]:
    """A raw document as a plain dict, every value exactly as stored."""
    return bson.decode(raw.raw if isinstance(raw, RawBSONDocument) else raw, EXACT)


def encode(doc: Mapping[str, Any]) -> RawBSONDocument:
    """A dict as a raw document (what :func:`decode` gave back encodes to the same bytes)."""
    return RawBSONDocument(bson.encode(doc, codec_options=EXACT), RAW)


def only_duplicate_key_errors(details: Mapping[str, Any]) -> bool:
    """True if every write error of a BulkWriteError's ``details`` is a duplicate key
    (the record already exists: the first one written stands)."""
    return all(e.get("code") == DUPLICATE_KEY for e in details.get("writeErrors", ()))


def utcnow() -> datetime:
    """Naive UTC with millisecond precision: what BSON dates hold, so values round-trip."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
