"""The schema helpers of ``op``: indexes, collections and validators, each recording in the
undo collection what it is about to change, and :func:`restore_schema`, which reverses
those records.

Undo records (``revision``, ``collection``, ``kind``, ``doc_id``):

- ``index_created`` (``index:<name>``): ``created`` says whether this revision built it;
- ``index_dropped`` (``index:<name>``): the dropped index's keys and options;
- ``collection_created`` (``collection:<name>``): ``created`` False when it was already
  there (a backup snapshot's record has no ``created``: the snapshot is always dropped);
- ``collection_dropped`` (``collection:<name>``): its options and indexes (empty ones only);
- ``validator_set`` (``validator:<name>``): the validator, level and action before, as BSON.

In a downgrade each helper reverses its upgrade twin: ``drop_index`` and ``drop_collection``
remove only what this revision's upgrade created, ``create_index``, ``create_collection``
and ``set_validator`` put back what it dropped or replaced, and each forgets the record.

A server that cannot do what a helper asks (FerretDB 1.x: validators, partial, TTL,
sparse and collated indexes) fails the call with one line before anything is written.
"""

from __future__ import annotations

from typing import Any

import bson
from bson.binary import Binary
from pymongo.database import Database

from mongrate.errors import CapabilityError, OpError
from mongrate.mongo.capabilities import (
    FEATURES,
    Capabilities,
    collection_needs,
    index_needs,
    probe,
)
from mongrate.mongo.codec import utcnow
from mongrate.mongo.collections import collection_options, fast_count, index_specs
from mongrate.schema.model import VALIDATION_ACTIONS, VALIDATION_LEVELS, option_differences

_SIGNIFICANT = ("unique", "sparse", "expireAfterSeconds", "partialFilterExpression")


