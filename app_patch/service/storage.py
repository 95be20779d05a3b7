"""Database access for the web layer: sessions, messages, ``file_uploads`` and the GridFS buckets.

Every lookup that can reveal a file or a session takes the caller's user id and filters on
it in the query itself, so another user's data and missing data look the same to callers.
:class:`ChatStore` owns every query of the web layer: the routes, history, uploads and the
thumbnail service call its named methods and never the collections.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from bson import ObjectId
from gridfs import NoFile
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import AutoReconnect, NetworkTimeout, PyMongoError

from app_patch.service.driver import DRIVER, AsyncDriver, GridOut

T = TypeVar("T")
THUMB_BUCKET = "thumbnails"
#: One document per upload being written: what to remove if it never finishes.
PENDING = "file_uploads_pending"
#: An upload journal entry older than this is abandoned (its process died or lost the server).
ORPHAN_GRACE = dt.timedelta(minutes=15)
# Large enough that one reply carries a whole page or a whole $in answer (the server still
# caps a batch at 16 MiB): a fixed number of round trips instead of one getMore per 101 docs.
ONE_BATCH = 100_000
#: The message fields a history entry is made of.
HISTORY_FIELDS = dict.fromkeys(
    ("role", "content", "created_at", "file_ids", "has_files", "session_id"), 1
)


#: Attempts of one database step before a transient error is given up on.
RETRIES = 6
_TRANSIENT_LABELS = ("TransientTransactionError", "RetryableWriteError")
#: FerretDB's SQLite backend refuses a write while another holds the lock.
_TRANSIENT_TEXT = ("database is locked", "SQLITE_BUSY", "database table is locked")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a server error that the same request may not meet again: MongoDB's
    transient labels, FerretDB's SQLITE_BUSY, a dropped connection."""
    if not isinstance(exc, PyMongoError):
        return False
    if isinstance(exc, AutoReconnect | NetworkTimeout):
        return True
    if any(exc.has_error_label(label) for label in _TRANSIENT_LABELS):
        return True
    return any(text in str(exc) for text in _TRANSIENT_TEXT)


class Busy(Exception):
    """A step kept meeting transient errors; ``str()`` is one line for the log and client."""


