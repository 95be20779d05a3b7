"""Writes conditional on what was read, for collections the application writes meanwhile.

A change computed from a document read seconds earlier is sent as an update whose filter
is the ``_id`` plus every field it was computed from (or overwrites), each equal to the
bytes read. A document the application changed in between is not matched, so the stale
change never lands: the caller reads it again and computes its change again.

An update command reports how many statements matched, not which. When fewer matched than
were sent, the documents are read again (one ``$in`` query) and each one's state says
whether the write landed: a path the change alters that now holds the changed value (and
none that still holds the read one) means it did. Where the application has since written
those very paths too, the count of misses decides; what it cannot decide is ``unsure`` and
is left as the application wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from pymongo import ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, OperationFailure

from mongrate.mongo.codec import NOT_IMPLEMENTED, RAW, raw_bytes
from mongrate.mongo.pipeline import chunked
from mongrate.mongo.rawdoc import Change, document, elements, renamed

_EMBEDDED_DOC = 0x03
_NULL = 0x0A


@dataclass
class Pending:
    """One document's conditional write."""

    base: bytes                 #: the document as read
    change: Change              #: what the write does to ``base`` (``change.new`` after it)
    update: Mapping[str, Any] | None = None  #: the update sent; default ``$set``/``$unset``
    on: Iterable[str] | None = None  #: fields the condition holds; default all of ``base``
    extra: Mapping[str, Any] | None = None  #: a further filter the document must match
    replace: bool = False       #: replace the document by ``change.new`` (the condition
    #: then holds every field)
    tag: Any = None             #: the caller's
    #: 0: the condition as asked; 1: only the fields the change writes; 2: ``_id`` alone.
    #: Raised for a document found exactly as read after a miss: the server could not
    #: match one of its values by equality (e.g. mongo-java-server and a regex)
    relax: int = 0

    @property
    def id_element(self) -> bytes:
        return self.change.id_element or elements(self.base)["_id"]

    def doc_id(self) -> Any:
        return bson.decode(document([renamed(self.id_element, "i")]))["i"]

    def statement(self) -> UpdateOne | ReplaceOne:
        on = self.on
        if self.relax == 1:
            on = [*self.change.set, *self.change.removed]
        elif self.relax >= 2:
            on = []
        cond = condition(self.base, self.change, on, self.extra, absent=self.relax < 2)
        if self.replace and self.relax == 0:
            # a replacement would drop a field the application added since the read: only
            # where the server can compare the whole document ($expr, MongoDB); elsewhere
            # the fields go back by $set/$unset (a re-added field then comes last)
            whole = bson.encode({"$expr": {"$eq": [
                "$$ROOT", {"$literal": RawBSONDocument(self.base, RAW)}]}})[4:-1]
            cond = RawBSONDocument(document([*elements(cond.raw).values(), whole]), RAW)
            return ReplaceOne(cond, RawBSONDocument(self.change.new, RAW))
        return UpdateOne(cond, self.update or self.change.update_document())


@dataclass
class Outcome:
    """What a round of conditional writes did."""

    applied: list[Pending] = field(default_factory=list)
    #: not written: the application changed the document first (with its current bytes)
    missed: list[tuple[Pending, bytes]] = field(default_factory=list)
    #: deleted by the application (before or after the write)
    gone: list[Pending] = field(default_factory=list)
    #: written to by the application around the write, which may or may not have landed
    unsure: list[tuple[Pending, bytes]] = field(default_factory=list)


def _field_condition(name: str, element: bytes | None) -> bytes | None:
    """``name: {$eq: value}`` (or ``$exists: false``) as element bytes; None where the
    query language cannot name the field (dots, a leading ``$``)."""
    if "." in name or name.startswith("$") or "\x00" in name:
        return None
    if element is None:
        spec = bson.encode({"$exists": False})
    elif element[0] == _NULL:  # {$eq: null} would also match a missing field
        spec = document([renamed(element, "$eq"), bson.encode({"$exists": True})[4:-1]])
    else:
        spec = document([renamed(element, "$eq")])
    return bytes([_EMBEDDED_DOC]) + name.encode("utf-8", "surrogateescape") + b"\x00" + spec


def condition(base: bytes, change: Change, on: Iterable[str] | None = None,
              extra: Mapping[str, Any] | None = None, *, absent: bool = True
              ) -> RawBSONDocument:
    """The filter of a write of ``change`` to ``base``: its ``_id``, the fields ``on``
    (default: every field of ``base``) as read, the fields the change adds still absent."""
    elems = elements(base)
    names = list(elems) if on is None else list(on)
    if absent:
        names += [n for n in change.absent if n not in names]
    parts = [elems["_id"]]
    for name in names:
        if name == "_id":
            continue
        cond = _field_condition(name, elems.get(name))
        if cond is not None:
            parts.append(cond)
    if extra:
        parts.append(bson.encode({"$and": [extra]})[4:-1])
    return RawBSONDocument(document(parts), RAW)


