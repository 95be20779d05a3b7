"""schema.yaml -> :class:`~mongrate.schema.model.Schema`, with ``file:line: key: problem``
errors.

The file is read with PyYAML's safe loader only (``yaml.compose`` with ``CSafeLoader``, or
``SafeLoader`` without libyaml, and ``SafeConstructor`` for the values: no Python tags), walking the node tree so that every
error names the line of the key at fault.

Format::

    collections:
      file_uploads:
        indexes:
          - name: file_id_unique
            keys: {file_id: 1}           # or [file_id, {uploaded_at: -1}], or "file_id"
            unique: true
          - keys: {expires_at: 1}        # name defaults to expires_at_1
            ttl: 3600                    # expireAfterSeconds
            partial: {is_image: true}    # partialFilterExpression
            sparse: false
            collation: {locale: en, strength: 2}
        validator:                       # the validator document, plus level and action
          $jsonSchema: {bsonType: object, required: [file_id]}
          level: moderate                # off | strict (default) | moderate
          action: warn                   # error (default) | warn | errorAndLog
        options: {capped: true, size: 1048576}   # creation options
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mongrate.errors import SchemaError
from mongrate.schema.model import (
    SPECIAL_DIRECTIONS,
    VALIDATION_ACTIONS,
    VALIDATION_LEVELS,
    Collection,
    Index,
    Schema,
    Validator,
    canonical_keys,
    default_index_name,
)

#: schema.yaml spelling -> Index attribute; the server's spellings are accepted too
_INDEX_KEYS = {
    "name": "name", "keys": "keys", "unique": "unique", "sparse": "sparse", "hidden": "hidden",
    "partial": "partial", "partialFilterExpression": "partial",
    "ttl": "ttl", "expireAfterSeconds": "ttl", "collation": "collation",
}
_COLLECTION_KEYS = ("indexes", "validator", "options")
_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
#: libyaml's safe loader where PyYAML was built with it: 10x faster on a large file
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "capped": bool, "size": int, "max": int, "collation": dict, "timeseries": dict,
    "expireAfterSeconds": int, "clusteredIndex": dict, "changeStreamPreAndPostImages": dict,
}


class _Reader:
    def __init__(self, path: str):
        self.path = path
        self.constructor = SafeConstructor()

    def fail(self, node: Node | None, where: str, problem: str) -> SchemaError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return SchemaError(f"{self.path}{line}: {where}: {problem}")

    def value(self, node: Node, where: str) -> Any:
        try:
            return self.constructor.construct_document(node)
        except ConstructorError as exc:
            raise self.fail(node, where, str(exc.problem)) from None

    def mapping(self, node: Node, where: str) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) in file order; duplicate keys are an error."""
        if not isinstance(node, MappingNode):
            raise self.fail(node, where, f"must be a mapping, not {_kind(node)}")
        self.plain(node, where)
        seen: set[str] = set()
        out = []
        for key_node, value_node in node.value:
            key = self.value(key_node, where)
            if not isinstance(key, str) or not key:
                raise self.fail(key_node, where, f"keys must be names, not {key!r}")
            if key in seen:
                raise self.fail(key_node, f"{where}.{key}", "given twice")
            seen.add(key)
            out.append((key, key_node, value_node))
        return out

    def plain(self, node: Node, where: str) -> None:
        """Refuse tags on the nodes walked rather than constructed (as safe_load would)."""
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            raise self.fail(node, where, f"the tag {node.tag} is not allowed (plain YAML only)")

    def typed(self, node: Node, where: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = self.value(node, where)
        if isinstance(value, bool) and kind is not bool and not (
                isinstance(kind, tuple) and bool in kind):
            raise self.fail(node, where, f"must be {what}, not {value!r}")
        if not isinstance(value, kind):
            raise self.fail(node, where, f"must be {what}, not {value!r}")
        return value

    # ------------------------------------------------------------------ parts
    def schema(self, root: Node | None) -> Schema:
        if root is None:
            raise self.fail(None, "collections", "the file is empty: declare 'collections:'")
        entries = self.mapping(root, "top level")
        schema = Schema(source=self.path)
        found = False
        for key, key_node, value in entries:
            if key != "collections":
                raise self.fail(key_node, key, "unknown key: the top level has only 'collections'")
            found = True
            if isinstance(value, ScalarNode) and value.value in ("", "~", "null"):
                continue
            for name, name_node, body in self.mapping(value, "collections"):
                schema.collections[name] = self.collection(name, name_node, body)
        if not found:
            raise self.fail(root, "collections", "missing: declare 'collections:'")
        return schema

    def collection(self, name: str, name_node: Node, body: Node) -> Collection:
        where = f"collections.{name}"
        if "$" in name or name.startswith("system.") or "\0" in name:
            raise self.fail(name_node, where, "not a valid collection name")
        coll = Collection(name)
        if isinstance(body, ScalarNode) and body.value in ("", "~", "null"):
            return coll  # declared with nothing: exists, no indexes, no validator
        for key, key_node, value in self.mapping(body, where):
            here = f"{where}.{key}"
            if key == "indexes":
                if not isinstance(value, SequenceNode):
                    raise self.fail(value, here, f"must be a list, not {_kind(value)}")
                self.plain(value, here)
                for i, item in enumerate(value.value):
                    index = self.index(item, f"{here}[{i}]")
                    if index.name in coll.indexes:
                        raise self.fail(item, f"{here}[{i}].name",
                                        f"index name {index.name!r} is used twice")
                    if index.name == "_id_":
                        raise self.fail(item, f"{here}[{i}].name",
                                        "_id_ is the server's own index; leave it out")
                    coll.indexes[index.name] = index
            elif key == "validator":
                coll.validator = self.validator(value, here)
            elif key == "options":
                coll.options = self.options(value, here)
            else:
                raise self.fail(key_node, here,
                                f"unknown key; a collection has {', '.join(_COLLECTION_KEYS)}")
        return coll

    def index(self, node: Node, where: str) -> Index:
        values: dict[str, Any] = {}
        nodes: dict[str, Node] = {}
        for key, key_node, value in self.mapping(node, where):
            attr = _INDEX_KEYS.get(key)
            if attr is None:
                raise self.fail(key_node, f"{where}.{key}",
                                "unknown key; an index has name, keys, unique, sparse, "
                                "partial, ttl, collation, hidden")
            if attr in values:
                raise self.fail(key_node, f"{where}.{key}", f"{attr} is given twice")
            here = f"{where}.{key}"
            nodes[attr] = key_node
            if attr == "keys":
                values[attr] = self.keys(value, here)
            elif attr == "name":
                values[attr] = self.typed(value, here, str, "a string")
                if not values[attr]:
                    raise self.fail(value, here, "must not be empty")
            elif attr in ("unique", "sparse", "hidden"):
                values[attr] = self.typed(value, here, bool, "true or false")
            elif attr == "ttl":
                ttl = self.typed(value, here, int, "a whole number of seconds")
                if ttl < 0:
                    raise self.fail(value, here, "must be >= 0")
                values[attr] = ttl
            else:  # partial, collation
                values[attr] = self.typed(value, here, dict, "a mapping")
                if attr == "collation" and "locale" not in values[attr]:
                    raise self.fail(value, here, "needs a locale (e.g. {locale: en})")
        if "keys" not in values:
            raise self.fail(node, f"{where}.keys", "missing: an index needs keys")
        keys = values["keys"]
        if values.get("ttl") is not None and len(keys) != 1:
            raise self.fail(nodes["ttl"], f"{where}.ttl", "a TTL index has exactly one key")
        values.setdefault("name", default_index_name(keys))
        return Index(**values)

    def keys(self, node: Node, where: str) -> tuple:
        """``{a: 1, b: -1}``, ``[a, {b: -1}]`` or ``a``."""
        pairs: list[tuple[str, Any, Node]] = []
        if isinstance(node, MappingNode):
            pairs = [(k, self.value(v, f"{where}.{k}"), v) for k, _, v in self.mapping(node, where)]
        elif isinstance(node, SequenceNode):
            self.plain(node, where)
            for i, item in enumerate(node.value):
                if isinstance(item, MappingNode):
                    entries = self.mapping(item, f"{where}[{i}]")
                    if len(entries) != 1:
                        raise self.fail(item, f"{where}[{i}]", "one field per list item")
                    k, _, v = entries[0]
                    pairs.append((k, self.value(v, f"{where}[{i}].{k}"), v))
                else:
                    pairs.append((self.typed(item, f"{where}[{i}]", str, "a field name"), 1, item))
        else:
            pairs = [(self.typed(node, where, str, "a field name or a mapping"), 1, node)]
        if not pairs:
            raise self.fail(node, where, "must name at least one field")
        seen = set()
        for f, d, n in pairs:
            if f in seen:
                raise self.fail(n, f"{where}.{f}", "field given twice")
            seen.add(f)
            if isinstance(d, bool) or not (d in (1, -1) or d in SPECIAL_DIRECTIONS):
                raise self.fail(n, f"{where}.{f}", "direction must be 1, -1, "
                                + ", ".join(SPECIAL_DIRECTIONS) + f", not {d!r}")
        return canonical_keys((f, d) for f, d, _ in pairs)

    def validator(self, node: Node, where: str) -> Validator:
        rules: dict[str, Any] = {}
        level, action = "strict", "error"
        for key, _, value in self.mapping(node, where):
            here = f"{where}.{key}"
            if key == "level":
                level = self.typed(value, here, str, "a string")
                if level not in VALIDATION_LEVELS:
                    raise self.fail(value, here, f"must be one of {', '.join(VALIDATION_LEVELS)}")
            elif key == "action":
                action = self.typed(value, here, str, "a string")
                if action not in VALIDATION_ACTIONS:
                    raise self.fail(value, here, f"must be one of {', '.join(VALIDATION_ACTIONS)}")
            else:
                rules[key] = self.value(value, here)
        if not rules:
            raise self.fail(node, where, "has no rules: give $jsonSchema (or query operators), "
                            "or remove the validator")
        return Validator(rules, level, action)

    def options(self, node: Node, where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, key_node, value in self.mapping(node, where):
            here = f"{where}.{key}"
            kind = _OPTION_TYPES.get(key)
            if kind is None:
                raise self.fail(key_node, here,
                                f"unknown option; known: {', '.join(_OPTION_TYPES)}"
                                " (a validator goes under 'validator')")
            out[key] = self.typed(value, here, kind,
                                  {bool: "true or false", int: "a whole number",
                                   dict: "a mapping"}[kind])  # type: ignore[index]
            if kind is int and out[key] < 0:
                raise self.fail(value, here, "must be >= 0")
        if out.get("capped") and not out.get("size"):
            raise self.fail(node, f"{where}.size", "a capped collection needs a size in bytes")
        return out


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return f"{node.value!r}" if node.value else "empty"


def load_schema(path: str | os.PathLike) -> Schema:
    """Read and check schema.yaml; raises :class:`SchemaError` naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"{path}: not found: create it, or fix 'schema' in [mongrate]") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read: {exc}") from None
    return parse_schema(text, str(path))


def parse_schema(text: str, source: str = "schema.yaml") -> Schema:
    reader = _Reader(source)
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        context = ""
        if exc.context and exc.context_mark and exc.problem_mark \
                and exc.context_mark.line != exc.problem_mark.line:
            context = f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise SchemaError(f"{source}{line}: not valid YAML: {exc.problem or exc.context}"
                          f"{context}") from None
    except yaml.YAMLError as exc:
        raise SchemaError(f"{source}: not valid YAML: {exc}") from None
    return reader.schema(root)
