"""``POST /files``: accept attachments, check what they really are, store them with their message.

Two request shapes are accepted: ``multipart/form-data`` (``session_id``, optional ``content``
and ``message_id``, one or more file parts) and the Flowise-style JSON body
``{"session_id", "content", "uploads": [{"data": base64, "type": "file", "name", "mime"}]}``.

Every file is checked before anything is written: the body is cut off past the configured
size (413), the type is sniffed from the bytes (the client's label is only kept as
``claimed_mime_type``), images must decode within the pixel budget, and types a browser would
execute (HTML, SVG, XML) are refused (415). Then the bytes go to GridFS, one ``file_uploads``
row per file (post-migration fields included), and the user message lists them in
``file_ids``. A failure half-way removes what was written (there are no transactions).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from app_patch import sniff, thumbnails
from app_patch.history import upload_entry
from app_patch.settings import Settings
from app_patch.storage import ChatStore, utcnow

ACTIVE_CONTENT = frozenset({sniff.HTML, sniff.SVG, sniff.XML})
_FORM_OVERHEAD = 1024 * 1024  # headers, boundaries and text fields of one request
_READ = 64 * 1024


class FlowiseUpload(BaseModel):
    """One element of the Flowise ``uploads`` list."""

    model_config = ConfigDict(extra="ignore")
    data: str = Field(description="base64, optionally as a data: URL")
    type: str = Field("file", description="only 'file' is accepted here")
    name: str = ""
    mime: str = ""


class FlowiseUploadBody(BaseModel):
    """The JSON body of ``POST /files``."""

    model_config = ConfigDict(extra="ignore")
    session_id: str = Field(min_length=1)
    content: str = ""
    message_id: str | None = None
    uploads: list[FlowiseUpload] = Field(min_length=1)


@dataclass
class IncomingFile:
    """A received file, validated."""

    name: str
    claimed: str
    data: bytes
    mime: str = sniff.OCTET
    is_image: bool = False
    width: int | None = None
    height: int | None = None


class _BodyTooLarge(Exception):
    pass


def request_limit(settings: Settings) -> int:
    """Largest body accepted: every file at the limit, base64-inflated, plus form overhead."""
    return settings.max_files_per_upload * (settings.max_upload_bytes * 4 // 3 + 4) + _FORM_OVERHEAD


def _limited(request: Request, limit: int) -> Request:
    """A copy of ``request`` whose body stream fails once more than ``limit`` bytes arrive."""
    received = 0
    receive = request.receive

    async def limited_receive() -> dict[str, Any]:
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge
        return message

    return Request(request.scope, limited_receive)


def _too_large(what: str, size: int, limit: int) -> HTTPException:
    return HTTPException(413, f"{what} is {size} bytes; the limit is {limit} bytes")


async def read_request(
    request: Request, settings: Settings
) -> tuple[dict[str, str], list[IncomingFile]]:
    """The text fields and the files of a multipart or JSON upload request."""
    limit = request_limit(settings)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large("The request body", int(declared), limit)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body_request = _limited(request, limit)
    try:
        if ctype == "multipart/form-data":
            return await _read_multipart(body_request, settings)
        if ctype == "application/json":
            return _read_json(await body_request.body(), settings)
    except _BodyTooLarge:
        raise HTTPException(413, f"The request body exceeds {limit} bytes") from None
    raise HTTPException(415, "Send multipart/form-data or an application/json Flowise uploads body")


async def _read_multipart(
    request: Request, settings: Settings
) -> tuple[dict[str, str], list[IncomingFile]]:
    try:
        form = await request.form(
            max_files=settings.max_files_per_upload, max_fields=20, max_part_size=_FORM_OVERHEAD
        )
    except _BodyTooLarge:
        raise
    except Exception as exc:  # noqa: BLE001 - the parser's errors are the client's fault
        raise HTTPException(400, f"Malformed multipart body: {exc}") from None
    try:
        fields: dict[str, str] = {}
        files: list[IncomingFile] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await _read_part(value, settings.max_upload_bytes)
                files.append(IncomingFile(value.filename or "", value.content_type or "", data))
            else:
                fields[key] = value
        return fields, files
    finally:
        await form.close()


async def _read_part(part: UploadFile, limit: int) -> bytes:
    pieces, total = [], 0
    while chunk := await part.read(_READ):
        total += len(chunk)
        if total > limit:
            raise _too_large(f"File {part.filename!r}", total, limit)
        pieces.append(chunk)
    return b"".join(pieces)


def _read_json(body: bytes, settings: Settings) -> tuple[dict[str, str], list[IncomingFile]]:
    try:
        parsed = FlowiseUploadBody.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(400, "The body is not valid JSON") from None
    except ValidationError as exc:
        # Report where and what, never echo the input back (it may be megabytes of base64).
        detail = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise HTTPException(422, detail) from None
    if len(parsed.uploads) > settings.max_files_per_upload:
        raise HTTPException(413, f"At most {settings.max_files_per_upload} files per request")
    files = []
    for i, up in enumerate(parsed.uploads):
        if up.type != "file":
            raise HTTPException(
                422, f"uploads[{i}].type={up.type!r}: only 'file' uploads are stored"
            )
        files.append(IncomingFile(up.name, up.mime, _decode_base64(up.data, i, settings)))
    fields = {"session_id": parsed.session_id, "content": parsed.content}
    if parsed.message_id:
        fields["message_id"] = parsed.message_id
    return fields, files


def _decode_base64(data: str, index: int, settings: Settings) -> bytes:
    payload = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
    payload = "".join(payload.split())
    estimated = len(payload) * 3 // 4
    if estimated > settings.max_upload_bytes + 2:
        raise _too_large(f"uploads[{index}]", estimated, settings.max_upload_bytes)
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, f"uploads[{index}].data is not valid base64") from None
    if len(raw) > settings.max_upload_bytes:
        raise _too_large(f"uploads[{index}]", len(raw), settings.max_upload_bytes)
    return raw


async def validate_file(item: IncomingFile, settings: Settings) -> None:
    """Sniff ``item`` and, for images, decode it; raise 413/415/422 with the reason."""
    label = repr(item.name or "upload")
    if not item.data:
        raise HTTPException(422, f"File {label} is empty")
    item.mime = sniff.sniff_mime(item.data[:8192])
    if item.mime in ACTIVE_CONTENT:
        raise HTTPException(
            415, f"File {label} is {item.mime}, which browsers execute; such files are not accepted"
        )
    if not sniff.is_image_mime(item.mime):
        return
    try:
        # on the thumbnail pool: verifying decodes, so it shares that concurrency cap
        _, width, height = await thumbnails.verify_image_async(
            item.data, max_pixels=settings.thumbnail_max_pixels
        )
    except thumbnails.ThumbnailError as exc:
        # 422 for corrupt/truncated images and for pixel bombs (the byte size was fine).
        raise HTTPException(exc.http_status, f"Image {label} is refused: {exc.reason}") from None
    item.is_image, item.width, item.height = True, width, height


async def _session_chatflow(store: ChatStore, session_id: str, user_id: str) -> str:
    """The session's chatflow id if the caller owns it; 404 otherwise."""
    row = await store.session_row(session_id, user_id)
    if row is not None:
        return str(row.get("chatflow_id") or "")
    if not await store.owns_session(session_id, user_id):
        raise HTTPException(404, "Chat session not found")
    msg = await store.messages.find_one({"session_id": session_id, "user_id": user_id})
    return str((msg or {}).get("chatflow_id") or "")


