"""Schema helpers of ``op``: indexes, collections and validators.

Each records what it did in the undo collection before doing it, so ``op.restore_undo()``
drops what this revision created, recreates what it dropped, puts back the validator it
replaced, and nothing else. Undo records (``revision``, ``collection``, ``kind``, ``doc_id``):

- ``index_created`` / ``index_dropped`` (``index:<name>``): whether this revision built it /
  the dropped index's keys and options;
- ``collection_created`` (``collection:<name>``): ``created`` from ``create_collection``
  (False: it was there already); ``if_empty`` when an index brought it into being (dropped
  again only if still empty); neither for a backup snapshot (always dropped);
- ``collection_dropped`` (``collection:<name>``): its options and indexes (empty ones only);
- ``validator_set`` (``validator:<name>``): validator, level and action before, as BSON.

A server that cannot do what a helper asks (FerretDB 1.x: validators, partial, TTL, sparse
and collated indexes) fails the call with one line before anything is written
(:mod:`mongrate.mongo.capabilities`).
"""

from __future__ import annotations

from typing import Any

import bson
from bson.binary import Binary
from pymongo.errors import OperationFailure

from mongrate.errors import CapabilityError, OpError
from mongrate.mongo.capabilities import (
    FEATURES,
    Capabilities,
    collection_needs,
    index_needs,
    probe,
)
from mongrate.mongo.codec import DUPLICATE_KEY, utcnow
from mongrate.mongo.collections import collection_options, fast_count, index_specs
from mongrate.mongo.dryrun import summarise
from mongrate.operations.context import RevisionContext
from mongrate.operations.engine import Engine
from mongrate.schema.model import VALIDATION_ACTIONS, VALIDATION_LEVELS, option_differences

_SIGNIFICANT = ("unique", "sparse", "expireAfterSeconds", "partialFilterExpression")


