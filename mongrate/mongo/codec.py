"""How documents are read and written when every byte must survive the trip."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database
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


#: What BSON bytes may come as: pymongo 4.18+ gives raw documents of 4 KB or more as a
#: read-only ``memoryview`` into the reply buffer, older ones always as ``bytes``.
Buffer = bytes | bytearray | memoryview


def raw_bytes(doc: RawBSONDocument | Buffer) -> bytes:
    """The BSON of a raw document as ``bytes``, copied only if it is a view. Done once per
    document where it enters the engine: ``bytes`` has ``index``/``decode``, compares and
    hashes by value, does not pin the whole reply buffer, and is the only buffer pymongo
    4.6 encodes inside another document."""
    raw = doc.raw if isinstance(doc, RawBSONDocument) else doc
    return raw if type(raw) is bytes else bytes(raw)


def owned(doc: RawBSONDocument) -> RawBSONDocument:
    """``doc`` itself if its ``raw`` is ``bytes``, else the same document over a copy."""
    raw = doc.raw
    return doc if type(raw) is bytes else RawBSONDocument(bytes(raw), RAW)


def decode(raw: RawBSONDocument | Buffer) -> dict[str, Any]:
    """A raw document as a plain dict, every value exactly as stored."""
    return bson.decode(raw.raw if isinstance(raw, RawBSONDocument) else raw, EXACT)


def encode(doc: Mapping[str, Any]) -> RawBSONDocument:
    """A dict as a raw document (what :func:`decode` gave back encodes to the same bytes)."""
    return RawBSONDocument(bson.encode(doc, codec_options=EXACT), RAW)


def exact_dates(db: Database) -> Database:
    """``db`` decoding dates outside Python's range as ``DatetimeMS`` (valid BSON, which
    pymongo's default refuses to decode and ``DATETIME_CLAMP`` would move), its other
    options kept. The engine reads and filters through it, whatever the caller's client."""
    opts = db.codec_options
    if opts.datetime_conversion in (DatetimeConversion.DATETIME_AUTO,
                                    DatetimeConversion.DATETIME_MS):
        return db
    return db.with_options(codec_options=opts.with_options(
        datetime_conversion=DatetimeConversion.DATETIME_AUTO))


def only_duplicate_key_errors(details: Mapping[str, Any]) -> bool:
    """True if every write error of a BulkWriteError's ``details`` is a duplicate key
    (the record already exists: the first one written stands)."""
    return all(e.get("code") == DUPLICATE_KEY for e in details.get("writeErrors", ()))


def utcnow() -> datetime:
    """Naive UTC with millisecond precision: what BSON dates hold, so values round-trip."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