async def store_upload(
    store: ChatStore,
    settings: Settings,
    user_id: str,
    fields: dict[str, str],
    files: list[IncomingFile],
) -> dict[str, Any]:
    """Validate and write ``files``; return the message in the history format."""
    session_id = (fields.get("session_id") or "").strip()
    if not session_id:
        raise HTTPException(422, "session_id is required")
    if not files:
        raise HTTPException(422, "No file in the request")
    if len(files) > settings.max_files_per_upload:
        raise HTTPException(413, f"At most {settings.max_files_per_upload} files per request")
    for item in files:
        await validate_file(item, settings)
    chatflow_id = await _session_chatflow(store, session_id, user_id)

    existing = None
    if fields.get("message_id"):
        existing = await store.user_message(fields["message_id"], user_id)
        if existing is None or existing.get("session_id") != session_id:
            raise HTTPException(404, "Message not found")
        if existing.get("role") != "user":
            raise HTTPException(422, "Files can only be attached to user messages")
    message_oid = existing["_id"] if existing else ObjectId()
    now = utcnow()
    written: list[ObjectId] = []
    try:
        rows = []
        for item in files:
            meta = {
                "user_id": user_id,
                "session_id": session_id,
                "original_name": item.name,
                "message_id": str(message_oid),
                "mime_type": item.mime,
            }
            oid = await store.fs.upload_from_stream(item.name or "upload", item.data, metadata=meta)
            written.append(oid)
            rows.append(_upload_row(item, oid, message_oid, session_id, user_id, chatflow_id, now))
        await store.uploads.insert_many(rows)
        new_ids = [str(oid) for oid in written]
        if existing is not None:
            old = existing.get("file_ids")
            file_ids = [f for f in old if isinstance(f, str)] if isinstance(old, list) else []
            file_ids += new_ids
            await store.messages.update_one(
                {"_id": message_oid, "user_id": user_id},
                {"$set": {"file_ids": file_ids, "has_files": True}},
            )
            message = {**existing, "file_ids": file_ids}
        else:
            message = {
                "_id": message_oid,
                "chatflow_id": chatflow_id,
                "session_id": session_id,
                "user_id": user_id,
                "role": "user",
                "content": fields.get("content") or "",
                "file_ids": new_ids,
                "has_files": True,
                "created_at": now,
            }
            await store.messages.insert_one(message)
    except BaseException:
        await _undo(store, written, user_id)
        raise
    uploads = [
        upload_entry(str(oid), item.name, item.mime, len(item.data), item.is_image)
        for oid, item in zip(written, files, strict=True)
    ]
    created = message.get("created_at")
    return {
        "id": str(message_oid),
        "session_id": session_id,
        "role": message.get("role"),
        "content": message.get("content"),
        "created_at": created.isoformat() if created else None,
        "file_ids": message["file_ids"],
        "has_files": True,
        "uploads": uploads,
    }