async def retry(step: Callable[[], Awaitable[T]], what: str) -> T:
    """``await step()``, again after a transient error (jittered backoff, :data:`RETRIES`
    attempts); other errors pass through. Steps must be idempotent."""
    for attempt in range(RETRIES):
        try:
            return await step()
        except PyMongoError as exc:
            if not is_transient(exc):
                raise
            if attempt == RETRIES - 1:
                raise Busy(f"{what}: the database stayed busy ({' '.join(str(exc).split())[:120]})") from None
            await asyncio.sleep(0.02 * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


def object_id(value: str) -> ObjectId | None:
    """``value`` as an ObjectId when it is a 24-hex id (either case), else None (callers
    answer 404)."""
    if isinstance(value, str) and len(value) == 24 and ObjectId.is_valid(value):
        return ObjectId(value)
    return None


def normal_id(value: str) -> str | None:
    """The canonical spelling of a 24-hex id (lowercase, as ``str(ObjectId)`` and the
    stored ``file_ids``/``file_id``/``message_id`` strings have it), else None.

    Every id that arrives from a client goes through this before it is compared with stored
    strings: "ABC..." and "abc..." name the same GridFS file, and matching one spelling
    while deleting by the other would leave rows, links and thumbnails behind.
    """
    oid = object_id(value)
    return str(oid) if oid is not None else None


def utcnow() -> dt.datetime:
    """Naive UTC now, millisecond precision, the way the service stores times."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class FileRecord:
    """A file the caller may access: its ``file_uploads`` row, or GridFS metadata for orphans."""

    file_id: str
    oid: ObjectId
    name: str
    mime: str
    size: int | None
    is_image: bool | None
    row: dict[str, Any] | None


class ChatStore:
    """The collections and buckets of one database, behind user-scoped operations."""

    def __init__(self, db: Any, driver: AsyncDriver = DRIVER) -> None:
        self.db = db
        self.driver = driver  # the one that made ``db``
        self.sessions = db["chat_sessions"]
        self.messages = db["chat_messages"]
        self.uploads = db["file_uploads"]
        self.fs_files = db["fs.files"]
        self.thumb_files = db[f"{THUMB_BUCKET}.files"]
        self.fs = driver.bucket(db)
        self.thumbs = driver.bucket(db, bucket_name=THUMB_BUCKET)
        self._message_locks: dict[ObjectId, list[Any]] = {}

    async def ensure_indexes(self) -> None:
        """Create the thumbnail-cache index the app relies on (idempotent, same name as the
        index revision's so both can run in either order)."""
        await self.thumb_files.create_index([("filename", ASCENDING)], name="thumb_key")

    # -- sessions and messages -------------------------------------------------------------

    async def owns_session(self, session_id: str, user_id: str) -> bool:
        """True when ``session_id`` belongs to ``user_id``.

        Sessions without a ``chat_sessions`` row (seen in old deployments) count as owned when
        the user has messages in them. Someone else's session costs that second query too,
        so it takes as long to refuse as a session that does not exist.
        """
        row = await self.sessions.find_one({"session_id": session_id}, {"user_id": 1})
        if row is not None and row.get("user_id") == user_id:
            return True
        msg = await self.messages.find_one(
            {"session_id": session_id, "user_id": user_id}, {"_id": 1}
        )
        return row is None and msg is not None

    @asynccontextmanager
    async def message_writes(self, message_ids: Iterable[ObjectId]) -> AsyncIterator[None]:
        """Serialise this process's updates of the messages ``message_ids``.

        The updates themselves are atomic operators (``$push``, ``$pull``), which is enough on
        MongoDB. FerretDB v1 applies them as read-then-write-the-whole-document, so two at once
        on one message lose one of them (measured: ten parallel ``$pull`` leave seven ids);
        this lock closes that within one process. Locks are taken in id order: no deadlock.
        """
        keys = sorted(set(message_ids), key=str)
        entries = [self._message_locks.setdefault(k, [asyncio.Lock(), 0]) for k in keys]
        for entry in entries:
            entry[1] += 1
        try:
            async with AsyncExitStack() as stack:
                for entry in entries:
                    await stack.enter_async_context(entry[0])
                yield
        finally:
            for key, entry in zip(keys, entries, strict=True):
                entry[1] -= 1
                if entry[1] == 0:
                    self._message_locks.pop(key, None)

    async def session_row(self, session_id: str, user_id: str) -> dict[str, Any] | None:
        """The caller's ``chat_sessions`` row for ``session_id``."""
        return await self.sessions.find_one({"session_id": session_id, "user_id": user_id})

    async def user_message(self, message_id: str, user_id: str) -> dict[str, Any] | None:
        """The caller's message ``message_id`` (any role), or None."""
        oid = object_id(message_id)
        if oid is None:
            return None
        return await self.messages.find_one({"_id": oid, "user_id": user_id})

    async def first_session_message(self, session_id: str, user_id: str) -> dict[str, Any] | None:
        """Any one of the caller's messages in ``session_id`` (for a session without a row)."""
        return await self.messages.find_one({"session_id": session_id, "user_id": user_id})

    async def sessions_of(self, user_id: str) -> list[dict[str, Any]]:
        """The caller's ``chat_sessions`` rows (``session_id`` and ``topic`` only)."""
        cursor = self.sessions.find({"user_id": user_id}, {"session_id": 1, "topic": 1})
        return await cursor.to_list(None)

    async def upload_counts(self, user_id: str) -> dict[str, int]:
        """How many uploads the caller has in each session (one aggregation)."""
        pipeline = [
            {"$match": {"user_id": user_id}},
            {"$group": {"_id": "$session_id", "n": {"$sum": 1}}},
        ]
        counts: dict[str, int] = {}
        async for row in await self.driver.aggregate(self.uploads, pipeline):
            counts[str(row["_id"])] = int(row["n"])
        return counts

    # -- history ---------------------------------------------------------------------------
    # ``before`` is the paging condition of a history request (see history.py), without the
    # session and user: those are added here, so no history query can leave out the user.

    @staticmethod
    def _history_filter(
        session_id: str, user_id: str, before: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {"session_id": session_id, "user_id": user_id, **(before or {})}

    async def session_message_time(
        self, oid: ObjectId, session_id: str, user_id: str
    ) -> dict[str, Any] | None:
        """The caller's message ``oid`` of ``session_id`` (its ``created_at`` only), or None."""
        return await self.messages.find_one(
            {"_id": oid, "session_id": session_id, "user_id": user_id}, {"created_at": 1}
        )

    async def history_newest_first(
        self, session_id: str, user_id: str, before: dict[str, Any] | None, limit: int | None
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` (None: all) of the caller's messages of a session, newest first,
        in one reply batch."""
        found = self.messages.find(
            self._history_filter(session_id, user_id, before), HISTORY_FIELDS
        ).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        if limit is None:
            return await found.batch_size(ONE_BATCH).to_list(None)
        return await found.limit(limit).batch_size(limit).to_list(None)

    def history_cursor(
        self, session_id: str, user_id: str, before: dict[str, Any] | None, batch: int
    ) -> Any:
        """One cursor over the caller's messages of a session, oldest first, ``batch``
        messages a reply (iterate it with ``async for``)."""
        found = self.messages.find(
            self._history_filter(session_id, user_id, before), HISTORY_FIELDS
        ).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        return found.batch_size(batch)

    async def messages_listing(
        self, session_id: str, user_id: str, before: dict[str, Any] | None, file_ids: list[str]
    ) -> list[dict[str, Any]]:
        """The caller's messages of a session (within ``before``) that list any of
        ``file_ids`` (their ``file_ids`` only), in one ``$in`` query."""
        query = {**self._history_filter(session_id, user_id, before), "file_ids": {"$in": file_ids}}
        return await self.messages.find(query, {"file_ids": 1}).to_list(None)

    # -- uploads ---------------------------------------------------------------------------

    async def find_file(self, file_id: str, user_id: str) -> FileRecord | None:
        """The file ``file_id`` if the caller may access it, else None.

        Access comes from the caller's ``file_uploads`` row; GridFS files that have no row
        (an untidy case of old deployments) are the caller's when their metadata says so.
        """
        oid = object_id(file_id)
        if oid is None:
            return None
        file_id = str(oid)  # canonical spelling: the record carries it to every later match
        # Every row of the id, in one query run to its end: a find_one would stop at someone
        # else's row but scan the whole collection for a missing id (FerretDB has no index
        # on file_id), and the time would tell which. Ids are unique, so this is 0 or 1 row.
        rows = await retry(
            lambda: self.uploads.find({"file_id": file_id}).batch_size(ONE_BATCH).to_list(None),
            "reading the upload row",
        )
        row = next((r for r in rows if r.get("user_id") == user_id), None)
        if row is not None:
            return FileRecord(
                file_id=file_id,
                oid=oid,
                name=str(row.get("original_name") or ""),
                mime=str(row.get("mime_type") or "application/octet-stream"),
                size=row.get("file_size"),
                is_image=row.get("is_image"),
                row=row,
            )
        # Asked even when the row is someone else's: their file and a missing id then cost
        # the same queries, so response times do not tell whether the file exists.
        doc = await retry(
            lambda: self.fs_files.find_one({"_id": oid, "metadata.user_id": user_id}),
            "reading the file",
        )
        if rows or doc is None:
            return None  # someone else's upload: same answer as a missing one
        meta = doc.get("metadata") or {}
        return FileRecord(
            file_id=file_id,
            oid=oid,
            name=str(meta.get("original_name") or doc.get("filename") or ""),
            mime=str(doc.get("contentType") or "application/octet-stream"),
            size=doc.get("length"),
            is_image=None,
            row=None,
        )

    async def open_file(self, oid: ObjectId) -> GridOut | None:
        """Open the GridFS file for streaming (one query for its files document)."""
        try:
            return await retry(lambda: self.fs.open_download_stream(oid), "opening the file")
        except NoFile:
            return None

    async def file_exists(self, oid: ObjectId) -> bool:
        """Whether the GridFS files document of ``oid`` is (still) there."""
        found = await retry(lambda: self.fs_files.find_one({"_id": oid}, {"_id": 1}), "reading")
        return found is not None

    async def count_chunks(self, oid: ObjectId) -> int:
        """How many GridFS chunks ``oid`` has (one query; ``files_id_1_n_1`` covers it)."""
        return await self.db["fs.chunks"].count_documents({"files_id": oid})

    async def uploads_for_session(self, session_id: str, user_id: str) -> list[dict[str, Any]]:
        """The caller's uploads in a session, oldest first (as the original listed them)."""
        cursor = self.uploads.find({"session_id": session_id, "user_id": user_id})
        cursor = cursor.sort([("uploaded_at", ASCENDING), ("_id", ASCENDING)])
        return await cursor.batch_size(ONE_BATCH).to_list(None)

    async def uploads_for_message(
        self, message_id: str, file_ids: Iterable[str], user_id: str
    ) -> list[dict[str, Any]]:
        """The caller's uploads linked to a message by ``message_id`` or listed in its file_ids."""
        ids = [f for f in file_ids if isinstance(f, str)]
        query: dict[str, Any] = {
            "user_id": user_id,
            "$or": [{"message_id": message_id}, {"file_id": {"$in": ids}}],
        }
        cursor = self.uploads.find(query).sort([("uploaded_at", ASCENDING), ("_id", ASCENDING)])
        return await cursor.batch_size(ONE_BATCH).to_list(None)

    async def uploads_by_ids(
        self, file_ids: list[str], message_ids: list[str], user_id: str
    ) -> list[dict[str, Any]]:
        """One ``$in`` query for the caller's uploads named by id or linked to any message.

        The ``message_id`` branch keeps pre-migration data (rows linked but not listed in the
        message) visible; after the migration both branches agree.
        """
        if not file_ids and not message_ids:
            return []
        query: dict[str, Any] = {
            "user_id": user_id,
            "$or": [{"file_id": {"$in": file_ids}}, {"message_id": {"$in": message_ids}}],
        }
        projection = {
            "file_id": 1,
            "original_name": 1,
            "mime_type": 1,
            "file_size": 1,
            "is_image": 1,
            "message_id": 1,
            "uploaded_at": 1,
            "file_missing": 1,
        }
        cursor = self.uploads.find(query, projection).batch_size(ONE_BATCH)
        return await cursor.to_list(None)

    async def orphan_files(self, oids: list[ObjectId], user_id: str) -> list[dict[str, Any]]:
        """GridFS files documents the caller owns by metadata (files listed with no row)."""
        if not oids:
            return []
        cursor = self.fs_files.find({"_id": {"$in": oids}, "metadata.user_id": user_id})
        return await cursor.batch_size(ONE_BATCH).to_list(None)

    async def first_chunks(self, oids: list[ObjectId]) -> dict[ObjectId, bytes]:
        """The first GridFS chunk of each file, in one query (to sniff files with no row)."""
        if not oids:
            return {}
        cursor = self.db["fs.chunks"].find({"files_id": {"$in": oids}, "n": 0})
        return {
            c["files_id"]: bytes(c["data"])
            for c in await cursor.batch_size(ONE_BATCH).to_list(None)
        }

    # -- thumbnails cache ------------------------------------------------------------------

    async def open_thumbnail(self, key: str) -> GridOut | None:
        """The cached thumbnail stored under ``key``, newest first if a race stored two."""
        try:
            return await self.thumbs.open_download_stream_by_name(key)
        except NoFile:
            return None

    async def store_thumbnail(self, key: str, data: bytes, metadata: dict[str, Any]) -> None:
        """Cache a generated thumbnail under ``key``; a failed write leaves no chunk."""
        oid = ObjectId()
        try:
            await self.thumbs.upload_from_stream_with_id(oid, key, data, metadata=metadata)
        except BaseException:
            await asyncio.shield(self._drop_grid_files(THUMB_BUCKET, [oid]))
            raise

    # -- half-written uploads ----------------------------------------------------------------

    async def _drop_grid_files(self, bucket: str, oids: list[ObjectId]) -> None:
        """Remove GridFS files and every chunk of theirs, whether or not the files document
        was ever written (a write cut after its first chunk leaves chunks only)."""
        if not oids:
            return
        await self.db[f"{bucket}.files"].delete_many({"_id": {"$in": oids}})
        await self.db[f"{bucket}.chunks"].delete_many({"files_id": {"$in": oids}})

    async def begin_upload(
        self, user_id: str, file_oids: list[ObjectId], message_oid: ObjectId, new_message: bool
    ) -> ObjectId:
        """Journal an upload before its first write: a process killed half-way leaves this
        entry, and :meth:`sweep_abandoned` removes what it names."""
        entry = {
            "user_id": user_id,
            "file_ids": file_oids,
            "message_id": message_oid,
            "new_message": new_message,
            "started_at": utcnow(),
        }
        res = await self.db[PENDING].insert_one(entry)
        return res.inserted_id

    async def write_file(
        self, oid: ObjectId, name: str, data: bytes, metadata: dict[str, Any]
    ) -> None:
        """One GridFS file under ``oid``; a failed attempt leaves no chunk (so it can be
        retried)."""
        try:
            await self.fs.upload_from_stream_with_id(oid, name, data, metadata=metadata)
        except BaseException:
            await asyncio.shield(
                retry(lambda: self._drop_grid_files("fs", [oid]), "cleaning up")
            )
            raise

    async def insert_uploads(self, rows: list[dict[str, Any]]) -> None:
        """Store ``file_uploads`` rows (already scoped: each carries its user)."""
        await self.uploads.insert_many(rows)

    async def insert_message(self, message: dict[str, Any]) -> None:
        """Store a new chat message (it carries its user)."""
        await self.messages.insert_one(message)

    async def attach_files(
        self, message: dict[str, Any], new_ids: list[str], user_id: str
    ) -> dict[str, Any] | None:
        """Add ``new_ids`` to the caller's ``message`` atomically; the message after, or
        None when it is gone.

        ``$addToSet`` rather than writing back the list read earlier: two uploads to one
        message at the same time would otherwise each overwrite the other's ids (and a retry
        after a write that did land adds nothing twice). A pre-migration ``file_ids`` that is
        null, missing or junk becomes ``[]`` first; that update only matches while it is
        still not an array, so it cannot wipe ids added by a concurrent upload.
        """
        scope = {"_id": message["_id"], "user_id": user_id}
        async with self.message_writes([message["_id"]]):  # FerretDB: see message_writes
            if not isinstance(message.get("file_ids"), list):
                await self.messages.update_one(
                    {**scope, "file_ids": {"$not": {"$type": "array"}}},
                    {"$set": {"file_ids": []}},
                )
            return await retry(
                lambda: self.messages.find_one_and_update(
                    scope,
                    {"$addToSet": {"file_ids": {"$each": new_ids}}, "$set": {"has_files": True}},
                    return_document=ReturnDocument.AFTER,
                ),
                "linking the message",
            )

    async def end_upload(self, entry_id: ObjectId) -> None:
        """The upload answered (or was undone): its journal entry goes."""
        await self.db[PENDING].delete_one({"_id": entry_id})

    async def undo_upload(
        self, user_id: str, file_oids: list[ObjectId], message_oid: ObjectId, new_message: bool
    ) -> None:
        """Remove everything an unfinished upload may have written: GridFS files and chunks,
        upload rows, the message it created, or its ids in the message it extended.
        Idempotent, so the sweep can repeat it after a crash half-way through."""
        ids = [str(oid) for oid in file_oids]
        what = "undoing an upload"
        await retry(lambda: self._drop_grid_files("fs", file_oids), what)
        await retry(
            lambda: self.uploads.delete_many({"file_id": {"$in": ids}, "user_id": user_id}), what
        )
        scope = {"_id": message_oid, "user_id": user_id}
        async with self.message_writes([message_oid]):
            if new_message:
                await retry(lambda: self.messages.delete_one(scope), what)
            elif ids:
                await retry(
                    lambda: self.messages.update_one(scope, {"$pullAll": {"file_ids": ids}}), what
                )
                await retry(
                    lambda: self.messages.update_one(
                        {**scope, "file_ids": {"$size": 0}}, {"$set": {"has_files": False}}
                    ),
                    what,
                )

    async def sweep_abandoned(self, grace: dt.timedelta = ORPHAN_GRACE) -> int:
        """Undo the uploads journaled more than ``grace`` ago and never finished (a killed
        process); return how many."""
        cutoff = utcnow() - grace
        cursor = self.db[PENDING].find({"started_at": {"$lte": cutoff}})
        done = 0
        for entry in await cursor.to_list(None):
            if entry.get("kind") == "delete":
                oids = [o for o in entry.get("file_ids") or [] if isinstance(o, ObjectId)]
                for oid in oids:
                    await self.finish_delete(oid, str(oid), str(entry.get("user_id")))
                await self.end_upload(entry["_id"])
                done += 1
                continue
            await self.undo_upload(
                str(entry.get("user_id")),
                [o for o in entry.get("file_ids") or [] if isinstance(o, ObjectId)],
                entry["message_id"],
                bool(entry.get("new_message")),
            )
            await self.end_upload(entry["_id"])
            done += 1
        return done

    async def orphan_chunks(
        self, grace: dt.timedelta = ORPHAN_GRACE, bucket: str = "fs"
    ) -> dict[ObjectId, tuple[int, int]]:
        """GridFS chunks whose files document does not exist: ``files_id -> (chunks, bytes)``.

        Files started less than ``grace`` ago (by their id's time) may still be being written
        and are left out, as are files of a journaled upload (the sweep owns those). Reads
        every chunk's ``files_id`` once: a tool's job, not a request's.
        """
        cutoff = utcnow() - grace
        pipeline = [
            {"$group": {"_id": "$files_id", "n": {"$sum": 1}, "size": {"$sum": {"$binarySize": "$data"}}}},
        ]
        found: dict[ObjectId, tuple[int, int]] = {}
        try:
            rows = await (await self.driver.aggregate(self.db[f"{bucket}.chunks"], pipeline)).to_list(None)
        except Exception:  # noqa: BLE001 - $binarySize is MongoDB 4.4+; count chunks only
            pipeline = [{"$group": {"_id": "$files_id", "n": {"$sum": 1}}}]
            rows = await (await self.driver.aggregate(self.db[f"{bucket}.chunks"], pipeline)).to_list(None)
        for row in rows:
            oid = row["_id"]
            if not isinstance(oid, ObjectId) or oid.generation_time.replace(tzinfo=None) > cutoff:
                continue
            found[oid] = (int(row.get("n", 0)), int(row.get("size", 0)))
        if not found:
            return found
        ids = list(found)
        files = self.db[f"{bucket}.files"].find({"_id": {"$in": ids}}, {"_id": 1})
        for doc in await files.to_list(None):
            found.pop(doc["_id"], None)
        pending = self.db[PENDING].find({"file_ids": {"$in": list(found)}}, {"file_ids": 1})
        for entry in await pending.to_list(None):
            for oid in entry.get("file_ids") or []:
                found.pop(oid, None)
        return found

    async def remove_orphan_chunks(self, oids: list[ObjectId], bucket: str = "fs") -> int:
        """Delete the chunks of ``oids`` (files without a files document); return how many."""
        if not oids:
            return 0
        res = await self.db[f"{bucket}.chunks"].delete_many({"files_id": {"$in": oids}})
        return res.deleted_count

    async def delete_thumbnails(self, file_id: str) -> int:
        """Remove every cached thumbnail of ``file_id``; return how many.

        Found by ``metadata.file_id`` or by the ``"{file_id}_"`` key prefix (thumbnails written
        without metadata, or by another version of the pipeline, still go).
        """
        query = {
            "$or": [
                {"metadata.file_id": file_id},
                {"filename": {"$regex": f"^{re.escape(file_id)}_"}},
            ]
        }
        thumbs = self.thumb_files.find(query, {"_id": 1})
        thumb_ids = [t["_id"] for t in await thumbs.to_list(None)]
        if not thumb_ids:
            return 0
        # Files documents first, as GridFS deletes: a reader then never finds a thumbnail
        # whose chunks are already gone.
        res = await self.thumb_files.delete_many({"_id": {"$in": thumb_ids}})
        await self.db[f"{THUMB_BUCKET}.chunks"].delete_many({"files_id": {"$in": thumb_ids}})
        return res.deleted_count

    # -- deletion --------------------------------------------------------------------------

    async def delete_file(self, record: FileRecord, user_id: str) -> dict[str, int]:
        """Remove a file everywhere: bytes, cached thumbnails, its upload row, message links.

        Journaled first, every step retried on transient errors (FerretDB's SQLITE_BUSY under
        concurrent writes) and idempotent: a delete stopped half-way (an error past the
        retries, a killed process) is finished by the next sweep, so row, link and file go
        together. The bytes go first (a thumbnail generation racing with this checks them
        after it stores, see :mod:`app_patch.service.files`). Message links are removed with
        ``$pullAll`` and ``has_files`` cleared only where ``file_ids`` is then empty, each an
        atomic update (and under :meth:`message_writes`), so concurrent deletes and uploads
        on one message never undo each other.
        """
        entry = {"kind": "delete", "file_id": record.file_id, "user_id": user_id,
                 "file_ids": [record.oid], "started_at": utcnow()}
        res = await retry(lambda: self.db[PENDING].insert_one(dict(entry)), "journaling the delete")
        removed = await self.finish_delete(record.oid, record.file_id, user_id)
        await retry(lambda: self.end_upload(res.inserted_id), "ending the delete")
        return removed

    async def finish_delete(self, oid: ObjectId, file_id: str, user_id: str) -> dict[str, int]:
        """The steps of :meth:`delete_file` (each retried; all idempotent)."""
        removed = {"bytes": 0, "thumbnails": 0, "uploads": 0, "messages": 0}

        async def drop_bytes() -> int:
            res = await self.fs_files.delete_one({"_id": oid})
            await self.db["fs.chunks"].delete_many({"files_id": oid})
            return res.deleted_count

        removed["bytes"] = await retry(drop_bytes, "deleting the file")
        removed["thumbnails"] = await retry(
            lambda: self.delete_thumbnails(file_id), "deleting thumbnails"
        )
        res = await retry(
            lambda: self.uploads.delete_many({"file_id": file_id, "user_id": user_id}),
            "deleting the upload row",
        )
        removed["uploads"] = res.deleted_count
        found = await retry(
            lambda: self.messages.find(
                {"file_ids": file_id, "user_id": user_id}, {"_id": 1}
            ).to_list(None),
            "finding the message",
        )
        linked = [m["_id"] for m in found]
        if linked:
            async with self.message_writes(linked):
                res = await retry(
                    lambda: self.messages.update_many(
                        {"_id": {"$in": linked}, "user_id": user_id},
                        {"$pullAll": {"file_ids": [file_id]}},
                    ),
                    "unlinking the message",
                )
                removed["messages"] = res.modified_count
                await retry(
                    lambda: self.messages.update_many(
                        {"_id": {"$in": linked}, "user_id": user_id, "file_ids": {"$size": 0}},
                        {"$set": {"has_files": False}},
                    ),
                    "unlinking the message",
                )
        return removed
