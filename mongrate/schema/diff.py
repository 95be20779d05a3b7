"""Declared vs live schema: the list of differences, pure (no I/O).

Only the collections schema.yaml declares are compared: a collection it does not name is
not mongrate's to drop (the application, GridFS or a backup may own it). Within a declared
collection every index is compared, so an index made by hand shows up as extra.
Changes come per collection (sorted by name) in the order they must be applied: the
collection, then dropped, changed and renamed indexes (freeing names and key patterns),
then new indexes, then the validator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mongrate.schema.model import Collection, Index, Schema, option_differences

ADD_COLLECTION = "add_collection"
DROP_INDEX = "drop_index"
CHANGE_INDEX = "change_index"
RENAME_INDEX = "rename_index"
ADD_INDEX = "add_index"
SET_VALIDATOR = "set_validator"
CHANGE_OPTIONS = "change_options"


@dataclass(frozen=True, eq=False)
class Change:
    """One difference. ``declared``/``live``: the Collection, Index or Validator on each
    side (None where absent); ``details``: what differs, for changed things; ``renamed_from``:
    an undeclared collection that looks like this missing one under another name."""

    kind: str
    collection: str
    declared: Any = None
    live: Any = None
    details: tuple[str, ...] = ()
    renamed_from: str | None = None

    @property
    def index_name(self) -> str | None:
        thing = self.declared if self.declared is not None else self.live
        return thing.name if isinstance(thing, Index) else None

    def describe(self) -> str:
        """One line for ``mongrate check``."""
        c = self.collection
        if self.kind == ADD_COLLECTION:
            hint = f" (is it {self.renamed_from}, renamed?)" if self.renamed_from else ""
            return f"{c}: collection missing (declared in schema.yaml){hint}"
        if self.kind == ADD_INDEX:
            return f"{c}: index {self.declared.name} missing (declared in schema.yaml)"
        if self.kind == DROP_INDEX:
            return f"{c}: index {self.live.name} is not in schema.yaml (extra)"
        if self.kind == CHANGE_INDEX:
            return f"{c}: index {self.declared.name} changed: {'; '.join(self.details)}"
        if self.kind == RENAME_INDEX:
            return (f"{c}: index {self.declared.name} is named {self.live.name} in the database "
                    "(same keys and options)")
        if self.kind == SET_VALIDATOR:
            return (f"{c}: validator changed: {self.declared.describe()} in schema.yaml, "
                    f"{self.live.describe()} in the database")
        return f"{c}: {'; '.join(self.details)} (creation options cannot be changed in place)"


@dataclass
class Diff:
    changes: list[Change] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __iter__(self):
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def lines(self) -> list[str]:
        return [c.describe() for c in self.changes]


def compare(declared: Schema, live: Schema,
            undeclared: Mapping[str, Collection] | None = None) -> Diff:
    """What it takes to go from ``live`` to ``declared``. ``undeclared``: live collections
    schema.yaml does not name, used only to spot a collection that was renamed."""
    diff = Diff()
    for name in sorted(declared.collections):
        want = declared.collections[name]
        have = live.collections.get(name)
        if have is None:
            diff.changes.append(Change(ADD_COLLECTION, name, want,
                                       renamed_from=_renamed_from(want, undeclared or {})))
            diff.changes.extend(Change(ADD_INDEX, name, ix) for ix in want.indexes.values())
            continue
        diff.changes.extend(_compare_indexes(name, want.indexes, have.indexes))
        if want.validator != have.validator:
            diff.changes.append(Change(SET_VALIDATOR, name, want.validator, have.validator))
        options = option_differences(want.options, have.options)
        if options:
            diff.changes.append(Change(CHANGE_OPTIONS, name, want.options, have.options,
                                       details=tuple(options)))
    return diff


def _compare_indexes(coll: str, want: Mapping[str, Index], have: Mapping[str, Index]
                     ) -> list[Change]:
    missing = [ix for n, ix in want.items() if n not in have]
    extra = [ix for n, ix in sorted(have.items()) if n not in want]
    renames: list[Change] = []
    for new in list(missing):
        old = next((ix for ix in extra if new.same_definition(ix)), None)
        if old is not None:
            renames.append(Change(RENAME_INDEX, coll, new, old))
            missing.remove(new)
            extra.remove(old)
    changed = []
    for name, ix in want.items():
        if name in have:
            details = ix.differences(have[name])
            if details:
                changed.append(Change(CHANGE_INDEX, coll, ix, have[name], tuple(details)))
    return ([Change(DROP_INDEX, coll, None, ix) for ix in extra] + changed + renames
            + [Change(ADD_INDEX, coll, ix) for ix in missing])


def _renamed_from(want: Collection, undeclared: Mapping[str, Collection]) -> str | None:
    """An undeclared collection with exactly the indexes (names and definitions) of
    ``want``, if ``want`` has any and exactly one such collection exists."""
    if not want.indexes:
        return None
    found = [
        c.name for c in undeclared.values()
        if set(c.indexes) == set(want.indexes)
        and all(want.indexes[n].same_definition(c.indexes[n]) for n in want.indexes)
    ]
    return found[0] if len(found) == 1 else None
