"""Documents as BSON elements: what a change did to a document, byte for byte.

A revision's change is computed on a decoded dict, but what is recorded (the prior
values) and what is written for fields the change did not touch are the original
element bytes. So every BSON value the server stores survives a round trip exactly,
including the ones Python cannot decode to themselves (dates past year 9999 come back as
``DatetimeMS`` and re-encode fine; deprecated types such as symbol or undefined would not).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from mongrate.mongo.codec import EXACT, RAW, Buffer, raw_bytes
from mongrate.mongo.order import update_field_key

_INT32 = struct.Struct("<i")
#: value sizes of fixed-size BSON types
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8,
          0x12: 8, 0x13: 16, 0xFF: 0, 0x7F: 0}
_STRING_LIKE = {0x02, 0x0D, 0x0E}  # string, JavaScript code, symbol
_EMBEDDED = {0x03, 0x04, 0x0F}  # document, array, code with scope: int32 total length
#: Types whose stored bytes may differ from what their decoded value encodes to (documents
#: and arrays may hold such values; regex flags in another order; deprecated types).
_MAY_NOT_ROUND_TRIP = {0x03, 0x04, 0x06, 0x0B, 0x0C, 0x0E, 0x0F}


def elements(raw: Buffer) -> dict[str, bytes]:
    """The top-level elements of a BSON document, in order: ``{name: element bytes}``
    (type byte, name and value, exactly as stored)."""
    raw = raw_bytes(raw)  # one copy of a view, not one per element
    out: dict[str, bytes] = {}
    unpack, index, fixed = _INT32.unpack_from, raw.index, _FIXED
    end = len(raw) - 1
    pos = 4
    while pos < end:
        kind = raw[pos]
        name_end = index(b"\x00", pos + 1)
        at = name_end + 1
        if kind in fixed:
            nxt = at + fixed[kind]
        elif kind in _STRING_LIKE:
            nxt = at + 4 + unpack(raw, at)[0]
        elif kind in _EMBEDDED:
            nxt = at + unpack(raw, at)[0]
        elif kind == 0x05:  # binary: length, subtype, bytes
            nxt = at + 5 + unpack(raw, at)[0]
        elif kind == 0x0B:  # regex: two cstrings
            nxt = index(b"\x00", index(b"\x00", at) + 1) + 1
        elif kind == 0x0C:  # DBPointer: string then ObjectId
            nxt = at + 4 + unpack(raw, at)[0] + 12
        else:
            raise ValueError(f"unknown BSON type 0x{kind:02x} at byte {pos}")
        out[raw[pos + 1:name_end].decode("utf-8", "surrogateescape")] = raw[pos:nxt]
        pos = nxt
    return out


def document(elems: Iterable[bytes]) -> bytes:
    """A BSON document made of these element bytes, in this order."""
    body = b"".join(elems)
    return _INT32.pack(len(body) + 5) + body + b"\x00"


def renamed(element: Buffer, name: str) -> bytes:
    """``element`` under another field name (same type and value bytes)."""
    element = raw_bytes(element)
    old_end = element.index(b"\x00", 1)
    return element[:1] + name.encode("utf-8", "surrogateescape") + b"\x00" + element[old_end + 1:]


@dataclass
class Change:
    """What a change did to one document."""

    new: bytes                  #: the document as it is to be stored
    set: dict[str, bytes]       #: changed or added fields: their new element bytes
    removed: list[str]          #: fields the change removed
    prior: dict[str, bytes]     #: the original elements of changed and removed fields
    absent: list[str]           #: changed fields that did not exist before
    keys: list[str] | None      #: the original field order, when fields were removed
    id_element: bytes = b""     #: the document's ``_id`` element

    def update_document(self) -> dict[str, Any]:
        """The ``$set``/``$unset`` update that makes the change in place (exact bytes)."""
        update: dict[str, Any] = {}
        if self.set:
            update["$set"] = RawBSONDocument(document(self.set.values()), RAW)
        if self.removed:
            update["$unset"] = {f: "" for f in self.removed}
        return update


def _same_value(old: bytes, new: bytes) -> bool:
    """Do two elements of one name differ only in encoding (a value that does not survive
    decoding, such as a regex's flag order, re-encoded)?"""
    if old[0] not in _MAY_NOT_ROUND_TRIP:
        return False
    doc = document([old])
    return elements(bson.encode(bson.decode(doc, EXACT), codec_options=EXACT)) == \
        elements(document([new]))


def diff(before: Buffer, after: Mapping[str, Any]) -> Change | None:
    """How ``after`` (a dict, e.g. a decoded copy of ``before`` that a revision changed)
    differs from the stored document ``before``; None if it does not.

    Fields whose value did not change keep their original bytes. Existing fields keep
    their place; added fields are appended the way MongoDB's ``$set`` appends them, so the
    result is the same whether it is written in place or by a rewrite.
    """
    before = raw_bytes(before)
    after_raw = bson.encode(after, codec_options=EXACT)
    if after_raw == before:
        return None
    old = elements(before)
    new = elements(after_raw)
    changed = [n for n, e in new.items()
               if (o := old.get(n)) != e and (o is None or not _same_value(o, e))]
    removed = [n for n in old if n not in new]
    if not changed and not removed:
        return None
    if "_id" in changed or "_id" in removed:
        raise ValueError("a change cannot alter or remove _id")
    unchanged = set(changed)
    out = [old[n] if n not in unchanged else new[n] for n in old if n in new]
    added = sorted((n for n in changed if n not in old), key=update_field_key)  # as $set appends them
    out += [new[n] for n in added]
    return Change(
        new=document(out),
        set={n: new[n] for n in changed},
        removed=removed,
        prior={n: old[n] for n in (*changed, *removed) if n in old},
        absent=[n for n in changed if n not in old],
        keys=list(old) if removed else None,
        id_element=old["_id"],
    )


def restored(current: Buffer, prior: Mapping[str, bytes], absent: Sequence[str],
             keys: Sequence[str] | None) -> bytes:
    """``current`` with recorded fields put back: ``prior`` elements replace (or re-add)
    their fields, ``absent`` fields are removed; re-added fields go back to their place in
    ``keys`` (the original order) where it is known, else to the end."""
    cur = elements(current)
    for name in absent:
        cur.pop(name, None)
    out: dict[str, bytes] = {}
    for name, elem in cur.items():
        out[name] = prior.get(name, elem)
    missing = [n for n in prior if n not in out]
    if not missing:
        return document(out.values())
    if keys:
        # walk the original order: each re-added field goes right after the field that
        # preceded it originally (fields added since keep their place)
        order = list(out)
        for name in sorted(missing, key=lambda n: keys.index(n) if n in keys else len(keys)):
            at = 0
            if name in keys:
                for earlier in reversed(keys[:keys.index(name)]):
                    if earlier in order:
                        at = order.index(earlier) + 1
                        break
            else:
                at = len(order)
            order.insert(at, name)
        return document(out[n] if n in out else prior[n] for n in order)
    return document([*out.values(), *(prior[n] for n in missing)])
