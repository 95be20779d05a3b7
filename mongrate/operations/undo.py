"""Prior values: what a revision's data helpers changed, recorded before they write.

Each (revision, collection) has a side collection ``<undo>_<revision>-<collection>`` with
one record per document and helper call (``seq``, the call's number within the revision):

    {_id: {d: <document _id>, s: <seq>}, p: {<original elements of changed and removed
     fields>}, a: [<fields the change added>], k: [<original field order, if it removed any>]}

The ``p`` elements are the stored bytes, never re-encoded, so any BSON value comes back
exactly. A record is only ever inserted, never updated: a re-run inserts the same ``_id``
and the first record stands. Restoring applies a document's records newest call first, so
the value from before the revision's first change wins, and fields added since by others
are left alone. Insert-only records and a sorted merge keep this linear on servers where a
write by ``_id`` scans the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from pymongo import ReplaceOne, UpdateOne
from pymongo.errors import OperationFailure

from mongrate.errors import RewriteError
from mongrate.mongo.codec import EXACT, NOT_IMPLEMENTED, RAW, decode, raw_bytes
from mongrate.mongo.collections import bulk_write, insert_new
from mongrate.mongo.order import bson_order_key
from mongrate.mongo.rawdoc import Change, diff, document, elements, renamed, restored
from mongrate.names import side_name, side_owner  # noqa: F401 - the names live there


def _embedded(name: str, raw: bytes, kind: int = 0x03) -> bytes:
    return bytes([kind]) + name.encode() + b"\x00" + raw


def record(raw_doc: bytes, seq: int, change: Change) -> RawBSONDocument:
    """The prior-value record of ``change`` (call ``seq``) to the stored ``raw_doc``."""
    doc_id = change.id_element or elements(raw_doc)["_id"]
    key = document([renamed(doc_id, "d"), bson.encode({"s": seq})[4:-1]])
    extra = {"a": change.absent}
    if change.keys is not None:
        extra["k"] = change.keys
    body = [_embedded("_id", key), _embedded("p", document(change.prior.values())),
            bson.encode(extra)[4:-1]]
    return RawBSONDocument(document(body), RAW)


@dataclass
class Prior:
    """One record, read back."""

    doc_id: Any
    seq: int
    prior: dict[str, bytes]
    absent: list[str]
    keys: list[str] | None

    @classmethod
    def read(cls, raw: RawBSONDocument) -> Prior:
        elems = elements(raw.raw)
        key = bson.decode(_value(elems["_id"]), EXACT)
        rest = decode(document(e for n, e in elems.items() if n in ("a", "k")))
        return cls(key["d"], int(key["s"]), elements(_value(elems["p"])),
                   list(rest.get("a") or ()), rest.get("k"))


def _value(element: bytes) -> bytes:
    return element[element.index(b"\x00", 1) + 1:]


def apply_priors(current: bytes, priors: Sequence[Prior]) -> bytes:
    """``current`` with ``priors`` (one document's records) undone, newest call first."""
    for p in sorted(priors, key=lambda p: p.seq, reverse=True):
        current = restored(current, p.prior, p.absent, p.keys)
    return current


def grouped(records: Iterable[RawBSONDocument], skip: frozenset[int] = frozenset()
            ) -> Iterator[tuple[Any, list[Prior]]]:
    """Records sorted by ``_id`` as (document id, its records), records of calls in ``skip``
    (passes that never replaced the collection) left out."""
    current: list[Prior] = []
    for raw in records:
        p = Prior.read(raw)
        if p.seq in skip:
            continue
        if current and bson_order_key(current[0].doc_id) != bson_order_key(p.doc_id):
            yield current[0].doc_id, current
            current = []
        current.append(p)
    if current:
        yield current[0].doc_id, current


class SideCollection:
    """Recording into, and restoring from, one side collection."""

    def __init__(self, db, undo_name: str, revision: str, collection: str,
                 write_concern: Any = None):
        self.db = db
        self.collection = collection
        self.name = side_name(undo_name, revision, collection)
        self.coll = db.get_collection(self.name, codec_options=RAW,
                                      write_concern=write_concern)

    def insert(self, records: list[RawBSONDocument]) -> None:
        """Insert records; ones already there (an earlier run's) stand."""
        insert_new(self.coll, records)

    def exists(self) -> bool:
        return self.name in self.db.list_collection_names(filter={"name": self.name})

    def sorted_records(self, seqs: Iterable[int] | None = None, batch_size: int = 1000):
        query = {} if seqs is None else {"_id.s": {"$in": list(seqs)}}
        return self.coll.find(query).sort("_id", 1).batch_size(batch_size)

    def restore_in_place(self, *, batch_size: int, statement_limit: int,
                         seqs: Iterable[int] | None = None, skip: frozenset[int] = frozenset(),
                         guard=None, progress=None) -> tuple[int, int]:
        """Put recorded values back with one read and one bulk write per batch of
        documents (for servers where writes by ``_id`` are indexed). Returns (documents
        restored, records whose document no longer exists)."""
        live = self.db.get_collection(self.collection, codec_options=RAW)
        groups = grouped(self.sorted_records(seqs, batch_size), skip)
        if progress is not None:
            groups = progress(groups)
        restored_n = gone = 0
        batch: list[tuple[Any, list[Prior]]] = []

        def flush() -> None:
            nonlocal restored_n, gone
            if guard is not None:
                guard()
            ids = [doc_id for doc_id, _ in batch]
            current = {bson.encode({"i": d["_id"]}): raw_bytes(d)
                       for d in live.find({"_id": {"$in": ids}})}
            plain, replace = [], []
            for doc_id, priors in batch:
                cur = current.get(bson.encode({"i": doc_id}))
                if cur is None:
                    gone += 1
                    continue
                target = apply_priors(cur, priors)
                if target == cur:
                    continue
                restored_n += 1
                change = diff(cur, decode(target))
                if change is not None and change.new == target:
                    plain.append(UpdateOne({"_id": doc_id}, change.update_document()))
                else:  # a field goes back to a place $set cannot put it: replace the doc
                    replace.append((doc_id, cur, priors))
            if plain:
                bulk_write(live, plain, statement_limit)
            if replace:
                _replace_unchanged(live, replace, statement_limit)
            batch.clear()

        for item in groups:
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        return restored_n, gone


def _replace_unchanged(live, items: list[tuple[Any, bytes, list[Prior]]], limit: int) -> None:
    """Replace each document by its restored version only if it is still what was read (a
    write made meanwhile is read again and kept); servers without ``$expr`` replace by
    ``_id``."""
    def request(doc_id, cur: bytes, priors: list[Prior], guarded: bool) -> ReplaceOne:
        query: dict[str, Any] = {"_id": doc_id}
        if guarded:
            query["$expr"] = {"$eq": ["$$ROOT", {"$literal": RawBSONDocument(cur, RAW)}]}
        return ReplaceOne(query, RawBSONDocument(apply_priors(cur, priors), RAW))

    try:
        for _attempt in range(5):
            bulk_write(live, [request(*item, True) for item in items], limit, ordered=True)
            now = {bson.encode({"i": d["_id"]}): raw_bytes(d)
                   for d in live.find({"_id": {"$in": [d for d, _, _ in items]}})}
            pending = []
            for doc_id, _cur, priors in items:
                got = now.get(bson.encode({"i": doc_id}))
                if got is not None and apply_priors(got, priors) != got:
                    pending.append((doc_id, got, priors))
            items = pending
            if not items:
                return
        raise RewriteError(f"{live.name}: {len(items)} documents kept changing while they "
                           "were being restored; stop the application's writers and run again")
    except OperationFailure as exc:
        if exc.code != NOT_IMPLEMENTED and "not implemented" not in str(exc):
            raise
        bulk_write(live, [request(*item, False) for item in items], limit)
