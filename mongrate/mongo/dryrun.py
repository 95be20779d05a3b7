"""Dry runs: reads go to the real database, writes are recorded and never sent.

``RecordingDatabase`` wraps a pymongo ``Database``; its collections answer reads from
the server and append every write (method, collection, arguments) to a shared list.
"""

from __future__ import annotations

from typing import Any

import bson
from bson import json_util
from pymongo.collection import Collection
from pymongo.database import Database

WRITE_METHODS = frozenset({
    "insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
    "delete_many", "bulk_write", "find_one_and_update", "find_one_and_replace",
    "find_one_and_delete", "create_index", "create_indexes", "drop_index", "drop_indexes",
    "drop", "rename",
})


def summarise(value: Any, limit: int = 160) -> str:
    """A value as a person reads it in a dry run: documents and lists as MongoDB's relaxed
    extended JSON (what the shell shows), not as a Python repr; cut to ``limit``."""
    try:
        text = value if isinstance(value, str) else json_util.dumps(
            value, json_options=json_util.RELAXED_JSON_OPTIONS)
    except (TypeError, ValueError, bson.errors.BSONError):  # not a BSON value (e.g. a request)
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Result:
    """Stands in for a write result: nothing was written."""

    acknowledged = False
    inserted_id = None
    inserted_ids: list = []
    matched_count = modified_count = deleted_count = upserted_count = inserted_count = 0
    upserted_id = None

    def __bool__(self) -> bool:
        return False


class RecordingCollection:
    def __init__(self, collection: Collection, writes: list[dict],
                 database: RecordingDatabase | None = None):
        self._collection = collection
        self._writes = writes
        self._database = database
        self.name = collection.name
        self.full_name = collection.full_name

    def _record(self, method: str, args_text: str) -> None:
        self._writes.append({"collection": self.name, "method": method, "args": args_text})

    @property
    def database(self) -> RecordingDatabase:
        return self._database or RecordingDatabase(self._collection.database, self._writes)

    def with_options(self, **kwargs: Any) -> RecordingCollection:
        return RecordingCollection(self._collection.with_options(**kwargs), self._writes,
                                   self._database)

    def aggregate(self, pipeline: list, *args: Any, **kwargs: Any) -> Any:
        if pipeline and any(k in pipeline[-1] for k in ("$out", "$merge")):
            self._record("aggregate", summarise(pipeline[-1]))
            return iter(())
        return self._collection.aggregate(pipeline, *args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr in WRITE_METHODS:
            def record(*args: Any, **kwargs: Any) -> Any:
                args_text = ", ".join(
                    [summarise(a) for a in args]
                    + [f"{k}={summarise(v)}" for k, v in kwargs.items()]
                )
                if attr == "bulk_write" and args:
                    args_text = f"{len(args[0])} operations"
                elif attr == "insert_many" and args:
                    args_text = f"{len(list(args[0]))} documents"
                self._record(attr, args_text)
                return None if attr.startswith("find_one_and") else _Result()
            return record
        value = getattr(self._collection, attr)
        if isinstance(value, Collection):
            return RecordingCollection(value, self._writes, self._database)
        return value

    def __getitem__(self, name: str) -> RecordingCollection:
        return RecordingCollection(self._collection[name], self._writes, self._database)


class RecordingClient:
    """``op.db.client``: databases it hands out record their writes too."""

    def __init__(self, client: Any, writes: list[dict]):
        self._client = client
        self._writes = writes

    def __getitem__(self, name: str) -> RecordingDatabase:
        return RecordingDatabase(self._client[name], self._writes)

    def get_database(self, name: str | None = None, **kwargs: Any) -> RecordingDatabase:
        return RecordingDatabase(self._client.get_database(name, **kwargs), self._writes)

    def __getattr__(self, attr: str) -> Any:
        if attr in ("drop_database",):
            def record(*args: Any, **kwargs: Any) -> None:
                self._writes.append({"collection": "", "method": attr,
                                     "args": ", ".join(summarise(a) for a in args)})
            return record
        value = getattr(self._client, attr)
        if isinstance(value, Database):
            return RecordingDatabase(value, self._writes)
        return value


class RecordingDatabase:
    """Reads go to ``db``; writes are appended to ``writes``. GridFS needs a real
    ``Database``, so a dry run cannot exercise GridFS writes (read ``fs.files`` and
    ``fs.chunks`` as collections instead)."""

    def __init__(self, db: Database, writes: list[dict] | None = None):
        self._db = db
        self.writes: list[dict] = writes if writes is not None else []
        self.name = db.name
        self.client = RecordingClient(db.client, self.writes)

    def __getitem__(self, name: str) -> RecordingCollection:
        return RecordingCollection(self._db[name], self.writes, self)

    def get_collection(self, name: str, **kwargs: Any) -> RecordingCollection:
        return RecordingCollection(self._db.get_collection(name, **kwargs), self.writes, self)

    def _record(self, method: str, args: tuple) -> None:
        self.writes.append({"collection": "", "method": method,
                            "args": ", ".join(summarise(a) for a in args)})

    def create_collection(self, name: str, *args: Any, **kwargs: Any) -> RecordingCollection:
        self._record("create_collection", (name,))
        return self[name]

    def drop_collection(self, name: Any, *args: Any, **kwargs: Any) -> None:
        self._record("drop_collection", (getattr(name, "name", name),))

    def command(self, cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if _is_read_command(cmd):
            return self._db.command(cmd, *args, **kwargs)
        self._record("command", (cmd,))
        return {"ok": 1.0, "dry_run": True}

    def aggregate(self, pipeline: list, *args: Any, **kwargs: Any) -> Any:
        if pipeline and any(k in pipeline[-1] for k in ("$out", "$merge")):
            self._record("aggregate", (pipeline[-1],))
            return iter(())
        return self._db.aggregate(pipeline, *args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        value = getattr(self._db, attr)  # pymongo answers unknown names with a Collection
        if isinstance(value, Collection):
            return RecordingCollection(value, self.writes, self)
        return value


READ_COMMANDS = frozenset({
    "ping", "hello", "ismaster", "buildinfo", "count", "distinct", "find",
    "listcollections", "listindexes", "listdatabases", "dbstats", "collstats", "serverstatus",
    "explain", "connectionstatus", "hostinfo", "getparameter",
})


def _is_read_command(cmd: Any) -> bool:
    name = next(iter(cmd)) if isinstance(cmd, dict) else cmd
    name = str(name).lower()
    if name == "aggregate" and isinstance(cmd, dict):
        pipeline = cmd.get("pipeline") or [{}]
        return not any(k in pipeline[-1] for k in ("$out", "$merge"))
    return name in READ_COMMANDS
