"""The live database's schema, in the model's canonical form: one ``listCollections`` and
one ``listIndexes`` per collection compared."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pymongo.database import Database

from mongrate.schema.model import (
    VALIDATOR_OPTIONS,
    Collection,
    Index,
    Schema,
    Validator,
    canonical_keys,
)

#: listIndexes calls in flight at once: they wait on the server, not on us
_READERS = 4


def index_from_server(info: Mapping[str, Any]) -> Index:
    """A ``listIndexes`` entry as an :class:`Index`."""
    pairs: list[tuple[str, Any]] = []
    for field, direction in dict(info["key"]).items():
        if field == "_fts":  # a text index: its fields are the weights' keys
            pairs.extend((f, "text") for f in dict(info.get("weights") or {}))
        elif field != "_ftsx":
            pairs.append((field, direction))
    ttl = info.get("expireAfterSeconds")
    partial = info.get("partialFilterExpression")
    collation = info.get("collation")
    return Index(
        name=str(info["name"]),
        keys=canonical_keys(pairs),
        unique=bool(info.get("unique")),
        sparse=bool(info.get("sparse")),
        partial=dict(partial) if partial is not None else None,
        ttl=int(ttl) if ttl is not None else None,
        collation=dict(collation) if collation is not None else None,
        hidden=bool(info.get("hidden")),
    )


def collection_from_server(info: Mapping[str, Any], indexes: Iterable[Mapping]) -> Collection:
    """A ``listCollections`` entry and its ``listIndexes`` as a :class:`Collection`."""
    options = dict(info.get("options") or {})
    coll = Collection(str(info["name"]), validator=Validator.from_options(options),
                      options={k: v for k, v in options.items() if k not in VALIDATOR_OPTIONS})
    for entry in indexes:
        if entry["name"] != "_id_":
            index = index_from_server(entry)
            coll.indexes[index.name] = index
    return coll


def read_schema(db: Database, names: Iterable[str]) -> tuple[Schema, list[str]]:
    """The live schema of those of ``names`` that exist, and every collection name of the
    database (for rename hints)."""
    wanted = set(names)
    infos = {i["name"]: i for i in db.list_collections() if i.get("type", "collection")
             == "collection"}
    present = sorted(wanted & set(infos))
    schema = Schema(source=f"database {db.name}")

    def indexes(name: str) -> list[Mapping]:
        return list(db[name].list_indexes())

    workers = min(_READERS, max(1, len(present) // 8))
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="mongrate-introspect") as pool:
            found = list(pool.map(indexes, present))
    else:
        found = [indexes(n) for n in present]
    for name, entries in zip(present, found, strict=True):
        schema.collections[name] = collection_from_server(infos[name], entries)
    return schema, sorted(infos)


def read_collections(db: Database, names: Iterable[str]) -> dict[str, Collection]:
    """Just these collections (those that exist), e.g. rename candidates."""
    return read_schema(db, names)[0].collections