def _upload_row(
    item: IncomingFile,
    oid: ObjectId,
    message_oid: ObjectId,
    session_id: str,
    user_id: str,
    chatflow_id: str,
    now: Any,
) -> dict[str, Any]:
    """A ``file_uploads`` row in the post-migration shape (SCHEMA.md)."""
    row: dict[str, Any] = {
        "file_id": str(oid),
        "original_name": item.name,
        "mime_type": item.mime,
        "message_id": str(message_oid),
        "session_id": session_id,
        "user_id": user_id,
        "chatflow_id": chatflow_id,
        "file_size": len(item.data),
        "upload_type": "file",
        "file_hash": hashlib.sha256(item.data).hexdigest(),
        "processed": True,
        "processing_error": None,
        "uploaded_at": now,
        "processed_at": now,
        "metadata": {"width": item.width, "height": item.height} if item.is_image else None,
        "is_image": item.is_image,
        "file_missing": False,
    }
    claimed = sniff.normalise_mime(item.claimed) if item.claimed else ""
    if claimed and claimed != item.mime:
        row["claimed_mime_type"] = item.claimed
    return row


async def _undo(store: ChatStore, written: list[ObjectId], user_id: str) -> None:
    """Best-effort removal of a half-written upload (no transactions on the target servers)."""
    ids = [str(oid) for oid in written]
    cleanup: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.uploads.delete_many({"file_id": {"$in": ids}, "user_id": user_id}),
    ]
    cleanup += [lambda oid=oid: store.fs.delete(oid) for oid in written]
    for step in cleanup:
        try:
            await step()
        except Exception:  # noqa: BLE001 - keep undoing; the original error is re-raised
            pass
