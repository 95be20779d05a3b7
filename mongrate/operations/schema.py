"""Schema helpers of ``op``: indexes (and the collections creating one brings into being).

Each records what it did in the undo collection before doing it, so ``op.restore_undo()``
drops what this revision created and recreates what it dropped, and nothing else.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import OperationFailure

from mongrate.errors import OpError
from mongrate.mongo.codec import DUPLICATE_KEY, utcnow

_SIGNIFICANT = ("unique", "sparse", "expireAfterSeconds", "partialFilterExpression")


class SchemaOps:
    """Index helpers (mixed into :class:`mongrate.operations.ops.Operations`)."""

    def _index_record(self, collection: str, name: str, kind: str) -> dict | None:
        """This revision's record that it created (or dropped) the index ``name``: each
        is written once, and restored newest first, so a drop then a create of one name
        (an index redefined) comes back as it was."""
        return self.engine.undo.find_one({**self._key(collection), "doc_id": f"index:{name}",
                                          "kind": kind})

    def create_index(self, collection: str, keys: list[tuple[str, int]] | str, *, name: str,
                     **options: Any) -> bool:
        """Create the index unless an identical one exists; remember whether this revision
        created it (and the collection, if creating the index brings it into being). An
        index with the same name or keys but other options is an error: a revision must not
        silently go without the unique index it asked for. Returns True if created."""
        db = self.db  # through op.db: changes still waiting for this collection are written
        coll = db[collection]
        undo = self.engine.undo
        # asked before anything else: listing indexes may create the collection (FerretDB)
        absent = collection not in db.list_collection_names(filter={"name": collection})
        existing = coll.index_information() if not absent else {}
        wanted_key = [(keys, 1)] if isinstance(keys, str) else [tuple(k) for k in keys]
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
            if self._index_record(collection, name, "index_created") is None \
                    and not self.dry_run:
                undo.insert_one({**self._key(collection), "doc_id": f"index:{name}",
                                 "kind": "index_created", "created": False, "at": utcnow()})
            return False
        if self.dry_run:
            self.engine_write(collection, "create_index", f"{name} on {wanted_key}")
            return True
        if absent:
            undo.update_one({**self._key(collection), "kind": "collection_created",
                             "doc_id": f"collection:{collection}"},
                            {"$setOnInsert": {"at": utcnow(), "if_empty": True}}, upsert=True)
        if self._index_record(collection, name, "index_created") is None:
            undo.insert_one({**self._key(collection), "doc_id": f"index:{name}",
                             "kind": "index_created", "created": True, "at": utcnow()})
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
            self.engine_write(collection, "drop_index", name)
            return True
        if self._index_record(collection, name, "index_dropped") is None:
            info = dict(existing[name])
            info.pop("v", None)
            info.pop("ns", None)
            self.engine.undo.insert_one({
                **self._key(collection), "doc_id": f"index:{name}", "kind": "index_dropped",
                # parallel lists: FerretDB stores no nested arrays, and field names may hold dots
                "key_fields": [k[0] for k in info["key"]],
                "key_directions": [k[1] for k in info.pop("key")],
                "options": info, "at": utcnow(),
            })
        coll.drop_index(name)
        return True


def restore_schema(op, query: dict[str, Any]) -> int:
    """Reverse ``op``'s schema records matching ``query``, newest first; returns how many."""
    db, undo, undone = op.engine.db, op.engine.undo, 0
    records = list(undo.find({**query, "kind": {"$in": [
        "index_created", "index_dropped", "collection_created"]}}))
    # indexes before the collections they live in, newest first: by time, then (records
    # of one millisecond) by the client's ObjectId, which counts up in a process
    records.sort(key=lambda r: (r["kind"] != "collection_created", r["at"], r["_id"]),
                 reverse=True)
    for rec in records:
        coll = db[rec["collection"]]
        kind = rec["kind"]
        if kind == "index_created":
            name = rec["doc_id"].split(":", 1)[1]
            if rec.get("created") and name in coll.index_information():
                coll.drop_index(name)
        elif kind == "index_dropped":
            name = rec["doc_id"].split(":", 1)[1]
            if name not in coll.index_information():
                keys = list(zip(rec["key_fields"], rec["key_directions"], strict=True))
                coll.create_index(keys, name=name, **rec["options"])
        elif kind == "collection_created":
            exists = coll.name in db.list_collection_names(filter={"name": coll.name})
            # a collection an index brought into being goes only if nothing was put in it
            if exists and not (rec.get("if_empty") and (
                    coll.find_one({}, {"_id": 1}) is not None
                    or set(coll.index_information()) - {"_id_"})):
                db.drop_collection(coll.name)
            op.engine.backups.update_many({"target": coll.name},
                                          {"$set": {"status": "dropped", "dropped_at": utcnow()}})
        undo.delete_one({"_id": rec["_id"]})
        undone += 1
    return undone


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
