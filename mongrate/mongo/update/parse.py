"""Compile an update document into the server's prefix tree of paths (``UpdateObjectNode``).

One tree for all operators, children in the order of ``pathsupport::cmpPathsAndArrayIndexes``
(:func:`~mongrate.mongo.order.update_field_key`); every check the server makes before it
looks at a document is made here, once per update (see the package docstring for what is
modelled).
"""
from __future__ import annotations

import datetime
from collections.abc import Mapping

import bson
from bson.dbref import DBRef

from mongrate.errors import UnsupportedUpdate, UpdateError
from mongrate.mongo import bsonvalue as bv
from mongrate.mongo.order import update_field_key
from mongrate.mongo.update.evaluate import MAX_DEPTH, NOOP, Leaf, Node, evaluate, show

__all__ = ["CompiledUpdate", "apply_update", "compile_update", "validate_update"]


# -- parsing ---------------------------------------------------------------------------------


def _parts(path: object, *, dynamic_ok: bool = True) -> list[str]:
    if not isinstance(path, str):
        raise UpdateError(f"update paths must be strings, not {show(path)}")
    if path == "":
        raise UpdateError("An empty update path is not valid.")
    if "\0" in path:
        raise UnsupportedUpdate("field names with NUL bytes cannot be sent to the server")
    parts = path.split(".")
    if "" in parts:
        raise UpdateError(f"The update path '{path}' contains an empty field name, "
                          "which is not allowed.")
    for i, part in enumerate(parts):
        if not part.startswith("$"):
            continue
        if part == "$[]" and dynamic_ok:
            if i == 0:
                raise UpdateError("Cannot have array filter identifier (i.e. '$[<id>]') "
                                  f"element in the first position in path '{path}'")
        elif part == "$" or (part.startswith("$[") and part.endswith("]")):
            if not dynamic_ok:
                raise UpdateError(f"The field for $rename may not be dynamic: {path}")
            raise UnsupportedUpdate(f"the positional operator in '{path}' needs the server")
        else:
            raise UnsupportedUpdate(f"the $-prefixed field name in '{path}' is not modelled")
    return parts


def _insert(root: Node, parts: list[str], leaf: Leaf) -> None:
    node = root
    for i, name in enumerate(parts[:-1]):
        child = node.children.get(name)
        want_array = parts[i + 1] == "$[]"
        if child is None:
            child = node.children[name] = Node(want_array)
        elif isinstance(child, Leaf) or child.is_array != want_array:
            raise UpdateError(f"Updating the path '{'.'.join(parts)}' would create a conflict "
                              f"at '{'.'.join(parts[:i + 1])}'")
        node = child
    if parts[-1] in node.children:
        path = ".".join(parts)
        raise UpdateError(f"Updating the path '{path}' would create a conflict at '{path}'")
    node.children[parts[-1]] = leaf


def _order(node: Node) -> None:
    node.ordered = sorted(node.children.items(), key=lambda item: update_field_key(item[0]))
    for child in node.children.values():
        if isinstance(child, Node):
            _order(child)


def _value(arg: object, parts: list[str], extra_depth: int = 0) -> object:
    value, depth = bv.clone(arg)
    if len(parts) + depth + extra_depth >= MAX_DEPTH:
        raise UnsupportedUpdate(f"the value for '{'.'.join(parts)}' nests close to the server's "
                                f"depth limit of {MAX_DEPTH}")
    return value


def _integer(v: object, what: str) -> int:
    n = bv.integral(v)
    if n is None:
        raise UpdateError(f"The value for {what} must be an integer value, not {show(v)}")
    return n


def _parse_push(parts: list[str], arg: object) -> Leaf:
    if not (isinstance(arg, Mapping) and "$each" in arg):
        return Leaf("$push", parts, [_value(arg, parts, 1)], (None, None, None))
    for clause in arg:
        if clause not in ("$each", "$slice", "$sort", "$position"):
            raise UpdateError(f"Unrecognized clause in $push: {clause}")
    each = arg["$each"]
    if not isinstance(each, (list, tuple)):
        raise UpdateError("The argument to $each in $push must be an array but it was of type: "
                          f"{bv.kind(each)}")
    values = [_value(v, parts, 1) for v in each]
    slice_ = _integer(arg["$slice"], "$slice") if "$slice" in arg else None
    position = _integer(arg["$position"], "$position") if "$position" in arg else None
    sort = None
    if "$sort" in arg:
        spec = arg["$sort"]
        if isinstance(spec, Mapping):
            if not spec:
                raise UpdateError("The $sort pattern is empty when it should be a set of fields.")
            sort = [(_sort_field(f), _sort_dir(d)) for f, d in spec.items()]
        elif bv.is_number(spec):
            sort = [("", _sort_dir(spec))]
        else:
            raise UpdateError("The $sort is invalid: use 1/-1 to sort the whole element, "
                              "or {field:1/-1} to sort embedded fields")
    return Leaf("$push", parts, values, (position, sort, slice_))


