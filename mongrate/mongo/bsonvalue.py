"""BSON types, ordering and numeric arithmetic of decoded values, as the MongoDB server has them.

Values are what pymongo decodes with ``document_class=dict``: int (int32, or int64 when out of
int32 range), ``Int64``, float, ``Decimal128``, str, ``Code``, Mapping, list, bytes/``Binary``,
``ObjectId``, datetime/``DatetimeMS``, ``Timestamp``, ``Regex``, None, ``MinKey``/``MaxKey``.
"""

from __future__ import annotations

import datetime
import decimal
import re
import struct
from collections.abc import Mapping

from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128, create_decimal128_context
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Canonical type ranks of the server's BSON comparison (canonicalizeBSONType).
_RANK = {
    "minkey": -1, "null": 5, "int": 10, "long": 10, "double": 10, "decimal": 10,
    "string": 15, "object": 20, "array": 25, "bindata": 30, "oid": 35, "bool": 40,
    "date": 45, "timestamp": 47, "regex": 50, "code": 60, "codewscope": 65, "maxkey": 127,
}
NUMERIC = frozenset({"int", "long", "double", "decimal"})

_DEC_CTX = create_decimal128_context()  # 34 digits, half-even, decimal128 exponent range


class UnsupportedValue(Exception):
    """A value whose server-side encoding or behaviour this module does not model."""


def _int_kind(v: int) -> str:
    if INT32_MIN <= v <= INT32_MAX:
        return "int"
    if INT64_MIN <= v <= INT64_MAX:
        return "long"
    raise UnsupportedValue(f"integer {v} does not fit in a BSON int64")


_SIMPLE = {
    bool: "bool", float: "double", str: "string", type(None): "null", dict: "object",
    list: "array", tuple: "array", bytes: "bindata", Binary: "bindata", ObjectId: "oid",
    datetime.datetime: "date", DatetimeMS: "date", Timestamp: "timestamp", Regex: "regex",
    re.Pattern: "regex", MinKey: "minkey", MaxKey: "maxkey", Decimal128: "decimal",
    Int64: "long", DBRef: "object",
}


def kind(v: object) -> str:
    """The BSON type name pymongo would encode ``v`` as."""
    t = type(v)
    k = _SIMPLE.get(t)
    if k is not None:
        return k
    if t is int:
        return _int_kind(v)  # type: ignore[arg-type]
    # Subclasses: order matters (bool < int, Code < str, Int64 < int).
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, Int64):
        return "long"
    if isinstance(v, int):
        return _int_kind(v)
    if isinstance(v, Code):
        return "code" if v.scope is None else "codewscope"
    if isinstance(v, str):
        return "string"
    if isinstance(v, float):
        return "double"
    if isinstance(v, Mapping):
        return "object"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, bytes):
        return "bindata"
    if isinstance(v, datetime.datetime):
        return "date"
    raise UnsupportedValue(f"values of type {t.__name__} are not modelled")


def is_number(v: object) -> bool:
    return type(v) is not bool and isinstance(v, (int, float, Decimal128))


def _items(v: object):
    if isinstance(v, DBRef):
        return list(v.as_doc().items())
    return list(v.items())  # type: ignore[attr-defined]


def date_ms(v: object) -> int:
    return int(v) if isinstance(v, DatetimeMS) else int(DatetimeMS(v))  # type: ignore[arg-type]


def regex_parts(v: object) -> tuple[str, str]:
    """(pattern, flags) as pymongo encodes them."""
    flags = v.flags  # type: ignore[attr-defined]
    if isinstance(flags, str):
        flags = Regex(v.pattern, flags).flags  # type: ignore[attr-defined]
    letters = "".join(c for c, bit in (("i", re.I), ("l", re.L), ("m", re.M), ("s", re.S),
                                       ("u", re.U), ("x", re.X)) if flags & bit)
    pattern = v.pattern  # type: ignore[attr-defined]
    return (pattern.decode() if isinstance(pattern, bytes) else pattern), letters


def _bindata(v: bytes) -> tuple[int, int, bytes]:
    return len(v), (v.subtype if isinstance(v, Binary) else 0), bytes(v)