class SchemaOps:
    """Mixed into :class:`~mongrate.operations.ops.Operations`; uses its ``db``,
    ``direction``, ``revision``, ``_undo``, ``_key`` and ``log``."""

    db: Database
    direction: str
    revision: str

    # ---------------------------------------------------------- capabilities
    @property
    def capabilities(self) -> Capabilities:
        """What this server can do (asked once per op)."""
        caps = getattr(self, "_capabilities", None)
        if caps is None:
            caps = self._capabilities = probe(self.db)
        return caps

    def require(self, *features: str) -> None:
        """Fail unless the server has every one of ``features`` (names in
        :data:`mongrate.mongo.capabilities.FEATURES`); call it first in a revision that
        must not run half way on a server that lacks one."""
        self._require("this revision", features)

    def _require(self, what: str, features: Any) -> None:
        unknown = sorted(set(features) - set(FEATURES))
        if unknown:
            raise OpError(f"unknown capability {', '.join(unknown)}; known: {', '.join(FEATURES)}")
        missing = [f for f in dict.fromkeys(features) if not self.capabilities.supports(f)]
        if missing:
            raise CapabilityError(
                f"{what} needs {' and '.join(FEATURES[f] for f in missing)}, which this server "
                f"({self.capabilities.server}) does not have; nothing was written: run it on "
                "a server that has them, or leave them out")

    # --------------------------------------------------------------- indexes
    def _schema_record(self, collection: str, kind: str, doc_id: str) -> dict | None:
        return self._undo.find_one({**self._key(collection), "kind": kind, "doc_id": doc_id})

    def create_index(self, collection: str, keys: list[tuple[str, Any]] | str, *, name: str,
                     **options: Any) -> bool:
        """Create the index unless an identical one exists; remember whether this revision
        created it. An index with the same name or keys but other options is an error
        (a revision must not silently go without the unique index it asked for).

        In a downgrade (the reverse of this revision's ``drop_index``) it is created if
        absent and the drop's record is forgotten."""
        wanted_key = [(keys, 1)] if isinstance(keys, str) else [tuple(k) for k in keys]
        self._require(f"{collection}: index {name}", index_needs(wanted_key, options))
        coll = self.db[collection]
        existing = coll.index_information()
        if self.direction == "downgrade":
            record = self._schema_record(collection, "index_dropped", f"index:{name}")
            if name not in existing:
                coll.create_index(keys, name=name, **options)
            if record:
                self._undo.delete_one({"_id": record["_id"]})
            return name not in existing
        wanted_opts = {k: options[k] for k in _SIGNIFICANT if options.get(k) not in (None, False)}
        match = None
        for n, info in existing.items():
            same_keys = [tuple(k) for k in info["key"]] == wanted_key
            opts = {k: info[k] for k in _SIGNIFICANT if info.get(k) not in (None, False)}
            if n == name and not same_keys:
                raise OpError(f"{collection}: an index named {name} exists on other keys "
                              f"({info['key']}); drop it or choose another name")
            if same_keys and (n == name or opts != wanted_opts):
                if opts != wanted_opts:
                    raise OpError(f"{collection}: index {n} has the keys of {name} but options "
                                  f"{opts or '{}'} instead of {wanted_opts or '{}'}")
                match = n
            elif same_keys:
                match = n
        if self._schema_record(collection, "index_created", f"index:{name}") is None:
            self._undo.insert_one({
                **self._key(collection), "doc_id": f"index:{name}", "kind": "index_created",
                "created": match is None, "at": utcnow(),
            })
        if match is not None:
            if match != name:
                self.log(f"{collection}: index {match} already serves as {name}; kept as is")
            return False
        coll.create_index(keys, name=name, **options)
        return True

    def drop_index(self, collection: str, name: str) -> bool:
        """Upgrade: drop it, remembering its spec. Downgrade: drop it only if this
        revision's upgrade created it."""
        coll = self.db[collection]
        existing = coll.index_information()
        if self.direction == "downgrade":
            record = self._schema_record(collection, "index_created", f"index:{name}")
            dropped = False
            if record and record.get("created") and name in existing:
                coll.drop_index(name)
                dropped = True
            if record:
                self._undo.delete_one({"_id": record["_id"]})
            return dropped
        if name not in existing:
            return False
        if self._schema_record(collection, "index_dropped", f"index:{name}") is None:
            info = dict(existing[name])
            info.pop("v", None)
            info.pop("ns", None)
            self._undo.insert_one({
                **self._key(collection), "doc_id": f"index:{name}", "kind": "index_dropped",
                # parallel lists: FerretDB stores no nested arrays, and field names may hold dots
                "key_fields": [k[0] for k in info["key"]],
                "key_directions": [k[1] for k in info.pop("key")],
                "options": info, "at": utcnow(),
            })
        coll.drop_index(name)
        return True

    # ----------------------------------------------------------- collections
    def _exists(self, name: str) -> bool:
        return bool(self.db.list_collection_names(filter={"name": name}))

    def create_collection(self, name: str, **options: Any) -> bool:
        """Create ``name`` with creation options (``capped``, ``size``, ``collation``,
        ``validator``, ``validationLevel``...), unless it exists with those options.
        Remembers whether this revision created it; one that exists with other options is
        an error. Returns True if it was created."""
        self._require(f"collection {name}", collection_needs(options))
        key = {**self._key(name), "kind": "collection_created", "doc_id": f"collection:{name}"}
        exists = self._exists(name)
        if self.direction == "downgrade":  # the reverse of this revision's drop_collection
            if not exists:
                self.db.create_collection(name, **options)
            self._undo.delete_many({**self._key(name), "kind": "collection_dropped"})
            return not exists
        record = self._undo.find_one(key)
        if exists:
            live = collection_options(self.db, name)
            differing = option_differences(options, live, declared_in="the call")
            if any(options.get(k) != live.get(k) for k in ("validator", "validationLevel",
                                                            "validationAction") if k in options):
                differing.append("validator")
            if differing:
                raise OpError(f"collection {name} exists with other options "
                              f"({'; '.join(differing)}); change it by hand or drop it first")
            if record is None:
                self._undo.insert_one({**key, "created": False, "at": utcnow()})
            return False
        if record is None:
            self._undo.insert_one({**key, "created": True, "at": utcnow()})
        self.db.create_collection(name, **options)
        return True

    def drop_collection(self, name: str) -> bool:
        """Downgrade: drop ``name`` only if this revision's upgrade created it. Upgrade:
        drop it if it holds no documents, remembering its options and indexes (a collection
        with documents is refused: back it up first and drop it through ``op.db``)."""
        exists = self._exists(name)
        if self.direction == "downgrade":
            record = self._schema_record(name, "collection_created", f"collection:{name}")
            dropped = bool(record and record.get("created", True) and exists)
            if dropped:
                self.db.drop_collection(name)
            if record:
                self._undo.delete_one({"_id": record["_id"]})
            return dropped
        if not exists:
            return False
        if self.db[name].find_one({}, {"_id": 1}) is not None:
            raise OpError(f"{name} holds {fast_count(self.db, name)} documents: op.drop_collection "
                          "drops only empty collections (so a downgrade can put them back); "
                          "back it up with op.backup_collection, then op.db.drop_collection")
        if self._schema_record(name, "collection_dropped", f"collection:{name}") is None:
            indexes = [{"name": n, "key_fields": [k[0] for k in keys],
                        "key_directions": [k[1] for k in keys], "options": opts}
                       for n, (keys, opts) in index_specs(self.db, name).items()]
            self._undo.insert_one({
                **self._key(name), "kind": "collection_dropped", "doc_id": f"collection:{name}",
                "options": Binary(bson.encode(collection_options(self.db, name))),
                "indexes": indexes, "at": utcnow(),
            })
        self.db.drop_collection(name)
        return True

    # ------------------------------------------------------------ validators
    def set_validator(self, collection: str, validator: dict | None, *, level: str = "strict",
                      action: str = "error") -> bool:
        """Set (``collMod``) the collection's validator; None or {} removes it. The one
        before is recorded first. In a downgrade it puts the given one back and forgets the
        record. Returns True if anything changed."""
        if level not in VALIDATION_LEVELS or action not in VALIDATION_ACTIONS:
            raise OpError(f"{collection}: validator level must be one of "
                          f"{', '.join(VALIDATION_LEVELS)} and action one of "
                          f"{', '.join(VALIDATION_ACTIONS)}, not {level!r} / {action!r}")
        self._require(f"{collection}: validator", ["validators"])
        if not self._exists(collection):
            raise OpError(f"{collection} does not exist: create it first "
                          f"(op.create_collection({collection!r}, validator=...))")
        current = collection_options(self.db, collection)
        before = {"validator": dict(current.get("validator") or {}),
                  "validationLevel": current.get("validationLevel", "strict"),
                  "validationAction": current.get("validationAction", "error")}
        after = {"validator": dict(validator or {}), "validationLevel": level,
                 "validationAction": action}
        record = self._schema_record(collection, "validator_set", f"validator:{collection}")
        if self.direction == "downgrade":
            if record:
                self._undo.delete_one({"_id": record["_id"]})
        elif record is None:
            # as BSON: a validator's $-prefixed keys are not storable as fields everywhere
            self._undo.insert_one({
                **self._key(collection), "kind": "validator_set",
                "doc_id": f"validator:{collection}", "before": Binary(bson.encode(before)),
                "at": utcnow(),
            })
        if _same_validator(before, after):
            return False
        self.db.command({"collMod": collection, **after})
        return True