def _evidence(before: bytes | None, after: bytes | None, now: bytes | None) -> tuple[bool, bool]:
    """(landed, not landed): does ``now`` hold, on a path the change alters, the changed
    value or the value read? Embedded documents are compared path by path, so a sibling
    field the application wrote does not hide which."""
    if before == after:
        return False, False
    if now == after:
        return True, False
    if now == before:
        return False, True
    if (before is not None and after is not None and now is not None
            and before[0] == after[0] == now[0] == _EMBEDDED_DOC):
        b, a, n = (elements(_value(e)) for e in (before, after, now))
        landed = missed = False
        for name in {**b, **a}:
            sub = _evidence(b.get(name), a.get(name), n.get(name))
            landed, missed = landed or sub[0], missed or sub[1]
        return landed, missed
    return False, False


def _value(element: bytes) -> bytes:
    return element[element.index(b"\x00", 1) + 1:]


def _no_expr(exc: OperationFailure) -> bool:
    """Did the server refuse ``$expr`` (FerretDB 1.x: not implemented)?"""
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or []
        return bool(errors) and all(_no_expr_text(e.get("code"), e.get("errmsg", ""))
                                    for e in errors)
    return _no_expr_text(exc.code, str(exc))


def _no_expr_text(code: int | None, text: str) -> bool:
    return code == NOT_IMPLEMENTED or "$expr" in text or "not implemented" in text.lower()


def landed(p: Pending, current: bytes) -> bool | None:
    """Did the write of ``p`` land on the document now ``current``? None: cannot tell."""
    before, after, now = elements(p.base), elements(p.change.new), elements(current)
    yes = no = False
    for name in (*p.change.set, *p.change.removed):
        sub = _evidence(before.get(name), after.get(name), now.get(name))
        yes, no = yes or sub[0], no or sub[1]
    if yes != no:
        return yes
    return None


def write_if_unchanged(coll, items: list[Pending], limit: int) -> Outcome:
    """Send ``items`` as conditional updates (commands of at most ``limit`` statements,
    unordered) and sort out which landed (see the module docstring). A document missed
    but found exactly as read is sent again with a looser condition (``Pending.relax``)."""
    out = Outcome()
    while items:
        round_ = _write_round(coll, items, limit)
        out.applied += round_.applied
        out.gone += round_.gone
        out.unsure += round_.unsure
        items = []
        for p, cur in round_.missed:
            if cur == p.base and p.relax < 2:
                p.relax += 1
                items.append(p)
            else:
                out.missed.append((p, cur))
    return out


def _write_round(coll, items: list[Pending], limit: int) -> Outcome:
    out = Outcome()
    if not items:
        return out
    matched = 0
    try:
        for part in chunked([p.statement() for p in items], limit):
            matched += coll.bulk_write(part, ordered=False).matched_count
    except OperationFailure as exc:
        whole = [p for p in items if p.replace and p.relax == 0]
        if not whole or not _no_expr(exc):
            raise
        for p in whole:  # this server has no $expr: the $set form, for every statement
            p.relax = 1
        return _write_round(coll, items, limit)
    if matched >= len(items):
        out.applied = list(items)
        return out
    raw = coll.with_options(codec_options=RAW)
    current = {}
    for part in chunked(items, limit):
        ids = [p.doc_id() for p in part]
        for doc in raw.find({"_id": {"$in": ids}}):
            body = raw_bytes(doc)
            current[elements(body)["_id"]] = body
    undecided: list[tuple[Pending, bytes]] = []
    gone: list[Pending] = []
    for p in items:
        cur = current.get(p.id_element)
        if cur is None:
            gone.append(p)
            continue
        verdict = landed(p, cur) if cur != p.base else False
        if verdict is True:
            out.applied.append(p)
        elif verdict is False:
            out.missed.append((p, cur))
        else:
            undecided.append((p, cur))
    # misses not explained by the verdicts lie among the undecided and the gone
    left = len(items) - matched - len(out.missed)
    out.gone = gone
    if left <= 0:
        out.applied += [p for p, _ in undecided]
    elif left >= len(undecided) + len(gone):
        out.missed += undecided
    else:
        out.unsure = undecided
    return out


__all__ = ["Outcome", "Pending", "condition", "landed", "write_if_unchanged"]