def _num(v: object):
    """A Python number comparing exactly like the server, or None for NaN."""
    if isinstance(v, Decimal128):
        d = v.to_decimal()
        return None if d.is_nan() else d
    if isinstance(v, float) and v != v:
        return None
    return v


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def compare(a: object, b: object) -> int:
    """The server's BSON comparison of two values (no collation): -1, 0 or 1."""
    ka, kb = kind(a), kind(b)
    ra, rb = _RANK[ka], _RANK[kb]
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == 10:
        x, y = _num(a), _num(b)
        if x is None or y is None:  # NaN sorts below every number and equals NaN
            return (y is None) - (x is None)
        return (x > y) - (x < y)
    if ra in (15, 60):
        return (a > b) - (a < b)  # type: ignore[operator]  # code points order like UTF-8 bytes
    if ra == 20:
        return _compare_seq(_items(a), _items(b), True)
    if ra == 25:
        return _compare_seq(list(enumerate(a)), list(enumerate(b)), False)  # type: ignore[arg-type]
    if ra == 30:
        x, y = _bindata(a), _bindata(b)  # type: ignore[arg-type]
    elif ra == 35:
        x, y = a.binary, b.binary  # type: ignore[attr-defined]
    elif ra == 40:
        x, y = bool(a), bool(b)
    elif ra == 45:
        x, y = date_ms(a), date_ms(b)
    elif ra == 47:
        x, y = (a.time, a.inc), (b.time, b.inc)  # type: ignore[attr-defined]
    elif ra == 50:
        x, y = regex_parts(a), regex_parts(b)
    elif ra == 65:
        c = (str(a) > str(b)) - (str(a) < str(b))
        return c or compare(a.scope, b.scope)  # type: ignore[attr-defined]
    else:  # null, minkey, maxkey
        return 0
    return (x > y) - (x < y)


def _compare_seq(xs: list, ys: list, names: bool) -> int:
    for (kx, vx), (ky, vy) in zip(xs, ys, strict=False):
        rx, ry = _RANK[kind(vx)], _RANK[kind(vy)]
        if rx != ry:  # type first, then field name, then value (BSONElement::woCompare)
            return -1 if rx < ry else 1
        if names and kx != ky:
            return -1 if kx < ky else 1
        c = compare(vx, vy)
        if c:
            return c
    return _sign(len(xs) - len(ys))


def identical(a: object, b: object) -> bool:
    """True when ``a`` and ``b`` encode to the same BSON bytes."""
    ka, kb = kind(a), kind(b)
    if ka != kb:
        return False
    if ka == "double":
        return struct.pack("<d", a) == struct.pack("<d", b)
    if ka == "decimal":
        return a.bid == b.bid  # type: ignore[attr-defined]
    if ka == "object":
        xs, ys = _items(a), _items(b)
        return len(xs) == len(ys) and all(
            kx == ky and identical(vx, vy) for (kx, vx), (ky, vy) in zip(xs, ys, strict=False))
    if ka == "array":
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=False))  # type: ignore[arg-type]
    if ka == "bindata":
        return _bindata(a) == _bindata(b)  # type: ignore[arg-type]
    if ka == "date":
        return date_ms(a) == date_ms(b)
    if ka == "regex":
        return regex_parts(a) == regex_parts(b)
    if ka == "codewscope":
        return str(a) == str(b) and identical(a.scope, b.scope)  # type: ignore[attr-defined]
    return a == b


def same_number(a: object, b: object) -> bool:
    """The server's ``SafeNum::isIdentical``, by which ``$inc``, ``$mul`` and ``$bit``
    decide a no-op: the same numeric type and an equal value (doubles by ``==``, so -0.0
    is 0.0 and NaN is never identical; Decimal128 by value, so 1.0 is 1.00)."""
    ka, kb = kind(a), kind(b)
    if ka != kb:
        return False
    if ka == "decimal":
        x, y = a.to_decimal(), b.to_decimal()  # type: ignore[attr-defined]
        return not (x.is_nan() or y.is_nan()) and x == y
    return a == b  # int, long, double: == is the server's comparison


