"""The server's sort order on the client, to check streams the server sorted."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from mongrate.errors import OrderError

_NUMBER = (int, float, Int64, Decimal128)
_EPOCH = datetime(1970, 1, 1)


def bson_order_key(value: Any) -> tuple:
    """A key that orders values the way the server sorts them (MongoDB's BSON type order:
    null < numbers < strings < objects < arrays < binary < ObjectId < bool < date <
    timestamp), values of one type compared exactly as the server compares them.

    Types outside that list sort after dates by their repr; a merge only needs a consistent
    total order for them.
    """
    if value is None:
        return (1,)
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, _NUMBER):
        # compared as they are (Python compares int, float and Decimal exactly: a float
        # would merge Int64 values past 2**53); NaN sorts below every number
        if isinstance(value, Decimal128):
            number = value.to_decimal()
            nan = number.is_nan()
        else:
            number, nan = value, value != value
        return (2, 0) if nan else (2, 1, number)
    if isinstance(value, str):
        return (3, value.encode("utf-8"))
    if isinstance(value, Mapping):
        # element by element: the value's type first, then the field name, then the value
        elems = ((k, bson_order_key(v)) for k, v in value.items())
        return (4, tuple((key[0], k, key) for k, key in elems))
    if isinstance(value, list | tuple):
        return (5, tuple(bson_order_key(v) for v in value))
    if isinstance(value, bytes):
        return (6, len(value), getattr(value, "subtype", 0), value)
    if isinstance(value, ObjectId):
        return (7, value.binary)
    if isinstance(value, datetime):
        naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        return (9, (naive - _EPOCH) // timedelta(milliseconds=1))
    if isinstance(value, DatetimeMS):
        return (9, int(value))
    if isinstance(value, Timestamp):
        return (10, value.time, value.inc)
    return (20, type(value).__name__, repr(value))


def update_field_key(name: str) -> tuple:
    """A sort key ordering field names the way MongoDB 5.0+ applies an update's fields and
    appends the new ones (``pathsupport::cmpPathsAndArrayIndexes``): plain numbers (ASCII
    digits, no leading zero) by length, then digit by digit; anything else bytewise. That
    comparator is a total order: names below ``"0"`` bytewise, then ``"0"``, then
    zero-padded names, then the other numbers, then names above ``"9"``.
    """
    raw = name.encode("utf-8", "surrogateescape")
    if not raw or raw[:1] < b"0":
        return (0, 0, raw)
    if raw[:1] > b"9":
        return (2, 0, raw)
    if raw[:1] == b"0":  # "0" itself, or a zero-padded name: bytewise just above "0"
        return (1, 1, raw)
    return (1, len(raw), raw)


def in_server_order(docs: Iterable[Mapping[str, Any]], field: str,
                    label: str) -> Iterator[Mapping[str, Any]]:
    """Pass documents through, failing if the server's order of ``field`` disagrees with
    mongrate's (a merge join would silently pair the wrong documents otherwise)."""
    last = None
    for doc in docs:
        key = bson_order_key(doc.get(field))
        if last is not None and key < last:
            raise OrderError(f"{label}: the server's order of {field} differs from "
                             "mongrate's; stopped before anything was swapped", collection=label)
        last = key
        yield doc
