"""Prior values: what a revision's data helpers changed, recorded before they write.

Each (revision, collection) has a side collection ``<undo>_<revision>-<collection>`` with
one record per document and helper call (``seq``, the call's number within the revision):

    {_id: {d: <document _id>, s: <seq>}, p: {<original elements of changed and removed
     fields>}, a: [<fields the change added>], k: [<original field order, if it removed any>],
     w: {<changed or added field>: <digest of the element the change wrote>}}

The ``p`` elements are the stored bytes, never re-encoded, so any BSON value comes back
exactly. A record is only ever inserted, never updated: a re-run inserts the same ``_id``
and the first record stands. Restoring applies a document's records newest call first, so
the value from before the revision's first change wins, and fields added since by others
are left alone. A field is put back only while it still holds what the change wrote (its
``w`` digest; a removed field: while it is still absent): one the application has written
since keeps the application's value. Insert-only records and a sorted merge keep this linear on servers where a
write by ``_id`` scans the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.binary import Binary
from bson.raw_bson import RawBSONDocument
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from mongrate.errors import RewriteError
from mongrate.mongo.codec import EXACT, RAW, decode, only_duplicate_key_errors, raw_bytes
from mongrate.mongo.conditional import Pending, write_if_unchanged
from mongrate.mongo.order import bson_order_key
from mongrate.mongo.rawdoc import Change, diff, document, elements, renamed, restored
from mongrate.names import side_name, side_owner  # noqa: F401 - the names live there

_EMBEDDED_DOC = 0x03
#: rounds of conditional writes before a batch is given up on (documents still changing)
WRITE_ATTEMPTS = 6


def _embedded(name: str, raw: bytes, kind: int = 0x03) -> bytes:
    return bytes([kind]) + name.encode() + b"\x00" + raw


def record_key(id_element: bytes, seq: int) -> bytes:
    """The ``_id`` (document bytes) of the record of call ``seq`` for one document."""
    return document([renamed(id_element, "d"), bson.encode({"s": seq})[4:-1]])


def record(raw_doc: bytes, seq: int, change: Change, *, known: bool = True
           ) -> RawBSONDocument:
    """The prior-value record of ``change`` (call ``seq``) to the stored ``raw_doc``.
    ``known=False``: the change's new values are not known (the server computes them), so
    a restore puts the fields back whatever they hold."""
    key = record_key(change.id_element or elements(raw_doc)["_id"], seq)
    extra: dict[str, Any] = {"a": change.absent}
    if change.keys is not None:
        extra["k"] = change.keys
    body = [_embedded("_id", key), _embedded("p", document(change.prior.values())),
            bson.encode(extra)[4:-1]]
    # always there, empty too: a record without it (update_many's server-side fallback)
    # is one that does not know what was written
    if known:
        body.append(_embedded("w", document(written_form(name, elem)
                                            for name, elem in change.set.items())))
    return RawBSONDocument(document(body), RAW)


def written_form(name: str, element: bytes) -> bytes:
    """What a record keeps of an element a change wrote (an element of ``w``): a
    subdocument whole (a restore puts it back path by path around what the application
    wrote in it since), anything else as a binary digest (enough to tell it again)."""
    if element[0] == _EMBEDDED_DOC:
        return element
    return bson.encode({name: Binary(written_digest(element))})[4:-1]


def written_digest(element: bytes) -> bytes:
    return hashlib.blake2b(element, digest_size=12).digest()


@dataclass
class Prior:
    """One record, read back."""

    doc_id: Any
    seq: int
    prior: dict[str, bytes]
    absent: list[str]
    keys: list[str] | None
    #: digests of what the change wrote; None for records that do not know it (an update
    #: the server applied without the client computing it): those fields go back always
    written: dict[str, tuple[bytes, bool]] | None = None

    @classmethod
    def read(cls, raw: RawBSONDocument) -> Prior:
        elems = elements(raw_bytes(raw))
        key = bson.decode(_value(elems["_id"]), EXACT)
        rest = decode(document(e for n, e in elems.items() if n in ("a", "k")))
        written = None
        if "w" in elems:  # a subdocument as written, or a digest (binary)
            written = {n: (e, False) if e[0] == _EMBEDDED_DOC else (_value(e)[5:], True)
                       for n, e in elements(_value(elems["w"])).items()}
        return cls(key["d"], int(key["s"]), elements(_value(elems["p"])),
                   list(rest.get("a") or ()), rest.get("k"), written)

    def still_written(self, current: Mapping[str, bytes]) -> tuple[dict[str, bytes], list[str],
                                                                    int]:
        """(prior, absent) narrowed to what still holds what the change left, and how many
        fields the application has written since (they keep its value). A subdocument the
        application wrote part of goes back path by path: the paths it wrote keep its
        value, the others get theirs back."""
        if self.written is None:
            return self.prior, self.absent, 0
        prior: dict[str, bytes] = {}
        kept = 0
        for name, elem in self.prior.items():
            now = current.get(name)
            if name not in self.written:  # removed: back while it is still absent
                if now is None:
                    prior[name] = elem
                else:
                    kept += 1
                continue
            written, dig = self.written[name]
            back, k = _put_back(elem, written, now, digest=dig)
            kept += k
            if back is not None and back != now:
                prior[name] = back
        absent = []
        for name in self.absent:  # added: removed while it holds what was written
            now = current.get(name)
            if now is None or name not in self.written:
                continue
            written, dig = self.written[name]
            back, k = _put_back(None, written, now, digest=dig)
            kept += k
            if back is None:
                absent.append(name)
            elif back != now:
                prior[name] = back
        return prior, absent, kept


def _put_back(before: bytes | None, written: bytes, now: bytes | None, *,
              digest: bool = False) -> tuple[bytes | None, int]:
    """The element to store instead of ``now`` (None: no field) to undo a change that
    wrote ``written`` (an element, or with ``digest`` a digest of one) over ``before``, and
    how many paths the application wrote since (they keep its value)."""
    if now is None:
        return None, 1 if before is not None else 0
    if digest:
        return (before, 0) if written_digest(now) == written else (now, 1)
    if now == written:
        return before, 0
    if before is not None and before[0] == written[0] == now[0] == _EMBEDDED_DOC:
        b, w, n = (elements(_value(e)) for e in (before, written, now))
        out: dict[str, bytes] = {}
        kept = 0
        for key, elem in n.items():  # the current order
            if b.get(key) == w.get(key):  # a path the change did not alter
                out[key] = elem
            elif key not in w:  # the change removed it; the application wrote it since
                out[key] = elem
                kept += 1
            else:
                back, k = _put_back(b.get(key), w[key], elem)
                kept += k
                if back is not None:
                    out[key] = back
        for key, elem in b.items():  # paths not there now
            if key in n:
                continue
            if key not in w:  # the change removed it: it comes back (at the end)
                out[key] = elem
            elif elem != w[key]:  # the change wrote it, the application removed it since
                kept += 1
        head = now[:now.index(b"\x00", 1) + 1]
        return head + document(out.values()), kept
    return now, 1


def _value(element: bytes) -> bytes:
    return element[element.index(b"\x00", 1) + 1:]


def apply_priors(current: bytes, priors: Sequence[Prior]) -> bytes:
    """``current`` with ``priors`` (one document's records) undone, newest call first."""
    return restore_counting(current, priors)[0]


def restore_counting(current: bytes, priors: Sequence[Prior]) -> tuple[bytes, int]:
    """``current`` with ``priors`` undone where the fields still hold what the changes
    wrote, and the number of fields the application wrote since (left as they are)."""
    kept = 0
    for p in sorted(priors, key=lambda p: p.seq, reverse=True):
        prior, absent, k = p.still_written(elements(current))
        kept += k
        if prior or absent:
            current = restored(current, prior, absent, p.keys)
    return current, kept


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
        #: restoring: fields the application wrote since (kept), documents it wrote while
        #: they were being restored (read again), and ones where it is unknown whose write
        #: came last (left as they are)
        self.kept = self.raced = self.unsure = 0

    def insert(self, records: list[RawBSONDocument]) -> None:
        """Insert records; ones already there (an earlier run's) keep their prior values
        and learn what this run wrote (``w``): a restore then knows the field as
        mongrate's."""
        if not records:
            return
        try:
            self.coll.insert_many(records, ordered=False)
        except BulkWriteError as exc:
            if not only_duplicate_key_errors(exc.details):
                raise
            fix = []
            for err in exc.details.get("writeErrors", ()):
                rec = records[err["index"]]
                written = elements(raw_bytes(rec)).get("w")
                if written is not None:  # merged field by field, exact bytes
                    sets = document(renamed(e, f"w.{n}")
                                    for n, e in elements(_value(written)).items())
                    fix.append(UpdateOne({"_id": rec["_id"]},
                                         {"$set": RawBSONDocument(sets, RAW)}))
            if fix:
                self.coll.bulk_write(fix, ordered=False)

    def replace(self, records: list[RawBSONDocument]) -> None:
        """Replace the records of the same ``_id``s (a change computed again because the
        application wrote its document first: the record describes the new one)."""
        if records:
            self.coll.delete_many({"_id": {"$in": [r["_id"] for r in records]}})
            self.coll.insert_many(records, ordered=False)

    def exists(self) -> bool:
        return self.name in self.db.list_collection_names(filter={"name": self.name})

    def sorted_records(self, seqs: Iterable[int] | None = None, batch_size: int = 1000):
        query = {} if seqs is None else {"_id.s": {"$in": list(seqs)}}
        return self.coll.find(query).sort("_id", 1).batch_size(batch_size)

    def _restoring(self, cur: bytes, priors: list[Prior]) -> Pending | None:
        """The conditional write restoring ``cur`` (tagged with its records and the
        fields the application wrote since), or None when there is nothing to put back.
        A field that goes back to a place ``$set`` cannot put it replaces the document,
        on the condition that every field is as read."""
        target, kept = restore_counting(cur, priors)
        if target == cur:
            self.kept += kept
            return None
        change = diff(cur, decode(target))
        if change is None:  # only the field order differs
            change = Change(target, {}, [], {}, [], None, elements(cur)["_id"])
        if change.new == target:
            return Pending(cur, change, on=[*change.set, *change.removed], tag=(priors, kept))
        change.new = target
        return Pending(cur, change, replace=True, tag=(priors, kept))

    def restore_in_place(self, *, batch_size: int, statement_limit: int,
                         seqs: Iterable[int] | None = None, skip: frozenset[int] = frozenset(),
                         guard=None, progress=None) -> tuple[int, int]:
        """Put recorded values back with one read and one bulk write per batch of
        documents (for servers where writes by ``_id`` are indexed). Each write holds only
        while the fields it puts back are as read; a document the application wrote
        meanwhile is read again. Returns (documents restored, records whose document no
        longer exists); ``kept`` counts fields left with the application's value."""
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
            plain: list[Pending] = []
            for doc_id, priors in batch:
                cur = current.get(bson.encode({"i": doc_id}))
                if cur is None:
                    gone += 1
                    continue
                item = self._restoring(cur, priors)
                if item is not None:
                    plain.append(item)
            for _attempt in range(WRITE_ATTEMPTS):
                if not plain:
                    break
                if guard is not None:
                    guard()
                out = write_if_unchanged(live, plain, statement_limit)
                for p in out.applied:
                    restored_n += 1
                    self.kept += p.tag[1]
                gone += len(out.gone)
                self.unsure += len(out.unsure)
                plain = []
                for p, cur in out.missed:  # the application wrote it meanwhile: again
                    self.raced += 1
                    item = self._restoring(cur, p.tag[0])
                    if item is not None:
                        plain.append(item)
            if plain:
                raise RewriteError(
                    f"{self.collection}: {len(plain)} documents kept changing while their "
                    f"recorded values were put back ({WRITE_ATTEMPTS} attempts); stop the "
                    "application's writers to them and run the downgrade again")
            batch.clear()

        for item in groups:
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        return restored_n, gone
