"""A bounded stand-in for the application, writing while a migration runs.

:class:`AppWriters` runs a few threads, each with its own client (as another process
would have), for at most ``max_ops`` writes each and at most ``seconds``: updates of a
field of its own, of a field of its own inside a subdocument the migration also writes,
inserts and deletes. Every acknowledged write is remembered, so :meth:`lost` can say
afterwards which of them the database no longer shows. Threads write disjoint fields
and documents, so the expected end state does not depend on their interleaving.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database


@dataclass
class _Thread:
    index: int
    targets: list[Any]
    deletable: list[Any]
    #: (document _id, dotted field) -> the last acknowledged value
    fields: dict[tuple[Any, str], Any] = field(default_factory=dict)
    inserted: dict[Any, dict[str, Any]] = field(default_factory=dict)
    deleted: set[Any] = field(default_factory=set)
    acknowledged: int = 0
    seconds: float = 0.0


class AppWriters:
    """Writer threads on ``collection`` of the database at ``url``.

    ``targets``: ``_id``s the writers update; ``deletable``: ``_id``s they may delete
    (split between threads); ``subdocument``: the field whose sub-fields they also write
    (``meta`` writes ``meta.<tag>_<thread>``); ``insert``: a template for new documents.
    """

    def __init__(self, url: str, database: str, collection: str, targets: Sequence[Any], *,
                 threads: int = 2, max_ops: int = 400, seconds: float = 20.0,
                 subdocument: str | None = "meta", deletable: Sequence[Any] = (),
                 insert: dict[str, Any] | None = None, pause: float = 0.0, seed: int = 7,
                 tag: str = "app"):
        self.tag = tag
        self.url, self.database, self.collection = url, database, collection
        self.max_ops, self.seconds, self.pause = max_ops, seconds, pause
        self.subdocument, self.insert = subdocument, insert
        rng = random.Random(seed)
        self._threads = [_Thread(i, list(targets), [d for j, d in enumerate(deletable)
                                                    if j % threads == i])
                         for i in range(threads)]
        for t in self._threads:
            rng.shuffle(t.targets)
        self._seed = seed
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    # ------------------------------------------------------------------ running
    def start(self) -> AppWriters:
        for t in self._threads:
            w = threading.Thread(target=self._run, args=(t,), name=f"app-writer-{t.index}",
                                 daemon=True)
            w.start()
            self._workers.append(w)
        return self

    def stop(self) -> AppWriters:
        self._stop.set()
        for w in self._workers:
            w.join()
        if self.errors:
            raise self.errors[0]
        return self

    def wait(self) -> AppWriters:
        """Until every thread has made its writes (or run out of time)."""
        for w in self._workers:
            w.join()
        return self.stop()

    def __enter__(self) -> AppWriters:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for w in self._workers:
            w.join()

    def _run(self, t: _Thread) -> None:
        rng = random.Random(self._seed * 100 + t.index)
        client = MongoClient(self.url, serverSelectionTimeoutMS=10_000)
        coll = client[self.database][self.collection]
        start = time.monotonic()
        deadline = start + self.seconds
        try:
            for i in range(self.max_ops):
                if self._stop.is_set() or time.monotonic() > deadline:
                    break
                self._one(coll, t, i, rng)
                if self.pause:
                    time.sleep(self.pause)
        except BaseException as exc:  # noqa: BLE001 - raised again by stop()
            self.errors.append(exc)
        finally:
            t.seconds = time.monotonic() - start
            client.close()

    def _one(self, coll, t: _Thread, i: int, rng: random.Random) -> None:
        kind = rng.random()
        if self.insert is not None and kind < 0.15:
            _id = f"{self.tag}-{t.index}-{i}"
            doc = {"_id": _id, **self.insert, f"{self.tag}_{t.index}": i}
            coll.insert_one(doc)
            t.inserted[_id] = doc
        elif t.deletable and kind < 0.22:
            _id = t.deletable.pop()
            coll.delete_one({"_id": _id})
            t.deleted.add(_id)
        else:
            _id = t.targets[i % len(t.targets)]
            if _id in self._all_deleted():
                return
            name = (f"{self.subdocument}.{self.tag}_{t.index}"
                    if self.subdocument and kind < 0.6 else f"{self.tag}_{t.index}")
            result = coll.update_one({"_id": _id}, {"$set": {name: i}})
            if not result.matched_count:
                return  # not there (deleted by another thread): nothing was acknowledged
            t.fields[(_id, name)] = i
        t.acknowledged += 1

    def _all_deleted(self) -> set[Any]:
        return set().union(*(t.deleted for t in self._threads))

    def deleted(self) -> set[Any]:
        """The ``_id``s these writers deleted."""
        return self._all_deleted()

    # ------------------------------------------------------------------ results
    @property
    def acknowledged(self) -> int:
        return sum(t.acknowledged for t in self._threads)

    @property
    def ops_per_second(self) -> float:
        busy = max((t.seconds for t in self._threads), default=0.0)
        return self.acknowledged / busy if busy else 0.0

    def inserted(self) -> dict[Any, dict[str, Any]]:
        return {k: v for t in self._threads for k, v in t.inserted.items()}

    def lost(self, db: Database, ignore: set[Any] = frozenset()) -> list[str]:
        """Each acknowledged write the database does not show, described (documents in
        ``ignore``, e.g. deleted by later writers, left out)."""
        coll = db[self.collection]
        deleted = self._all_deleted() | set(ignore)
        out = []
        docs = {d["_id"]: d for d in coll.find()}
        for _id in self._all_deleted():
            if _id in docs:
                out.append(f"{_id!r}: deleted, but it is there")
        for _id in self.inserted():
            if _id in deleted:
                continue
            if _id not in docs:
                out.append(f"{_id!r}: inserted, but it is not there")
        for t in self._threads:
            for (_id, name), value in t.fields.items():
                if _id in deleted:
                    continue
                have: Any = docs.get(_id)
                for part in name.split("."):
                    have = have.get(part) if isinstance(have, dict) else None
                if have != value:
                    out.append(f"{_id!r}.{name}: wrote {value!r}, holds {have!r}")
        return out


__all__ = ["AppWriters"]