def clone(v: object, depth: int = 0) -> tuple[object, int]:
    """A private copy of an update value (containers copied) and its nesting depth.

    Raises UnsupportedValue for what the server might store differently or reject:
    ``$``-prefixed or NUL-containing field names (storage validation, DBRefs), unknown types.
    """
    k = kind(v)
    if k == "object":
        if isinstance(v, DBRef):
            raise UnsupportedValue("DBRef values are not modelled")
        out, deepest = {}, depth + 1
        for key, item in v.items():  # type: ignore[attr-defined]
            if not isinstance(key, str) or key.startswith("$") or "\0" in key:
                raise UnsupportedValue(f"field name {key!r} is not modelled")
            out[key], d = clone(item, depth + 1)
            deepest = max(deepest, d)
        return out, deepest
    if k == "array":
        out_list, deepest = [], depth + 1
        for item in v:  # type: ignore[attr-defined]
            c, d = clone(item, depth + 1)
            out_list.append(c)
            deepest = max(deepest, d)
        return out_list, deepest
    if k == "codewscope":
        clone(v.scope, depth)  # type: ignore[attr-defined]
    return v, depth


def copy(v: object) -> object:
    """Copy the containers of an already checked value (see clone)."""
    if type(v) is dict:
        return {k: copy(x) for k, x in v.items()}
    if type(v) is list:
        return [copy(x) for x in v]
    return v


# -- arithmetic (the server's SafeNum) ----------------------------------------------------


class NumericOverflow(ArithmeticError):
    """int64 overflow: the server refuses the update."""


def _long(v: int) -> object:
    if not INT64_MIN <= v <= INT64_MAX:
        raise NumericOverflow
    return Int64(v)


def _decimal(v: object, k: str) -> decimal.Decimal:
    if k == "decimal":
        d = v.to_decimal()  # type: ignore[attr-defined]
        if d.is_nan():  # NaN payloads and signalling NaNs are not modelled
            raise UnsupportedValue("arithmetic on a Decimal128 NaN is not modelled")
        return d
    if k == "double":  # the server rounds doubles to 15 digits first; not modelled
        raise UnsupportedValue("arithmetic mixing Decimal128 and double is not modelled")
    return decimal.Decimal(int(v))  # type: ignore[call-overload]


def arith(op: str, lhs: object, rhs: object) -> object:
    """``lhs + rhs`` or ``lhs * rhs`` (op "add"/"mul") with the server's type promotion.

    int32 op int32 widens to int64 on overflow; int64 overflow raises NumericOverflow;
    any double gives a double; any Decimal128 gives a Decimal128.
    """
    kl, kr = kind(lhs), kind(rhs)
    if kl in ("int", "long") and kr in ("int", "long"):
        r = int(lhs) + int(rhs) if op == "add" else int(lhs) * int(rhs)  # type: ignore[call-overload]
        if kl == kr == "int" and INT32_MIN <= r <= INT32_MAX:
            return r
        return _long(r)
    if "decimal" in (kl, kr):
        x, y = _decimal(lhs, kl), _decimal(rhs, kr)
        r = _DEC_CTX.add(x, y) if op == "add" else _DEC_CTX.multiply(x, y)
        if r.is_nan():  # which NaN the server's decimal library produces is not modelled
            raise UnsupportedValue("a Decimal128 NaN result is not modelled")
        return Decimal128(r)
    x, y = float(lhs), float(rhs)  # type: ignore[arg-type]
    return x + y if op == "add" else x * y


def bitop(op: str, lhs: object, rhs: object) -> object:
    """Bitwise and/or/xor of int32/int64 values; int32 only when both are int32."""
    x, y = int(lhs), int(rhs)  # type: ignore[call-overload]
    r = x & y if op == "and" else x | y if op == "or" else x ^ y
    return r if kind(lhs) == kind(rhs) == "int" else Int64(r)


def integral(v: object) -> int | None:
    """The server's parseIntegerElementToLong: the exact integer value of a number, or None."""
    if not is_number(v):
        return None
    if isinstance(v, float):
        if v != v or v >= 2.0**63 or v < -(2.0**63) or v != int(v):
            return None
        return int(v)
    if isinstance(v, Decimal128):
        d = v.to_decimal()
        if not d.is_finite() or d != d.to_integral_value():
            return None
        n = int(d)
        return n if INT64_MIN <= n <= INT64_MAX else None
    return int(v)  # type: ignore[call-overload]