def _same_validator(a: dict, b: dict) -> bool:
    if not a["validator"] and not b["validator"]:
        return True
    return a == b


# ------------------------------------------------------------------- undo
def _keys(rec: dict) -> list[tuple[str, Any]]:
    return list(zip(rec["key_fields"], rec["key_directions"], strict=True))


def _undo_index_created(op: Any, rec: dict) -> None:
    name = rec["doc_id"].split(":", 1)[1]
    coll = op.db[rec["collection"]]
    if rec.get("created") and name in coll.index_information():
        coll.drop_index(name)


def _undo_index_dropped(op: Any, rec: dict) -> None:
    name = rec["doc_id"].split(":", 1)[1]
    coll = op.db[rec["collection"]]
    if name not in coll.index_information():
        coll.create_index(_keys(rec), name=name, **rec["options"])


def _undo_collection_created(op: Any, rec: dict) -> None:
    if "created" not in rec:  # a backup snapshot: always dropped, its manifest says so
        op.db.drop_collection(rec["collection"])
        op.backups.update_many({"target": rec["collection"]},
                               {"$set": {"status": "dropped", "dropped_at": utcnow()}})
    elif rec["created"]:
        op.db.drop_collection(rec["collection"])


def _undo_collection_dropped(op: Any, rec: dict) -> None:
    name = rec["collection"]
    if name in op.db.list_collection_names(filter={"name": name}):
        return
    op.db.create_collection(name, **bson.decode(rec["options"]))
    for ix in rec.get("indexes", []):
        op.db[name].create_index(_keys(ix), name=ix["name"], **ix["options"])


def _undo_validator_set(op: Any, rec: dict) -> None:
    before = bson.decode(rec["before"])
    op.db.command({"collMod": rec["collection"], **before})


_UNDO = {
    "index_created": _undo_index_created,
    "index_dropped": _undo_index_dropped,
    "collection_created": _undo_collection_created,
    "collection_dropped": _undo_collection_dropped,
    "validator_set": _undo_validator_set,
}


def restore_schema(op: Any, collection: str | None = None) -> int:
    """Reverse this revision's schema records (and forget every non-field record, e.g. a
    rewrite's state), newest first: an index dropped and built again under the same name
    comes back as it was. Returns records undone."""
    query: dict[str, Any] = {"revision": op.revision, "kind": {"$ne": "fields"}}
    if collection:
        query["collection"] = collection
    undone = 0
    for rec in list(op.undo.find(query).sort([("at", -1), ("_id", -1)])):
        action = _UNDO.get(rec["kind"])
        if action is not None:
            action(op, rec)
        op.undo.delete_one({"_id": rec["_id"]})
        undone += 1
    return undone
