"""Chat history with attachments, in a fixed number of database round trips.

One query checks that the caller owns the session, one fetches the page of the caller's
messages (sorted by ``created_at`` then ``_id``, ``limit`` + 1 to know whether more exist),
and one ``$in`` query fetches every upload of the page, scoped to the caller. Only when a
message lists a file that has no ``file_uploads`` row do two more queries look for such files
in GridFS (owned by metadata) and sniff their first chunks. No query per message, and no
``$lookup`` (FerretDB has none).

Without ``limit`` the whole session is returned, as the original service did (its clients
never read ``has_more``). With ``limit``, pages go backwards in time: without ``before`` the
newest ``limit`` messages are returned, in time order; ``next_before`` is the cursor for the
page before them (None on the first one).

Upload entries have the keys of the original service (``session_routes.py``/``chat.py``):
only images carry ``thumbnail_url``, ``thumbnail_small`` and ``thumbnail_medium``, and
:func:`row_is_image` is also what the thumbnail endpoint asks, so every advertised thumbnail
answers 200 (a placeholder when the image cannot be rendered).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from bson import ObjectId

from app_patch.service.storage import ONE_BATCH, ChatStore, object_id
from app_patch.sniff import is_image_mime, sniff_mime

API_PREFIX = "/api/v1/chat"
_EPOCH = dt.datetime(1970, 1, 1)
# What encode_cursor writes: milliseconds (-1 for no time; at most 18 digits, far past year
# 9999) and a 24-hex id. ASCII digits only: int() also reads "١٢" and "1_0".
_CURSOR = re.compile(r"(-1|[0-9]{1,18})_([0-9a-fA-F]{24})", re.ASCII)


class SessionNotFound(LookupError):
    """The session does not exist or belongs to someone else (the API answers 404)."""


class BadCursor(ValueError):
    """The ``before`` cursor is not one this API handed out (the API answers 422)."""


def file_urls(file_id: str) -> dict[str, str]:
    """The URLs of a file in the original's format (the thumbnail ones only for images)."""
    base = f"{API_PREFIX}/files/{file_id}"
    return {
        "url": base,
        "download_url": f"{base}?download=true",
        "thumbnail_url": f"{base}/thumbnail",
        "thumbnail_small": f"{base}/thumbnail?size=100",
        "thumbnail_medium": f"{base}/thumbnail?size=300",
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else None


def upload_entry(
    file_id: str,
    name: str,
    mime: str,
    size: int | None,
    is_image: bool,
    *,
    upload_type: str = "file",
    uploaded_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """One element of a message's ``uploads``: the original's keys, in its order.

    Non-images carry no thumbnail key (a frontend tests ``if (upload.thumbnail_url)``).
    """
    urls = file_urls(file_id)
    entry = {
        "file_id": file_id,
        "name": name,
        "mime": mime,
        "size": size,
        "type": upload_type,
        "url": urls["url"],
        "download_url": urls["download_url"],
        "is_image": is_image,
        "uploaded_at": _iso(uploaded_at),
    }
    if is_image:
        entry["thumbnail_url"] = urls["thumbnail_url"]
        entry["thumbnail_small"] = urls["thumbnail_small"]
        entry["thumbnail_medium"] = urls["thumbnail_medium"]
    return entry


def row_is_image(row: dict[str, Any]) -> bool:
    """Whether a ``file_uploads`` row is shown as an image, with thumbnails.

    The migrated ``is_image`` (from the sniffed bytes), else the type; never a file whose bytes
    are gone. The thumbnail endpoint asks the same, so history and the endpoint agree.
    """
    if row.get("file_missing") is True:
        return False
    is_image = row.get("is_image")
    if isinstance(is_image, bool):
        return is_image
    return is_image_mime(str(row.get("mime_type") or "application/octet-stream"))


def upload_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """``upload_entry`` from a ``file_uploads`` row (post-migration fields, derived if absent)."""
    size = row.get("file_size")
    kind = row.get("upload_type")
    return upload_entry(
        str(row["file_id"]),
        str(row.get("original_name") or ""),
        str(row.get("mime_type") or "application/octet-stream"),
        size if isinstance(size, int) and not isinstance(size, bool) else None,
        row_is_image(row),
        upload_type=kind if isinstance(kind, str) and kind else "file",
        uploaded_at=row.get("uploaded_at"),
    )


def encode_cursor(created_at: Any, oid: ObjectId) -> str:
    """The ``before`` cursor for a message: its time in ms and its id."""
    ms = (
        int((created_at - _EPOCH).total_seconds() * 1000)
        if isinstance(created_at, dt.datetime)
        else -1
    )
    return f"{ms}_{oid}"


def _decode_cursor(before: str) -> tuple[dt.datetime | None, ObjectId] | ObjectId:
    """A cursor as (time, id), or a bare message id to be resolved by the caller."""
    oid = object_id(before)
    if oid is not None:
        return oid
    bad = BadCursor(f"'before' must be a next_before cursor or a message id, got {before[:80]!r}")
    match = _CURSOR.fullmatch(before)
    if match is None:
        raise bad
    millis, oid = int(match[1]), ObjectId(match[2])
    if millis < 0:
        return None, oid
    try:  # a time past datetime.max (year 9999) was never handed out
        return _EPOCH + dt.timedelta(milliseconds=millis), oid
    except OverflowError:
        raise bad from None


def _before_filter(when: dt.datetime | None, oid: ObjectId) -> dict[str, Any]:
    """Messages strictly before (when, oid) in (created_at, _id) order."""
    if (
        when is None
    ):  # a message without created_at sorts first: only its null-time peers precede it
        return {"created_at": None, "_id": {"$lt": oid}}
    return {
        "$or": [
            {"created_at": {"$lt": when}},
            {"created_at": when, "_id": {"$lt": oid}},
            {"created_at": None},
        ]
    }


def _listed_ids(msg: dict[str, Any]) -> list[str]:
    """A message's ``file_ids`` as a list of strings (null, absent or junk entries dropped)."""
    ids = msg.get("file_ids")
    return [f for f in ids if isinstance(f, str)] if isinstance(ids, list) else []


async def _entries(
    store: ChatStore,
    user_id: str,
    session_id: str,
    messages: list[dict[str, Any]],
    *,
    whole_session: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """History entries of ``messages`` (in their order): one ``$in`` query for their uploads,
    two more only for listed files without a row.

    ``whole_session``: the paging condition of a streamed session (``{}`` for all of it), of
    which ``messages`` are one batch. A row linked to one of them by ``message_id`` but not
    listed there may be listed by a message of another batch; such (pre-migration) rows cost
    one more query.
    """
    listed: list[str] = []
    for msg in messages:
        listed.extend(_listed_ids(msg))
    message_ids = [str(m["_id"]) for m in messages]
    rows = await store.uploads_by_ids(sorted(set(listed)), message_ids, user_id)
    by_file = {str(r["file_id"]): r for r in rows if r.get("file_id")}

    orphans: dict[str, dict[str, Any]] = {}
    unknown = [object_id(f) for f in set(listed) if f not in by_file]
    unknown_oids = [o for o in unknown if o is not None]
    if unknown_oids:  # listed files without a row: owned orphans in GridFS (rare, bounded)
        for doc in await store.orphan_files(unknown_oids, user_id):
            orphans[str(doc["_id"])] = doc
        if orphans:  # no row tells their true type: sniff their first chunks, one query
            heads = await store.first_chunks([doc["_id"] for doc in orphans.values()])
            for doc in orphans.values():
                doc["sniffed"] = sniff_mime(heads.get(doc["_id"], b""))

    listed_set = set(listed)
    if whole_session is not None:
        unlisted = sorted({str(r.get("file_id") or "") for r in rows} - listed_set - {""})
        if unlisted:
            elsewhere = await store.messages_listing(session_id, user_id, whole_session, unlisted)
            for other in elsewhere:
                listed_set.update(_listed_ids(other))
    linked_only: dict[str, list[dict[str, Any]]] = {}
    for row in rows:  # pre-migration: linked by message_id but missing from file_ids
        fid = str(row.get("file_id") or "")
        if fid and fid not in listed_set and row.get("message_id"):
            linked_only.setdefault(str(row["message_id"]), []).append(row)

    history: list[dict[str, Any]] = []
    for msg in messages:
        mid = str(msg["_id"])
        ids = _listed_ids(msg)
        extra = sorted(
            linked_only.get(mid, []), key=lambda r: (r.get("uploaded_at") or _EPOCH, r["_id"])
        )
        uploads = []
        for fid in ids:
            if fid in by_file:
                uploads.append(upload_from_row(by_file[fid]))
            elif fid in orphans:
                doc = orphans[fid]
                meta = doc.get("metadata") or {}
                name = str(meta.get("original_name") or doc.get("filename") or "")
                mime = doc["sniffed"]
                uploads.append(
                    upload_entry(
                        fid,
                        name,
                        mime,
                        doc.get("length"),
                        is_image_mime(mime),
                        uploaded_at=doc.get("uploadDate"),
                    )
                )
        uploads.extend(upload_from_row(r) for r in extra)
        file_ids = ids + [str(r["file_id"]) for r in extra]
        history.append(  # the original's keys, in its order
            {
                "id": mid,
                "role": msg.get("role"),
                "content": msg.get("content"),
                "created_at": _iso(msg.get("created_at")),
                "session_id": session_id,
                "file_ids": file_ids,
                "has_files": bool(file_ids),
                "uploads": uploads,
            }
        )
    return history


async def _history_query(store: ChatStore, user_id: str, session_id: str,
                         before: str | None) -> dict[str, Any]:
    """The paging condition of one history request (``{}``: from the end), after its
    checks: 404 for a session the user does not own, 422 for a bad ``before`` (validated
    before touching the DB). The store adds the session and the user to every query; the
    user matters when the session has no chat_sessions row: owns_session then accepts any
    user with a message in it, and only that filter keeps the others' messages out."""
    cursor = _decode_cursor(before) if before else None
    if not await store.owns_session(session_id, user_id):
        raise SessionNotFound(session_id)
    if isinstance(cursor, ObjectId):  # a bare message id: one bounded extra lookup
        anchor = await store.session_message_time(cursor, session_id, user_id)
        if anchor is None:
            raise BadCursor(f"'before' names no message of this session: {before}")
        created = anchor.get("created_at")
        return _before_filter(created if isinstance(created, dt.datetime) else None, cursor)
    if cursor is not None:
        return _before_filter(*cursor)
    return {}


async def load_history(
    store: ChatStore,
    user_id: str,
    session_id: str,
    *,
    limit: int | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    """The response body of ``GET /sessions/{session_id}/history``.

    ``limit=None``: every message (before ``before``, if given) in one reply batch.

    Raises :class:`SessionNotFound` (404) and :class:`BadCursor` (422).
    """
    paging = await _history_query(store, user_id, session_id, before)
    if limit is None:  # the whole session, as the original: one reply (up to 16 MiB)
        newest_first = await store.history_newest_first(session_id, user_id, paging, None)
        has_more = False
    else:  # one more than asked, to know whether more exist
        newest_first = await store.history_newest_first(session_id, user_id, paging, limit + 1)
        has_more = len(newest_first) > limit
        newest_first = newest_first[:limit]
    messages = list(reversed(newest_first))

    history = await _entries(store, user_id, session_id, messages)
    next_before = (
        encode_cursor(messages[0].get("created_at"), messages[0]["_id"])
        if has_more and messages
        else None
    )
    return {
        "history": history,
        "count": len(history),
        "session_id": session_id,
        "has_more": has_more,
        "next_before": next_before,
    }


#: Messages per step of a streamed history: one uploads query and one JSON chunk each.
STREAM_BATCH = 500
_JSON = {"ensure_ascii": False, "allow_nan": False, "indent": None, "separators": (",", ":")}


def _dumps(value: Any) -> bytes:
    """JSON exactly as Starlette's ``JSONResponse`` renders it."""
    return json.dumps(value, **_JSON).encode("utf-8")


async def open_history_stream(
    store: ChatStore, user_id: str, session_id: str, *, before: str | None = None
) -> AsyncIterator[bytes]:
    """The whole-session body of :func:`load_history` (``limit=None``), byte for byte, as
    chunks written while the one messages cursor is read: memory stays at one batch of
    :data:`STREAM_BATCH` messages however long the session.

    Ownership and the cursor are checked here, before the first byte (404/422 as usual);
    the returned iterator does the reading.
    """
    paging = await _history_query(store, user_id, session_id, before)
    return _history_chunks(store, user_id, session_id, paging)


async def _history_chunks(
    store: ChatStore, user_id: str, session_id: str, paging: dict[str, Any]
) -> AsyncIterator[bytes]:
    # Oldest first: the order load_history gets by reversing its newest-first page.
    found = store.history_cursor(session_id, user_id, paging, STREAM_BATCH)
    count = 0
    yield b'{"history":['
    batch: list[dict[str, Any]] = []
    async for msg in found:
        batch.append(msg)
        if len(batch) >= STREAM_BATCH:
            yield await _encode_batch(store, user_id, session_id, batch, paging, first=count == 0)
            count += len(batch)
            batch = []
    if batch:
        yield await _encode_batch(store, user_id, session_id, batch, paging, first=count == 0)
        count += len(batch)
    tail = {"count": count, "session_id": session_id, "has_more": False, "next_before": None}
    yield b"]," + _dumps(tail)[1:]


async def _encode_batch(
    store: ChatStore,
    user_id: str,
    session_id: str,
    messages: list[dict[str, Any]],
    paging: dict[str, Any],
    *,
    first: bool,
) -> bytes:
    """One batch of history entries as JSON (with the leading comma unless ``first``)."""
    entries = await _entries(store, user_id, session_id, messages, whole_session=paging)
    body = b",".join(_dumps(e) for e in entries)
    return body if first else b"," + body


__all__ = [
    "ONE_BATCH",
    "STREAM_BATCH",
    "open_history_stream",
    "BadCursor",
    "SessionNotFound",
    "load_history",
    "row_is_image",
    "upload_entry",
]
