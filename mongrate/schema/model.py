"""The declared (or live) schema of a database: collections, their indexes, validator and
creation options, in one canonical form so that declared and live compare by ``==``.

Pure data: no I/O. :mod:`mongrate.schema.loader` builds it from schema.yaml,
:mod:`mongrate.schema.introspect` from a live database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Direction = int | str
#: index key types besides 1 / -1
SPECIAL_DIRECTIONS = ("hashed", "text", "2d", "2dsphere")
VALIDATION_LEVELS = ("off", "strict", "moderate")
VALIDATION_ACTIONS = ("error", "warn", "errorAndLog")
#: options a validator is made of; everything else in listCollections' options is a
#: creation option
VALIDATOR_OPTIONS = ("validator", "validationLevel", "validationAction")
#: capped collection sizes are rounded up by the server to a multiple of this
_SIZE_GRAIN = 256


def default_index_name(keys: Iterable[tuple[str, Direction]]) -> str:
    """The name MongoDB gives an index without one: ``field_dir`` joined by ``_``."""
    return "_".join(f"{f}_{d}" for f, d in keys)


def canonical_keys(keys: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Direction], ...]:
    """Directions as int where numeric (the server may say 1.0); text fields sorted, since
    a text index's fields have no order."""
    out: list[tuple[str, Direction]] = []
    text: list[str] = []
    for f, d in keys:
        if isinstance(d, bool):
            d = int(d)
        if isinstance(d, int | float) and d == int(d):
            out.append((str(f), int(d)))
        elif d == "text":
            text.append(str(f))
        else:
            out.append((str(f), str(d)))
    if text:
        first = next((i for i, (_, d) in enumerate(out) if d == "text"), len(out))
        out[first:first] = [(f, "text") for f in sorted(text)]
    return tuple(out)


def subset_equal(declared: Mapping, live: Mapping) -> bool:
    """Every key declared has the live value (the server fills in defaults of its own,
    e.g. a collation's strength or a time series' granularity)."""
    return all(k in live and _same(v, live[k]) for k, v in declared.items())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return dict(a) == dict(b)
    return a == b


@dataclass(frozen=True, eq=False)
class Index:
    """One index. ``partial`` is the partialFilterExpression, ``ttl`` expireAfterSeconds."""

    name: str
    keys: tuple[tuple[str, Direction], ...]
    unique: bool = False
    sparse: bool = False
    partial: Mapping[str, Any] | None = None
    ttl: int | None = None
    collation: Mapping[str, Any] | None = None
    hidden: bool = False

    def options(self) -> dict[str, Any]:
        """``create_index`` keyword arguments (server spellings), only those set."""
        opts: dict[str, Any] = {}
        if self.unique:
            opts["unique"] = True
        if self.sparse:
            opts["sparse"] = True
        if self.partial is not None:
            opts["partialFilterExpression"] = dict(self.partial)
        if self.ttl is not None:
            opts["expireAfterSeconds"] = self.ttl
        if self.collation is not None:
            opts["collation"] = dict(self.collation)
        if self.hidden:
            opts["hidden"] = True
        return opts

    def differences(self, live: Index) -> list[str]:
        """What differs between this (declared) index and ``live``, as short phrases."""
        out = []
        if self.keys != live.keys:
            out.append(f"keys {_keys_text(self.keys)} in schema.yaml, {_keys_text(live.keys)} "
                       "in the database")
        for attr, label in (("unique", "unique"), ("sparse", "sparse"), ("hidden", "hidden"),
                            ("ttl", "ttl (expireAfterSeconds)"),
                            ("partial", "partial filter")):
            mine, theirs = getattr(self, attr), getattr(live, attr)
            if not _same(mine, theirs):
                out.append(f"{label} {_text(mine)} in schema.yaml, {_text(theirs)} in the database")
        if not _collation_same(self.collation, live.collation):
            out.append(f"collation {_text(self.collation)} in schema.yaml, "
                       f"{_text(live.collation)} in the database")
        return out

    def same_definition(self, other: Index) -> bool:
        """Equal in everything but the name."""
        return not self.differences(other)


def _collation_same(declared: Mapping | None, live: Mapping | None) -> bool:
    if declared is None or live is None:
        return declared is None and live is None
    return subset_equal(declared, live)


def _keys_text(keys: tuple[tuple[str, Direction], ...]) -> str:
    return "{" + ", ".join(f"{f}: {d}" for f, d in keys) + "}"


def _text(value: Any) -> str:
    if value is None or value is False:
        return "absent" if value is None else "false"
    if value is True:
        return "true"
    return str(dict(value)) if isinstance(value, Mapping) else str(value)


@dataclass(frozen=True, eq=False)
class Validator:
    """A collection's validator document with its level and action; ``rules == {}`` is no
    validator."""

    rules: Mapping[str, Any] = field(default_factory=dict)
    level: str = "strict"
    action: str = "error"

    @property
    def empty(self) -> bool:
        return not self.rules

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Validator):
            return NotImplemented
        if self.empty and other.empty:
            return True  # level and action mean nothing without rules
        return (dict(self.rules) == dict(other.rules) and self.level == other.level
                and self.action == other.action)

    __hash__ = None  # type: ignore[assignment]

    def describe(self) -> str:
        if self.empty:
            return "none"
        keys = ", ".join(str(k) for k in self.rules)
        return f"{{{keys}}} level {self.level}, action {self.action}"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Validator:
        return cls(dict(options.get("validator") or {}),
                   str(options.get("validationLevel") or "strict"),
                   str(options.get("validationAction") or "error"))


@dataclass(eq=False)
class Collection:
    name: str
    indexes: dict[str, Index] = field(default_factory=dict)
    validator: Validator = field(default_factory=Validator)
    options: dict[str, Any] = field(default_factory=dict)  # creation options, server spelling


@dataclass(eq=False)
class Schema:
    collections: dict[str, Collection] = field(default_factory=dict)
    source: str = "schema.yaml"


def option_differences(declared: Mapping[str, Any], live: Mapping[str, Any], *,
                       declared_in: str = "schema.yaml") -> list[str]:
    """Creation options that differ (validator fields excluded), as short phrases."""
    out = []
    for key in sorted(set(declared) | set(live)):
        if key in VALIDATOR_OPTIONS:
            continue
        mine, theirs = declared.get(key), live.get(key)
        if mine is None and theirs is None:
            continue
        if key == "size" and isinstance(mine, int) and isinstance(theirs, int | float):
            if 0 <= theirs - mine < _SIZE_GRAIN:  # the server rounded it up
                continue
        if isinstance(mine, Mapping) and isinstance(theirs, Mapping) and subset_equal(mine, theirs):
            continue
        if mine is not None and _same(mine, theirs):
            continue
        out.append(f"option {key} {_text(mine)} in {declared_in}, {_text(theirs)} in the database")
    return out