class SchemaOps:
    """Schema helpers (mixed into :class:`mongrate.operations.ops.Operations`)."""

    _ctx: RevisionContext
    _engine: Engine

    # ---------------------------------------------------------- capabilities
    @property
    def capabilities(self) -> Capabilities:
        """What this server can do (asked once per op, with read-only commands)."""
        caps = getattr(self, "_capabilities", None)
        if caps is None:
            caps = self._capabilities = probe(self._engine.db)
        return caps

    def require(self, *features: str) -> None:
        """Fail unless the server has every one of ``features`` (``validators``,
        ``partial_indexes``, ``ttl_indexes``, ``sparse_indexes``, ``collation``,
        ``special_indexes``, ``collection_options``). First in a revision, it stops it
        before its first write on a server that lacks one."""
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

    def _schema_record(self, collection: str, kind: str, doc_id: str) -> dict | None:
        return self._engine.undo.find_one({**self._ctx.key(collection), "kind": kind,
                                           "doc_id": doc_id})

    def _record_once(self, collection: str, kind: str, doc_id: str, *, created: bool) -> None:
        """Record whether this revision created it, unless a record exists (an earlier,
        interrupted run's): one upsert, not a read and then an insert."""
        self._engine.undo.update_one(
            {**self._ctx.key(collection), "kind": kind, "doc_id": doc_id},
            {"$setOnInsert": {"created": created, "at": utcnow()}}, upsert=True)

    def create_index(self, collection: str, keys: list[tuple[str, int]] | str, *, name: str,
                     **options: Any) -> bool:
        """Create the index unless an identical one exists; remember whether this revision
        created it (and the collection, if creating the index brings it into being). An
        index with the same name or keys but other options is an error: a revision must not
        silently go without the unique index it asked for. Returns True if created."""
        wanted_key = [(keys, 1)] if isinstance(keys, str) else [tuple(k) for k in keys]
        self._require(f"{collection}: index {name}", index_needs(wanted_key, options))
        db = self.db  # through op.db: changes still waiting for this collection are written
        coll = db[collection]
        undo = self._engine.undo
        # asked before anything else: listing indexes may create the collection (FerretDB)
        absent = collection not in db.list_collection_names(filter={"name": collection})
        existing = coll.index_information() if not absent else {}
        wanted_opts = {k: options[k] for k in _SIGNIFICANT if options.get(k) not in (None, False)}
        match = None
        for n, info in existing.items():
            same_keys = [tuple(k) for k in info["key"]] == wanted_key
            opts = {k: info[k] for k in _SIGNIFICANT if info.get(k) not in (None, False)}
            if n == name and not same_keys:
                raise OpError(f"{collection}: an index named {name} exists on other keys "
                              f"({info['key']}); drop it or choose another name")
            if same_keys and opts != wanted_opts:
                raise OpError(f"{collection}: index {n} has the keys of {name} but options "
                              f"{opts or '{}'} instead of {wanted_opts or '{}'}")
            if same_keys:
                match = n
        if match is not None:
            if match != name:
                self.log(f"{collection}: index {match} already serves as {name}; kept as is")
            if not self.dry_run:
                self._record_once(collection, "index_created", f"index:{name}", created=False)
            return False
        if self.dry_run:
            self._ctx.would(collection, "create_index", f"{name} on {summarise(dict(wanted_key))}")
            return True
        if absent:
            undo.update_one({**self._ctx.key(collection), "kind": "collection_created",
                             "doc_id": f"collection:{collection}"},
                            {"$setOnInsert": {"at": utcnow(), "if_empty": True}}, upsert=True)
        self._record_once(collection, "index_created", f"index:{name}", created=True)
        try:
            coll.create_index(keys, name=name, **options)
        except OperationFailure as exc:
            if options.get("unique") and (exc.code == DUPLICATE_KEY
                                          or "UNIQUE constraint failed" in str(exc)):
                raise OpError(_duplicates_message(coll, wanted_key, name)) from None
            raise
        return True

    def drop_index(self, collection: str, name: str) -> bool:
        """Drop the index, remembering its spec so ``restore_undo`` recreates it. Returns
        False if there was no such index."""
        coll = self.db[collection]
        existing = coll.index_information()
        if name not in existing:
            return False
        if self.dry_run:
            self._ctx.would(collection, "drop_index", name)
            return True
        if self._schema_record(collection, "index_dropped", f"index:{name}") is None:
            info = dict(existing[name])
            info.pop("v", None)
            info.pop("ns", None)
            self._engine.undo.insert_one({
                **self._ctx.key(collection), "doc_id": f"index:{name}", "kind": "index_dropped",
                # parallel lists: FerretDB stores no nested arrays, and field names may hold dots
                "key_fields": [k[0] for k in info["key"]],
                "key_directions": [k[1] for k in info.pop("key")],
                "options": info, "at": utcnow(),
            })
        coll.drop_index(name)
        return True


    # ----------------------------------------------------------- collections
    def _exists(self, name: str) -> bool:
        # by name, not by a non-empty answer: mongo-java-server ignores the filter
        return name in self._engine.db.list_collection_names(filter={"name": name})

    def create_collection(self, name: str, **options: Any) -> bool:
        """Create ``name`` with creation options (``capped``, ``size``, ``collation``,
        ``validator``, ``validationLevel``...) unless it exists with them; remember whether
        this revision created it. One that exists with other options is an error. Returns
        True if it was created."""
        self._require(f"collection {name}", collection_needs(options))
        if self._exists(name):
            live = collection_options(self._engine.db, name)
            differing = option_differences(options, live, declared_in="the call")
            if any(options[k] != live.get(k) for k in ("validator", "validationLevel",
                                                        "validationAction") if k in options):
                differing.append("the validator differs")
            if differing:
                raise OpError(f"collection {name} exists with other options "
                              f"({'; '.join(differing)}); change it by hand or drop it first")
            if not self.dry_run:
                self._record_once(name, "collection_created", f"collection:{name}", created=False)
            return False
        if self.dry_run:
            self._ctx.would(name, "create_collection", summarise(options) if options else "")
            return True
        self._record_once(name, "collection_created", f"collection:{name}", created=True)
        # just asked: pymongo's own existence check would be a second listCollections
        self.db.create_collection(name, check_exists=False, **options)
        return True

    def drop_collection(self, name: str) -> bool:
        """Drop ``name`` if it holds no documents, remembering its options and indexes so
        ``restore_undo`` makes it again. A collection with documents is refused (back it up
        with ``op.backup_collection``, then drop it through ``op.db``). Returns False if
        there was no such collection."""
        if not self._exists(name):
            return False
        db = self._engine.db
        if self.db[name].find_one({}, {"_id": 1}) is not None:
            raise OpError(f"{name} holds {fast_count(db, name)} documents: op.drop_collection "
                          "drops only empty collections (so restore_undo can make them again); "
                          "back it up with op.backup_collection, then op.db.drop_collection")
        if self.dry_run:
            self._ctx.would(name, "drop_collection", "")
            return True
        if self._schema_record(name, "collection_dropped", f"collection:{name}") is None:
            indexes = [{"name": n, "key_fields": [k[0] for k in keys],
                        "key_directions": [k[1] for k in keys], "options": opts}
                       for n, (keys, opts) in index_specs(db, name).items()]
            self._engine.undo.insert_one({
                **self._ctx.key(name), "kind": "collection_dropped", "doc_id": f"collection:{name}",
                "options": Binary(bson.encode(collection_options(db, name))),
                "indexes": indexes, "at": utcnow(),
            })
        self.db.drop_collection(name)
        return True

    # ------------------------------------------------------------ validators
    def set_validator(self, collection: str, validator: dict | None, *, level: str = "strict",
                      action: str = "error") -> bool:
        """Set the collection's validator (``collMod``); None removes it. The validator,
        level and action before are recorded first, so ``restore_undo`` puts them back.
        Returns True if anything changed."""
        if level not in VALIDATION_LEVELS or action not in VALIDATION_ACTIONS:
            raise OpError(f"{collection}: validator level must be one of "
                          f"{', '.join(VALIDATION_LEVELS)} and action one of "
                          f"{', '.join(VALIDATION_ACTIONS)}, not {level!r} / {action!r}")
        self._require(f"{collection}: validator", ["validators"])
        if not self._exists(collection):
            raise OpError(f"{collection} does not exist: create it first "
                          f"(op.create_collection({collection!r}, validator=...))")
        current = collection_options(self._engine.db, collection)
        before = {"validator": dict(current.get("validator") or {}),
                  "validationLevel": current.get("validationLevel", "strict"),
                  "validationAction": current.get("validationAction", "error")}
        after = {"validator": dict(validator or {}), "validationLevel": level,
                 "validationAction": action}
        if before == after or not (before["validator"] or after["validator"]):
            return False
        if self.dry_run:
            self._ctx.would(collection, "collMod", summarise(after))
            return True
        if self._schema_record(collection, "validator_set", f"validator:{collection}") is None:
            # as BSON: a validator's $-prefixed keys are not storable as fields everywhere
            self._engine.undo.insert_one({
                **self._ctx.key(collection), "kind": "validator_set",
                "doc_id": f"validator:{collection}", "before": Binary(bson.encode(before)),
                "at": utcnow(),
            })
        self.db.command({"collMod": collection, **after})
        return True