def _sort_dir(v: object) -> int:
    d = float(str(v.to_decimal())) if bv.kind(v) == "decimal" else v  # type: ignore[attr-defined]
    if not bv.is_number(v) or d not in (1, -1):
        raise UpdateError("The $sort element value must be either 1 or -1")
    return int(d)  # type: ignore[call-overload]


def _sort_field(f: str) -> str:
    if f == "":
        raise UpdateError("The $sort field cannot be empty")
    if "" in f.split("."):
        raise UpdateError(f"The $sort field is a dotted field but has an empty part: {f}")
    return f


def _parse_pull(parts: list[str], arg: object) -> Leaf:
    if bv.kind(arg) == "regex":
        raise UnsupportedUpdate("$pull with a regular expression needs the server")
    if isinstance(arg, Mapping) and not isinstance(arg, DBRef):
        for key, v in arg.items():
            if (not isinstance(key, str) or key == "" or key.startswith("$") or "." in key
                    or bv.kind(v) in ("null", "object", "array", "regex", "minkey", "maxkey",
                                      "code", "codewscope")):
                raise UnsupportedUpdate("$pull with a query condition needs the server")
        return Leaf("$pull", parts, dict(arg), "query")
    return Leaf("$pull", parts, _value(arg, parts), "equal")


def _parse_leaf(op: str, parts: list[str], arg: object) -> Leaf:
    path = ".".join(parts)
    if op in ("$set", "$min", "$max"):
        return Leaf(op, parts, _value(arg, parts))
    if op in ("$unset", "$setOnInsert"):
        return Leaf(op, parts)
    if op in ("$inc", "$mul"):
        if not bv.is_number(arg):
            verb = "increment" if op == "$inc" else "multiply"
            raise UpdateError(f"Cannot {verb} with non-numeric argument: {{{path}: {show(arg)}}}")
        bv.kind(arg)  # out-of-range Python ints are not BSON
        return Leaf(op, parts, arg)
    if op == "$currentDate":
        return Leaf(op, parts, _current_date_type(arg))
    if op == "$push":
        return _parse_push(parts, arg)
    if op == "$addToSet":
        if isinstance(arg, Mapping) and next(iter(arg), None) == "$each":
            each = arg["$each"]
            if not isinstance(each, (list, tuple)):
                raise UpdateError("The argument to $each in $addToSet must be an array but it "
                                  f"was of type {bv.kind(each)}")
            if len(arg) > 1:
                raise UpdateError(f"Found unexpected fields after $each in $addToSet: {show(arg)}")
            values = [_value(v, parts, 1) for v in each]
        else:
            values = [_value(arg, parts, 1)]
        unique: list = []
        for v in values:
            if not any(bv.compare(u, v) == 0 for u in unique):
                unique.append(v)
        return Leaf(op, parts, unique)
    if op == "$pop":
        n = bv.integral(arg)
        if n is None:
            raise UpdateError(f"Expected an integer in: {path}: {show(arg)}")
        if n not in (1, -1):
            raise UpdateError(f"$pop expects 1 or -1, found: {n}")
        return Leaf(op, parts, n)
    if op == "$pullAll":
        if not isinstance(arg, (list, tuple)):
            raise UpdateError(f"$pullAll requires an array argument but was given a {bv.kind(arg)}")
        return Leaf(op, parts, [_value(v, parts) for v in arg])
    if op == "$pull":
        return _parse_pull(parts, arg)
    if op == "$bit":
        return Leaf(op, parts, _bit_ops(arg))
    raise UpdateError(f"Unknown modifier: {op}. Expected a valid update modifier or "
                      "pipeline-style update specified as an array")


def _current_date_type(arg: object) -> str:
    if arg is True:
        return "date"
    if arg is False:
        raise UnsupportedUpdate("$currentDate: false is not modelled")
    if isinstance(arg, Mapping):
        found = None
        for key, v in arg.items():
            if key != "$type":
                raise UpdateError(f"Unrecognized $currentDate option: {key}")
            if v in ("date", "timestamp") and isinstance(v, str):
                found = v
        if found is None:
            raise UpdateError("The '$type' string field is required to be 'date' or "
                              "'timestamp': {$currentDate: {field : {$type: 'date'}}}")
        return found
    raise UpdateError(f"{bv.kind(arg)} is not valid type for $currentDate. Please use a boolean "
                      "('true') or a $type expression ({$type: 'timestamp/date'}).")


def _bit_ops(arg: object) -> list[tuple[str, object]]:
    if not isinstance(arg, Mapping):
        raise UpdateError(f"The $bit modifier is not compatible with a {bv.kind(arg)}. You must "
                          "pass in an embedded document: {$bit: {field: {and/or/xor: #}}")
    ops = []
    for name, v in arg.items():
        if name not in ("and", "or", "xor"):
            raise UpdateError("The $bit modifier only supports 'and', 'or', and 'xor', not "
                              f"'{name}' which is an unknown operator: {{{name}: {show(v)}}}")
        if bv.kind(v) not in ("int", "long"):
            raise UpdateError("The $bit modifier field must be an Integer(32/64 bit); a "
                              f"'{bv.kind(v)}' is not supported here: {{{name}: {show(v)}}}")
        ops.append((name, v))
    if not ops:
        raise UpdateError("You must pass in at least one bitwise operation. The format is: "
                          "{$bit: {field: {and/or/xor: #}}")
    return ops


