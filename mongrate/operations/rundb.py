"""``op.db``: the pymongo ``Database`` of a real run, except that touching a collection
first writes the changes still waiting for it (:mod:`mongrate.operations.deferral`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from mongrate.operations.deferral import Deferral

#: Collection methods that read or write what a waiting change would alter.
_DATA_METHODS = (
    "aggregate", "aggregate_raw_batches", "bulk_write", "count_documents", "create_index",
    "create_indexes", "delete_many", "delete_one", "distinct", "drop", "drop_index",
    "drop_indexes", "estimated_document_count", "find", "find_one", "find_one_and_delete",
    "find_one_and_replace", "find_one_and_update", "find_raw_batches", "index_information",
    "insert_many", "insert_one", "list_indexes", "options", "rename", "replace_one",
    "update_many", "update_one", "watch",
)


class RunCollection(Collection):
    """A collection of ``op.db``: every read or write first writes the changes still
    waiting for it, however long ago the revision took the collection object."""

    def __init__(self, database: Database, name: str, deferral: Deferral, **options: Any):
        super().__init__(database, name, **options)
        self._mongrate_deferral = deferral

    @classmethod
    def of(cls, coll: Collection, deferral: Deferral) -> RunCollection:
        return cls(coll.database, coll.name, deferral, codec_options=coll.codec_options,
                   read_preference=coll.read_preference, write_concern=coll.write_concern,
                   read_concern=coll.read_concern)

    def __getitem__(self, name: str) -> RunCollection:
        return RunCollection.of(super().__getitem__(name), self._mongrate_deferral)

    def with_options(self, *args: Any, **kwargs: Any) -> RunCollection:
        return RunCollection.of(super().with_options(*args, **kwargs), self._mongrate_deferral)


def _flushing(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: RunCollection, *args: Any, **kwargs: Any) -> Any:
        self._mongrate_deferral.accessed(self.name)
        return method(self, *args, **kwargs)

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


for _name in _DATA_METHODS:
    setattr(RunCollection, _name, _flushing(getattr(Collection, _name)))


class RunDatabase(Database):
    """``op.db`` in a real run: the pymongo ``Database``, except that touching a collection
    first writes the changes still waiting for it, so a revision reading or writing through
    ``op.db`` always sees every change made before it (commands and aggregations on the
    database: all of them)."""

    def __init__(self, db: Database, deferral: Deferral):
        super().__init__(db.client, db.name, db.codec_options, db.read_preference,
                         db.write_concern, db.read_concern)
        self._mongrate_deferral = deferral

    def __getitem__(self, name: str) -> RunCollection:
        self._mongrate_deferral.accessed(name)
        return RunCollection.of(super().__getitem__(name), self._mongrate_deferral)

    def get_collection(self, name: str, *args: Any, **kwargs: Any) -> RunCollection:
        self._mongrate_deferral.accessed(name)
        return RunCollection.of(super().get_collection(name, *args, **kwargs),
                                self._mongrate_deferral)

    def create_collection(self, name: str, *args: Any, **kwargs: Any) -> RunCollection:
        self._mongrate_deferral.accessed(name)
        return RunCollection.of(super().create_collection(name, *args, **kwargs),
                                self._mongrate_deferral)

    def drop_collection(self, name_or_collection: Any, *args: Any, **kwargs: Any):
        self._mongrate_deferral.accessed(getattr(name_or_collection, "name", name_or_collection))
        return super().drop_collection(name_or_collection, *args, **kwargs)

    def command(self, *args: Any, **kwargs: Any):
        self._mongrate_deferral.accessed(None)
        return super().command(*args, **kwargs)

    def aggregate(self, *args: Any, **kwargs: Any):
        self._mongrate_deferral.accessed(None)
        return super().aggregate(*args, **kwargs)
