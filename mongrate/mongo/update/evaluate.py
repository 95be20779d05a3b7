"""Apply a compiled update (the path tree :mod:`.parse` builds) to one document.

Every function mirrors a server class (UpdateObjectNode, UpdateArrayNode, the leaf nodes):
a node gets the current value at its path, or a Missing marker saying whether the path can
be created, and returns the new value, NOOP, or DELETE. Containers are copied on write, so
the document (a dict or a RawBSONDocument) is never mutated.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from functools import cmp_to_key

from bson.dbref import DBRef
from bson.timestamp import Timestamp

from mongrate.errors import UnsupportedUpdate, UpdateError
from mongrate.mongo import bsonvalue as bv

MAX_DEPTH = 100  # BSONDepth::getMaxDepthForUserStorage
_MAX_PADDING = 1_500_000  # pathsupport::kMaxPaddingAllowed


class Missing:
    """A path that does not exist; ``err`` says why it could not be created (None: it can)."""

    __slots__ = ("err",)

    def __init__(self, err: str | None):
        self.err = err


CREATABLE = Missing(None)
NOOP = object()
DELETE = object()


class Node:
    """Internal node: ``children`` by path part; ``is_array`` for ``$[]`` nodes."""

    __slots__ = ("children", "ordered", "is_array")

    def __init__(self, is_array: bool = False):
        self.children: dict[str, Node | Leaf] = {}
        self.ordered: list = []
        self.is_array = is_array


class Leaf:
    __slots__ = ("op", "parts", "arg", "extra")

    def __init__(self, op: str, parts: list[str], arg: object = None, extra: object = None):
        self.op, self.parts, self.arg, self.extra = op, parts, arg, extra


def show(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 120 else text[:117] + "..."


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


class Context:
    __slots__ = ("doc", "_now", "sources", "path")

    def __init__(self, doc: Mapping, now: datetime.datetime | None):
        self.doc = doc
        self._now = now
        self.sources: list = []
        self.path: list[str] = []

    def current_date(self, kind: str) -> object:
        """What $currentDate writes: the date (naive UTC, whole ms) or a Timestamp of it."""
        now = self._now if self._now is not None else datetime.datetime.now(datetime.UTC)
        if now.tzinfo is not None:
            now = now.astimezone(datetime.UTC).replace(tzinfo=None)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        self._now = now  # one instant for the whole document
        return now if kind == "date" else Timestamp(now, 1)

    def where(self) -> str:
        return ".".join(self.path)

    def doc_id(self) -> str:
        return f"_id: {show(self.doc.get('_id'))}"


def evaluate(root: Node, renames: list[list[str]], doc: Mapping,
             now: datetime.datetime | None) -> object:
    """``doc`` after the update whose tree is ``root`` (``renames``: each ``$rename``'s
    source path, by its leaves' index), or NOOP when nothing changes."""
    ctx = Context(doc, now)
    try:
        ctx.sources = [resolve_source(doc, parts) for parts in renames]
        return apply_object(root, doc, ctx, False, False, root=True)
    except bv.UnsupportedValue as exc:
        raise UnsupportedUpdate(str(exc)) from None


def resolve_source(doc: Mapping, parts: list[str]) -> object:
    """The value a $rename moves, or NOOP when its source is missing (findLongestPrefix)."""
    cur: object = doc
    through_array = False
    for i, part in enumerate(parts):
        if i:
            through_array = through_array or isinstance(cur, list)
        if isinstance(cur, DBRef):
            raise UnsupportedUpdate("paths through DBRef values are not modelled")
        if isinstance(cur, Mapping):
            if part not in cur:
                return NOOP
            cur = cur[part]
        elif isinstance(cur, list) and _digits(part):
            if int(part) >= len(cur):
                return NOOP
            cur = cur[int(part)]
        else:
            raise UpdateError(f"cannot use the part ({part} of {'.'.join(parts)}) to traverse "
                              f"the element ({{{parts[i - 1]}: {show(cur)}}})")
    if through_array:
        raise UpdateError(f"The source field cannot be an array element, '{'.'.join(parts)}' "
                          f"in doc with _id: {show(doc.get('_id'))} has an array field")
    return cur


def _index(name: str) -> int | None:
    """The array index a path part names, or None (``str::parseUnsignedBase10Integer``:
    ASCII digits only, leading zeros allowed, so "01" is index 1). Past 2**32 - 1 the
    server finds no element and pads up to it, which fails as any huge index does."""
    return int(name) if _digits(name) else None


def _apply(node: Node | Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    if type(node) is Leaf:
        return _LEAVES[node.op](node, cur, ctx, arr, uid)
    if node.is_array:  # type: ignore[union-attr]
        return _apply_all(node, cur, ctx, uid)  # type: ignore[arg-type]
    return apply_object(node, cur, ctx, arr, uid)  # type: ignore[arg-type]


def apply_object(node: Node, cur: object, ctx: Context, arr: bool, uid: bool,
                  root: bool = False) -> object:
    path = ctx.path
    if isinstance(cur, Missing):
        created = None
        for name, child in node.ordered:
            path.append(name)
            res = _apply(child, cur if created is None else CREATABLE, ctx, arr, uid)
            path.pop()
            if res is not NOOP:
                created = created if created is not None else {}
                created[name] = res
        return NOOP if created is None else created
    if isinstance(cur, DBRef):
        raise UnsupportedUpdate("paths through DBRef values are not modelled")
    if isinstance(cur, Mapping):
        new = None
        for name, child in node.ordered:
            src = cur if new is None else new
            path.append(name)
            res = _apply(child, src.get(name, CREATABLE), ctx, arr,
                         uid or (root and name == "_id" and name in cur))
            path.pop()
            if res is NOOP:
                continue
            if new is None:
                new = dict(cur)
            if res is DELETE:
                del new[name]
            else:
                new[name] = res
        return NOOP if new is None else new
    if isinstance(cur, list):
        new_list = None
        _same_index_twice(node, ctx)
        for name, child in node.ordered:
            src_list = cur if new_list is None else new_list
            idx = _index(name)
            if idx is None:
                val: object = Missing(f"Cannot create field '{name}' in element "
                                       f"{{{path[-1]}: {show(cur)}}}")
            else:
                val = src_list[idx] if idx < len(src_list) else CREATABLE
            path.append(name)
            res = _apply(child, val, ctx, True, uid)
            path.pop()
            if res is NOOP or (res is DELETE and val is None):
                continue
            if new_list is None:
                new_list = list(cur)
            assert idx is not None
            if idx < len(new_list):
                new_list[idx] = None if res is DELETE else res
            else:
                if idx - len(new_list) > _MAX_PADDING:
                    raise UpdateError(f"can't backfill more than {_MAX_PADDING} elements")
                new_list.extend([None] * (idx - len(new_list)))
                new_list.append(res)
        return NOOP if new_list is None else new_list
    for name, child in node.ordered:  # a scalar: nothing below it exists or can be created
        path.append(name)
        _apply(child, Missing(f"Cannot create field '{name}' in element "
                               f"{{{path[-2]}: {show(cur)}}}"), ctx, arr, uid)
        path.pop()
    return NOOP


def _same_index_twice(node: Node, ctx: Context) -> None:
    # "a.1" and "a.01" are two children of one node but one element of an array: which
    # the server applies to what it created is not modelled
    indexes = [_index(name) for name, _ in node.ordered]
    numbers = [i for i in indexes if i is not None]
    if len(set(numbers)) != len(numbers):
        raise UnsupportedUpdate(f"two paths name one element of the array at '{ctx.where()}'")


def _apply_all(node: Node, cur: object, ctx: Context, uid: bool) -> object:
    if isinstance(cur, Missing):
        raise UpdateError(f"The path '{ctx.where()}' must exist in the document in order to "
                          "apply array updates.")
    if not isinstance(cur, list):
        raise UpdateError(f"Cannot apply array updates to non-array element "
                          f"{ctx.path[-1]}: {show(cur)}")
    child = node.children["$[]"]
    new = None
    for i, item in enumerate(cur):
        ctx.path.append(str(i))
        res = _apply(child, item, ctx, True, uid)
        ctx.path.pop()
        if res is NOOP or (res is DELETE and item is None):
            continue
        if new is None:
            new = list(cur)
        new[i] = None if res is DELETE else res
    return NOOP if new is None else new


# -- leaves: each returns the new value, NOOP, or DELETE -----------------------------------


def _immutable(ctx: Context) -> UpdateError:
    return UpdateError(f"Performing an update on the path '{ctx.where()}' would modify the "
                       "immutable field '_id'")


def _create(cur: Missing, ctx: Context, uid: bool, value: object) -> object:
    if cur.err is not None:
        raise UpdateError(cur.err)
    if uid:
        raise _immutable(ctx)
    return value


def _changed(ctx: Context, uid: bool, value: object) -> object:
    if uid:
        raise _immutable(ctx)
    return value


def _viable(cur: Missing) -> object:
    if cur.err is not None:
        raise UpdateError(cur.err)
    return NOOP


def _set(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    if isinstance(cur, Missing):
        return _create(cur, ctx, uid, bv.copy(leaf.arg))
    if bv.identical(cur, leaf.arg):
        return NOOP
    return _changed(ctx, uid, bv.copy(leaf.arg))


def _nothing(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    return NOOP  # $setOnInsert on an existing document


def _unset(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    return NOOP if isinstance(cur, Missing) else _changed(ctx, uid, DELETE)


def _arith(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    op = "add" if leaf.op == "$inc" else "mul"
    if isinstance(cur, Missing):
        # A missing field becomes the operand ($inc) or a zero of the operand's type ($mul).
        return _create(cur, ctx, uid, bv.arith(op, leaf.arg, 0) if op == "mul" else
                       bv.arith("add", leaf.arg, 0) if bv.kind(leaf.arg) == "long" else leaf.arg)
    if not bv.is_number(cur):
        raise UpdateError(f"Cannot apply {leaf.op} to a value of non-numeric type. "
                          f"{{{ctx.doc_id()}}} has the field '{ctx.path[-1]}' of non-numeric "
                          f"type {bv.kind(cur)}")
    try:
        result = bv.arith(op, leaf.arg, cur)
    except bv.NumericOverflow:
        raise UpdateError(f"Failed to apply {leaf.op} operations to current value "
                          f"({show(cur)}) for document {{{ctx.doc_id()}}}") from None
    # ArithmeticNode: a result identical to the old value as a number is a no-op
    return NOOP if bv.same_number(result, cur) else _changed(ctx, uid, result)


def _minmax(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    if isinstance(cur, Missing):
        return _create(cur, ctx, uid, bv.copy(leaf.arg))
    c = bv.compare(cur, leaf.arg)
    if c == 0 or (c < 0) == (leaf.op == "$min"):
        return NOOP
    return _changed(ctx, uid, bv.copy(leaf.arg))


def _current_date(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    value = ctx.current_date(leaf.arg)  # type: ignore[arg-type]
    if isinstance(cur, Missing):
        return _create(cur, ctx, uid, value)
    return _changed(ctx, uid, value)


def _extract(value: object, path: str) -> object:
    """dotted_path_support::extractElementAtPath on a sort element; None when missing."""
    obj = value.as_doc() if isinstance(value, DBRef) else value
    while True:
        if isinstance(obj, Mapping) and path in obj:
            return obj[path]
        if isinstance(obj, list) and _digits(path) and str(int(path)) == path \
                and int(path) < len(obj):
            return obj[int(path)]
        left, dot, path = path.partition(".")
        if not dot:
            return None
        if isinstance(obj, Mapping) and left in obj:
            obj = obj[left]
        elif isinstance(obj, list) and _digits(left) and str(int(left)) == left \
                and int(left) < len(obj):
            obj = obj[int(left)]
        else:
            return None
        obj = obj.as_doc() if isinstance(obj, DBRef) else obj
        if not isinstance(obj, (Mapping, list)) or not obj:
            return None


def _sorted(items: list, sort: list[tuple[str, int]]) -> list:
    if sort[0][0] == "":
        keyed = [((item,), item) for item in items]
    else:
        keyed = [(tuple(_extract(item, f) if isinstance(item, (Mapping, DBRef)) else None
                        for f, _ in sort), item) for item in items]
    directions = [d for _, d in sort]

    def cmp(a: tuple, b: tuple) -> int:
        for x, y, d in zip(a[0], b[0], directions, strict=False):
            c = bv.compare(x, y)
            if c:
                return c * d
        return 0
    keyed.sort(key=cmp_to_key(cmp))
    # The server uses std::sort: stable (an insertion sort) for up to 16 elements only.
    if len(keyed) > 16:
        for a, b in zip(keyed, keyed[1:], strict=False):
            if cmp(a, b) == 0 and not bv.identical(a[1], b[1]):
                raise UnsupportedUpdate("$push $sort of more than 16 elements with equal sort "
                                        "keys: the server's order is unspecified")
    return [item for _, item in keyed]


def _push(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    if isinstance(cur, Missing):
        if cur.err is not None:
            raise UpdateError(cur.err)
        items: list = []
    elif isinstance(cur, list):
        items = list(cur)
    else:
        raise UpdateError(f"The field '{ctx.where()}' must be an array but is of type "
                          f"{bv.kind(cur)} in document {{{ctx.doc_id()}}}")
    values = [bv.copy(v) for v in leaf.arg]  # type: ignore[attr-defined]
    position, sort, slice_ = leaf.extra  # type: ignore[misc]
    changed = bool(values)
    if values:
        n = len(items)
        if n == 0 or position is None or position > n:
            at = n
        elif position > 0:
            at = position
        elif position < 0 and -position < n:
            at = n + position
        else:
            at = 0
        items[at:at] = values
    if sort is not None:
        changed = True  # the server reports a sorted array as modified even when unmoved
        items = _sorted(items, sort)
    if slice_ is not None and len(items) > abs(slice_):
        changed = True
        items = items[:slice_] if slice_ >= 0 else items[len(items) + slice_:]
    if isinstance(cur, Missing):
        return _create(cur, ctx, uid, items)
    return _changed(ctx, uid, items) if changed else NOOP


def _add_to_set(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    if isinstance(cur, Missing):
        return _create(cur, ctx, uid, [bv.copy(v) for v in leaf.arg])  # type: ignore[attr-defined]
    if not isinstance(cur, list):
        raise UpdateError(f"Cannot apply $addToSet to non-array field. Field named "
                          f"'{ctx.path[-1]}' has non-array type {bv.kind(cur)}")
    new = [bv.copy(v) for v in leaf.arg  # type: ignore[attr-defined]
           if not any(bv.compare(item, v) == 0 for item in cur)]
    return _changed(ctx, uid, cur + new) if new else NOOP


def _pop(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    if isinstance(cur, Missing):
        return _viable(cur)
    if not isinstance(cur, list):
        raise UpdateError(f"Path '{ctx.where()}' contains an element of non-array type "
                          f"'{bv.kind(cur)}'")
    if not cur:
        return NOOP
    return _changed(ctx, uid, cur[1:] if leaf.arg == -1 else cur[:-1])


def _document_match(item: object, query: dict) -> bool:
    """Whether ``$pull: {path: query}`` removes ``item``, where both readings agree.

    The server matches a document value as a query ({x: 1} also removes {x: 1, y: 2} and
    {x: [1]}); the manual says "the exact same fields and values". Elements on which the
    two differ are left to the server.
    """
    doc = item.as_doc() if isinstance(item, DBRef) else item
    if not isinstance(doc, Mapping):
        return False
    as_query = all(key in doc and (bv.compare(doc[key], want) == 0 or (
        isinstance(doc[key], list) and any(bv.compare(x, want) == 0 for x in doc[key])))
        for key, want in query.items())
    exact = len(doc) == len(query) and all(
        key in doc and bv.compare(doc[key], want) == 0 for key, want in query.items())
    if as_query != exact:
        raise UnsupportedUpdate("$pull of a document where the server's query match and the "
                                "manual's exact match differ")
    return exact


def _pull(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    if isinstance(cur, Missing):
        return _viable(cur)
    if not isinstance(cur, list):
        raise UpdateError("Cannot apply $pull to a non-array value")
    arg = leaf.arg
    if leaf.op == "$pullAll":
        kept = [x for x in cur if not any(bv.compare(x, v) == 0 for v in arg)]  # type: ignore[attr-defined]
    elif leaf.extra == "query":
        kept = [x for x in cur if not _document_match(x, arg)]  # type: ignore[arg-type]
    else:
        kept = [x for x in cur if bv.compare(x, arg) != 0]
    return NOOP if len(kept) == len(cur) else _changed(ctx, uid, kept)


def _bit(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    if isinstance(cur, Missing):
        value: object = 0
    elif bv.kind(cur) in ("int", "long"):
        value = cur
    else:
        raise UpdateError(f"Cannot apply $bit to a value of non-integral type. "
                          f"{{{ctx.doc_id()}}} has the field {ctx.path[-1]} of non-integer "
                          f"type {bv.kind(cur)}")
    for op, operand in leaf.arg:  # type: ignore[attr-defined]
        value = bv.bitop(op, value, operand)
    if isinstance(cur, Missing):
        return _create(cur, ctx, uid, value)
    return NOOP if bv.same_number(value, cur) else _changed(ctx, uid, value)  # BitNode


def _rename_from(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    if ctx.sources[leaf.arg] is NOOP:  # type: ignore[index]
        return NOOP
    return _changed(ctx, uid, DELETE)


def _rename_to(leaf: Leaf, cur: object, ctx: Context, arr: bool, uid: bool) -> object:
    value = ctx.sources[leaf.arg]  # type: ignore[index]
    if value is NOOP:
        return NOOP
    if arr:
        raise UpdateError(f"The destination field cannot be an array element, '{ctx.where()}' "
                          f"in doc with {ctx.doc_id()} has an array field")
    if leaf.extra and len(ctx.path) + _depth(value) >= MAX_DEPTH:
        raise UnsupportedUpdate("$rename would nest close to the server's depth limit")
    if isinstance(cur, Missing):
        return _create(cur, ctx, uid, value)
    return _changed(ctx, uid, value)


def _depth(v: object) -> int:
    if isinstance(v, Mapping):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


_LEAVES = {
    "$set": _set, "$setOnInsert": _nothing, "$unset": _unset, "$inc": _arith, "$mul": _arith,
    "$min": _minmax, "$max": _minmax, "$currentDate": _current_date, "$push": _push,
    "$addToSet": _add_to_set, "$pop": _pop, "$pull": _pull, "$pullAll": _pull, "$bit": _bit,
    "$rename": _rename_to, "$rename:from": _rename_from,
}
