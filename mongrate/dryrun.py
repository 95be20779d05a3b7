"""Dry runs: reads go to the real database, writes are recorded and never sent.

``RecordingDatabase`` wraps a pymongo ``Database``; its collections answer reads from
the server and append every write (method, collection, arguments) to a shared list.
"""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

WRITE_METHODS = frozenset({
    "insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
    "delete_many", "bulk_write", "find_one_and_update", "find_one_and_replace",
    "find_one_and_delete", "create_index", "create_indexes", "drop_index", "drop_indexes",
    "drop", "rename",
})


def _summarise(value: Any, limit: int = 160) -> str:
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
    def __init__(self, collection: Collection, writes: list[dict]):
        self._collection = collection
        self._writes = writes
        self.name = collection.name
        self.full_name = collection.full_name

    def __getattr__(self, attr: str) -> Any:
        if attr in WRITE_METHODS:
            def record(*args: Any, **kwargs: Any) -> Any:
                args_text = ", ".join(
                    [_summarise(a) for a in args]
                    + [f"{k}={_summarise(v)}" for k, v in kwargs.items()]
                )
                if attr == "bulk_write" and args:
                    args_text = f"{len(args[0])} operations"
                elif attr == "insert_many" and args:
                    docs = list(args[0])
                    args_text = f"{len(docs)} documents"
                self._writes.append({"collection": self.name, "method": attr, "args": args_text})
                return None if attr.startswith("find_one_and") else _Result()
            return record
        value = getattr(self._collection, attr)
        if isinstance(value, Collection):
            return RecordingCollection(value, self._writes)
        return value

    def __getitem__(self, name: str) -> RecordingCollection:
        return RecordingCollection(self._collection[name], self._writes)


class RecordingDatabase:
    def __init__(self, db: Database, writes: list[dict] | None = None):
        self._db = db
        self.writes: list[dict] = writes if writes is not None else []
        self.name = db.name
        self.client = db.client

    def __getitem__(self, name: str) -> RecordingCollection:
        return RecordingCollection(self._db[name], self.writes)

    def get_collection(self, name: str, **kwargs: Any) -> RecordingCollection:
        return RecordingCollection(self._db.get_collection(name, **kwargs), self.writes)

    def __getattr__(self, attr: str) -> Any:
        if attr in ("drop_collection", "create_collection", "command"):
            def record(*args: Any, **kwargs: Any) -> Any:
                if attr == "command" and args and _is_read_command(args[0]):
                    return getattr(self._db, attr)(*args, **kwargs)
                self.writes.append({"collection": "", "method": attr,
                                    "args": ", ".join(_summarise(a) for a in args)})
                return None
            return record
        if attr.startswith("_"):
            raise AttributeError(attr)
        value = getattr(self._db, attr)  # pymongo answers unknown names with a Collection
        if isinstance(value, Collection):
            return RecordingCollection(value, self.writes)
        return value


def _is_read_command(cmd: Any) -> bool:
    name = next(iter(cmd)) if isinstance(cmd, dict) else cmd
    return name in {"ping", "count", "distinct", "listCollections", "listIndexes", "dbStats",
                    "collStats", "buildInfo", "serverStatus", "explain"}