def _parse_rename(root: Node, renames: list, src: object, dst: object) -> tuple[str, str]:
    src_parts = _parts(src, dynamic_ok=False)
    _insert(root, src_parts, Leaf("$rename:from", src_parts, len(renames)))
    if not isinstance(dst, str):
        raise UpdateError(f"The 'to' field for $rename must be a string: {src}: {show(dst)}")
    if "\0" in dst:
        raise UpdateError("The 'to' field for $rename cannot contain an embedded null byte")
    dst_parts = _parts(dst, dynamic_ok=False)
    if src_parts == dst_parts:
        raise UpdateError(f"The source and target field for $rename must differ: {src}: {dst!r}")
    n = min(len(src_parts), len(dst_parts))
    if src_parts[:n] == dst_parts[:n]:
        raise UpdateError("The source and target field for $rename must not be on the same "
                          f"path: {src}: {dst!r}")
    if src_parts == ["_id"]:
        raise UpdateError("Performing an update on the path '_id' would modify the immutable "
                          "field '_id'")
    deeper = len(dst_parts) > len(src_parts)  # the moved value may then exceed the depth limit
    _insert(root, dst_parts, Leaf("$rename", dst_parts, len(renames), deeper))
    renames.append(src_parts)
    return src_parts[0], dst_parts[0]


class CompiledUpdate:
    """A parsed, validated update document, reusable for many documents."""

    def __init__(self, update: object):
        if isinstance(update, (list, tuple)):
            raise UnsupportedUpdate("pipeline-style updates (a list) need the server")
        if not isinstance(update, Mapping):
            raise UpdateError(f"an update must be a document, not {show(update)}")
        if not update:
            raise UpdateError("update cannot be empty")
        self._root = Node()
        self._renames: list[list[str]] = []
        fields: set[str] = set()
        try:
            for op, spec in update.items():
                if not isinstance(op, str) or not op.startswith("$"):
                    raise UpdateError(f"Unknown modifier: {op}. Expected a valid update modifier "
                                      "or pipeline-style update specified as an array")
                if not isinstance(spec, Mapping):
                    raise UpdateError(f"Modifiers operate on fields but we found type "
                                      f"{bv.kind(spec)} instead. For example: {{$mod: {{<field>: "
                                      f"...}}}} not {{{op}: {show(spec)}}}")
                for path, arg in spec.items():
                    if op == "$rename":
                        fields.update(_parse_rename(self._root, self._renames, path, arg))
                        continue
                    parts = _parts(path)
                    leaf = _parse_leaf(op, parts, arg)
                    if op == "$unset" and parts == ["_id"]:
                        raise UpdateError("Performing an update on the path '_id' would modify "
                                          "the immutable field '_id'")
                    _insert(self._root, parts, leaf)
                    if op != "$setOnInsert":
                        fields.add(parts[0])
        except bv.UnsupportedValue as exc:
            raise UnsupportedUpdate(str(exc)) from None
        _order(self._root)
        self.fields = frozenset(fields)

    def apply(self, doc: Mapping, *, now: datetime.datetime | None = None) -> Mapping:
        """The updated document; ``doc`` itself (unchanged) when the update is a no-op."""
        if not isinstance(doc, Mapping):
            raise TypeError(f"a document must be a mapping, not {type(doc).__name__}")
        result = evaluate(self._root, self._renames, doc, now)
        return doc if result is NOOP else result  # type: ignore[return-value]


_CACHE: dict[bytes, CompiledUpdate] = {}
_CACHE_SIZE = 64


def compile_update(update: Mapping) -> CompiledUpdate:
    """Parse and validate ``update`` once (see validate_update) for use on many documents.

    Updates are cached by their BSON encoding, so calling apply_update in a loop with the
    same update parses it once.
    """
    try:
        key = bson.encode(update) if isinstance(update, Mapping) else None
    except Exception:  # not encodable: CompiledUpdate says why
        key = None
    compiled = _CACHE.get(key) if key is not None else None
    if compiled is None:
        compiled = CompiledUpdate(update)
        if key is not None:
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.clear()
            _CACHE[key] = compiled
    return compiled


def validate_update(update: Mapping) -> set[str]:
    """Check ``update`` statically; return the top-level fields it may change.

    ``$rename`` counts both source and destination; ``$setOnInsert`` never changes an
    existing document and is not counted. Raises UpdateError or UnsupportedUpdate.
    """
    return set(compile_update(update).fields)


def apply_update(doc: dict, update: Mapping, *, now: datetime.datetime | None = None) -> dict:
    """``doc`` after ``update`` as MongoDB 5.0+ would store it, as a new dict.

    ``doc`` and its sub-values are never mutated (unchanged sub-values are shared).
    ``now`` is the time ``$currentDate`` writes (naive UTC, truncated to milliseconds).
    """
    result = compile_update(update).apply(doc, now=now)
    return dict(result) if result is doc else result  # type: ignore[return-value]