def restore_schema(engine: Engine, query: dict[str, Any]) -> int:
    """Reverse the schema records matching ``query`` (one revision's), newest first;
    returns how many."""
    db, undo, undone = engine.db, engine.undo, 0
    records = list(undo.find({**query, "kind": {"$in": list(_RESTORE)}}))
    # indexes before the collections they live in, newest first: by time, then (records
    # of one millisecond) by the client's ObjectId, which counts up in a process
    records.sort(key=lambda r: (r["kind"] != "collection_created", r["at"], r["_id"]),
                 reverse=True)
    for rec in records:
        _RESTORE[rec["kind"]](engine, db, rec)
        undo.delete_one({"_id": rec["_id"]})
        undone += 1
    return undone


def _keys(rec: dict) -> list[tuple[str, Any]]:
    return list(zip(rec["key_fields"], rec["key_directions"], strict=True))


def _restore_index_created(engine: Engine, db, rec: dict) -> None:
    coll, name = db[rec["collection"]], rec["doc_id"].split(":", 1)[1]
    if rec.get("created") and name in coll.index_information():
        coll.drop_index(name)


def _restore_index_dropped(engine: Engine, db, rec: dict) -> None:
    coll, name = db[rec["collection"]], rec["doc_id"].split(":", 1)[1]
    if name not in coll.index_information():
        coll.create_index(_keys(rec), name=name, **rec["options"])


def _restore_collection_created(engine: Engine, db, rec: dict) -> None:
    coll = db[rec["collection"]]
    if rec.get("created") is False:
        return  # create_collection found it there
    exists = coll.name in db.list_collection_names(filter={"name": coll.name})
    # a collection an index brought into being goes only if nothing was put in it
    if exists and not (rec.get("if_empty") and (
            coll.find_one({}, {"_id": 1}) is not None
            or set(coll.index_information()) - {"_id_"})):
        db.drop_collection(coll.name)
    if "created" not in rec and not rec.get("if_empty"):  # a backup snapshot's record
        engine.backups.update_many({"target": coll.name},
                                   {"$set": {"status": "dropped", "dropped_at": utcnow()}})


def _restore_collection_dropped(engine: Engine, db, rec: dict) -> None:
    name = rec["collection"]
    if name in db.list_collection_names(filter={"name": name}):
        return
    db.create_collection(name, **bson.decode(rec["options"]))
    for ix in rec.get("indexes", []):
        db[name].create_index(_keys(ix), name=ix["name"], **ix["options"])


def _restore_validator_set(engine: Engine, db, rec: dict) -> None:
    db.command({"collMod": rec["collection"], **bson.decode(rec["before"])})


_RESTORE = {
    "index_created": _restore_index_created,
    "index_dropped": _restore_index_dropped,
    "collection_created": _restore_collection_created,
    "collection_dropped": _restore_collection_dropped,
    "validator_set": _restore_validator_set,
}


def _duplicates_message(coll, keys: list, name: str) -> str:
    field = keys[0][0]
    dups = list(coll.aggregate([
        {"$group": {"_id": f"${field}", "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}},
    ]))
    example = f" (e.g. {dups[0]['_id']!r} x{dups[0]['n']})" if dups else ""
    return (f"{coll.name} holds {len(dups)} duplicate {field} value(s){example}, so the unique "
            f"index {name} cannot be built: remove or merge the duplicate documents, then run "
            "the upgrade again")
