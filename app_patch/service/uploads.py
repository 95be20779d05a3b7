"""``POST /files``: accept attachments, check what they really are, store them with their message.

Two request shapes are accepted: ``multipart/form-data`` (``session_id``, optional ``content``
and ``message_id``, one or more file parts) and the Flowise-style JSON body
``{"session_id", "content", "uploads": [{"data": base64, "type": "file", "name", "mime"}]}``.

Every file is checked before anything is written: the body is cut off past the configured
size (413), text fields must be valid UTF-8 (422), the session (and message) must be the
caller's (404) before any file is looked at, the type is sniffed from the bytes (the client's
label is only kept as ``claimed_mime_type``), images must decode within the pixel budget, and
types a browser would execute (HTML, SVG, XML) are refused (415). Then the bytes go to GridFS,
one ``file_uploads`` row per file (post-migration fields included), and the user message lists
them in ``file_ids`` (an atomic ``$push``, so parallel uploads to one message all stay). A
failure half-way removes what was written (there are no transactions).

Slow clients, memory and the event loop: the router receives a body
(:func:`receive_request`) outside the processing slots and under a time limit (408), spooled
to disk past a megabyte, so a slow client holds nothing another user needs. Then
``upload_concurrency`` requests at a time (fewer per user) are parsed and stored: a JSON body
is parsed, base64-decoded (in 4 MiB slices, freeing the body first) and every file hashed in
a worker thread, so a large upload holds about twice its body size and never stalls other
requests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from typing import Any

import pymongo.errors
from bson import ObjectId
from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect

from app_patch import sniff
from app_patch.service import thumbnails
from app_patch.service.compat import MULTIPART_REDOS, browser_like_multipart, form_limits
from app_patch.service.decodepool import DecodePool
from app_patch.service.history import upload_from_row
from app_patch.service.settings import Settings
from app_patch.service.storage import Busy, ChatStore, retry, utcnow
from app_patch.service.thumbservice import http_status

log = logging.getLogger(__name__)

ACTIVE_CONTENT = frozenset({sniff.HTML, sniff.SVG, sniff.XML})
_FORM_OVERHEAD = 1024 * 1024  # headers, boundaries and text fields of one request
_READ = 64 * 1024
DEFAULT_REQUEST_CAP = 32 * 1024 * 1024
_B64_SLICE = 4 * 1024 * 1024  # a multiple of 4: slices decode on their own
_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON "\ud800" escapes decode to these


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
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    thumbs: dict[int, thumbnails.Thumbnail] = field(default_factory=dict)  # rendered at upload
    file_id: str | None = None  # once stored


class _BodyTooLarge(Exception):
    pass


def request_limit(settings: Settings) -> int:
    """Largest body accepted.

    ``max_request_bytes`` when set; else 32 MiB, raised if need be so that one file at the
    per-file limit still fits as base64. Never more than every file at the limit can need.
    """
    per_file = settings.max_upload_bytes * 4 // 3 + 4
    every_file = settings.max_files_per_upload * per_file + _FORM_OVERHEAD
    cap = settings.max_request_bytes or max(DEFAULT_REQUEST_CAP, per_file + _FORM_OVERHEAD)
    return min(every_file, cap)


class _BodyTimeout(Exception):
    def __init__(self, received: int, seconds: float) -> None:
        super().__init__(received, seconds)
        self.received, self.seconds = received, seconds


def _limited(request: Request, limit: int, settings: Settings) -> Request:
    """A copy of ``request`` whose body stream fails once more than ``limit`` bytes arrive,
    or once the body is late: it must arrive within ``upload_body_timeout`` seconds plus
    one second per ``upload_min_rate`` bytes received (mod_reqtimeout's rule). So a client
    trickling a byte every few seconds is cut off, while a slow but moving one is not."""
    received = 0
    receive = request.receive
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def limited_receive() -> dict[str, Any]:
        nonlocal received
        deadline = started + settings.upload_body_timeout + received / settings.upload_min_rate
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise _BodyTimeout(received, loop.time() - started) from None
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge
        return message

    return Request(request.scope, limited_receive)


def _too_large(what: str, size: int, limit: int) -> HTTPException:
    return HTTPException(413, f"{what} is {size} bytes; the limit is {limit} bytes")


@dataclass
class ReceivedBody:
    """A request body off the network and not yet parsed: multipart parts as Starlette
    spools them, a JSON body in a spooled file. Waiting for a processing slot, it holds at
    most about a megabyte of memory per file; the rest is on disk."""

    form: FormData | None = None
    json_body: SpooledTemporaryFile | None = None

    async def aclose(self) -> None:
        if self.form is not None:
            await self.form.close()
        if self.json_body is not None:
            self.json_body.close()


async def read_request(
    request: Request, settings: Settings
) -> tuple[dict[str, str], list[IncomingFile]]:
    """The text fields and the files of a multipart or JSON upload request."""
    received = await receive_request(request, settings)
    try:
        return await parse_request(received, settings)
    finally:
        await received.aclose()


async def receive_request(request: Request, settings: Settings, who: str = "") -> ReceivedBody:
    """Read the whole body, within the size cap (413) and the time limit (408, one log line).

    Run it outside the processing slots: a slow client then holds nothing others need.
    """
    limit = request_limit(settings)
    declared = request.headers.get("content-length", "")
    # Compared as text first: int() refuses thousands of digits (a 500, not a 413).
    if declared.isdigit() and (len(declared.lstrip("0")) > 18 or int(declared) > limit):
        raise HTTPException(413, f"The request body exceeds {limit} bytes")
    raw_type = request.headers.get("content-type", "")
    ctype = raw_type.split(";")[0].strip().lower()
    if ctype == "multipart/form-data" and MULTIPART_REDOS and not browser_like_multipart(raw_type):
        # Before Starlette hands it to python-multipart < 0.0.7 (CVE-2024-24762).
        raise HTTPException(
            400,
            "The multipart Content-Type has parameters no browser sends; send "
            "'multipart/form-data; boundary=...' with a plain boundary",
        )
    body_request = _limited(request, limit, settings)
    try:
        if ctype == "multipart/form-data":
            return ReceivedBody(form=await _receive_form(body_request, settings))
        if ctype == "application/json":
            spool = SpooledTemporaryFile(max_size=_FORM_OVERHEAD)
            try:
                async for chunk in body_request.stream():
                    spool.write(chunk)
            except BaseException:
                spool.close()
                raise
            spool.seek(0)
            return ReceivedBody(json_body=spool)
    except _BodyTooLarge:
        raise HTTPException(413, f"The request body exceeds {limit} bytes") from None
    except _BodyTimeout as late:
        log.warning(
            "upload from %s: body too slow (%d bytes in %.0f s); answered 408",
            who or "a client",
            late.received,
            late.seconds,
        )
        raise HTTPException(
            408,
            f"The request body arrived too slowly ({late.received} bytes in "
            f"{late.seconds:.0f} s); send it again on a faster connection",
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        # Routine (a closed tab, a lost network): one line, not an ASGI traceback. The 400
        # goes nowhere; nothing was stored.
        client = request.client.host if request.client else "?"
        log.warning(
            "upload abandoned: client %s disconnected before sending the whole body "
            "(%s bytes declared); nothing stored", client, declared or "?",
        )
        raise HTTPException(400, "The client disconnected during the upload") from None
    raise HTTPException(415, "Send multipart/form-data or an application/json Flowise uploads body")


async def parse_request(
    received: ReceivedBody, settings: Settings
) -> tuple[dict[str, str], list[IncomingFile]]:
    """The fields and files of a received body (its bytes are read into memory here)."""
    if received.form is not None:
        return await _read_form(received.form, settings)
    assert received.json_body is not None
    spool = received.json_body
    body = bytearray(await asyncio.to_thread(spool.read))
    # Parsing and decoding megabytes is CPU work: off the event loop.
    return await asyncio.to_thread(_read_json, body, settings)


async def _receive_form(request: Request, settings: Settings) -> FormData:
    try:
        return await request.form(
            **form_limits(
                max_files=settings.max_files_per_upload, max_fields=20, max_part_size=_FORM_OVERHEAD
            )
        )
    except (_BodyTooLarge, _BodyTimeout, ClientDisconnect):
        raise
    except Exception as exc:  # noqa: BLE001 - the parser's errors are the client's fault
        reason = _one_line(str(exc))
        cause, inner = "", exc.__cause__ or exc.__context__
        for _ in range(4):  # python-multipart's own reason, under Starlette's wrappers
            if inner is None:
                break
            cause += " " + str(inner)
            inner = inner.__cause__ or inner.__context__
        if any(
            word in reason + cause for word in ("maximum size", "Too many", "Maximum header size")
        ):  # Starlette's part and field limits, python-multipart's header-line limit
            raise HTTPException(413, f"Multipart body over a limit: {reason}") from None
        raise HTTPException(400, f"Malformed multipart body: {reason}") from None


def _one_line(text: str, limit: int = 200) -> str:
    """``text`` as one short line (error texts may quote the input)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _read_form(
    form: FormData, settings: Settings
) -> tuple[dict[str, str], list[IncomingFile]]:
    fields: dict[str, str] = {}
    files: list[IncomingFile] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await _read_part(value, settings.max_upload_bytes)
            files.append(IncomingFile(value.filename or "", value.content_type or "", data))
        else:
            fields[key] = value
    return fields, files


async def _read_part(part: UploadFile, limit: int) -> bytes:
    pieces, total = [], 0
    while chunk := await part.read(_READ):
        total += len(chunk)
        if total > limit:
            raise _too_large(f"File {part.filename!r}", total, limit)
        pieces.append(chunk)
    return b"".join(pieces)


def _read_json(body: bytearray, settings: Settings) -> tuple[dict[str, str], list[IncomingFile]]:
    """Parse, validate and decode a JSON upload body (runs in a worker thread).

    ``body`` is emptied once parsed, and each base64 string dropped once decoded.
    """
    try:
        try:
            document = json.loads(body)
        finally:
            body.clear()
        parsed = FlowiseUploadBody.model_validate(document)
        del document
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(422, "The body is not valid JSON") from None
    except RecursionError:
        raise HTTPException(
            422, "The JSON body is nested too deeply; send a flat Flowise uploads object"
        ) from None
    except ValidationError as exc:
        # Report where and what, never echo the input back (it may be megabytes of base64).
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(part) for part in first["loc"][:8]) or "body"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise HTTPException(422, _one_line(f"{where}: {first['msg']}{more}")) from None
    except ValueError:  # an integer of more digits than int() converts (4300)
        raise HTTPException(422, "The JSON body holds a number too long to read") from None
    if len(parsed.uploads) > settings.max_files_per_upload:
        raise HTTPException(413, f"At most {settings.max_files_per_upload} files per request")
    files = []
    for i, up in enumerate(parsed.uploads):
        if up.type != "file":
            raise HTTPException(
                422, f"uploads[{i}].type={up.type!r}: only 'file' uploads are stored"
            )
        data, up.data = up.data, ""
        files.append(IncomingFile(up.name, up.mime, _decode_base64(data, i, settings)))
        del data
    fields = {"session_id": parsed.session_id, "content": parsed.content}
    if parsed.message_id:
        fields["message_id"] = parsed.message_id
    return fields, files


def _decode_base64(data: str, index: int, settings: Settings) -> bytes:
    """Decode base64 (optionally a ``data:`` URL) without copying the text first.

    Plain base64 decodes slice by slice; text with line breaks or other whitespace falls
    back to stripping it (one copy), as before.
    """
    start = data.index(",") + 1 if data.startswith("data:") and "," in data else 0
    estimated = (len(data) - start) * 3 // 4
    if estimated > settings.max_upload_bytes + 2:
        raise _too_large(f"uploads[{index}]", estimated, settings.max_upload_bytes)
    try:
        try:
            pieces = [
                binascii.a2b_base64(data[at : at + _B64_SLICE], strict_mode=True)
                for at in range(start, len(data), _B64_SLICE)
            ]
            raw = b"".join(pieces)
            del pieces
        except binascii.Error:  # whitespace, or invalid: the strict, stripping decoder decides
            raw = base64.b64decode("".join(data[start:].split()), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, f"uploads[{index}].data is not valid base64") from None
    if len(raw) > settings.max_upload_bytes:
        raise _too_large(f"uploads[{index}]", len(raw), settings.max_upload_bytes)
    return raw


def _check_text(value: str, what: str) -> None:
    """422 for text that cannot be stored: an unpaired surrogate has no UTF-8 form."""
    if _SURROGATE.search(value):
        raise HTTPException(
            422, f"{what} is not valid Unicode text (it holds an unpaired surrogate)"
        )


def _utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (an unpaired surrogate counts as 3, as it would escaped)."""
    return len(text.encode("utf-8", "surrogatepass"))


def check_sizes(fields: dict[str, str], files: list[IncomingFile], settings: Settings) -> None:
    """413 for a text field or file name over its limit (the settings), before anything is
    stored or decoded: past these a document would outgrow BSON's 16 MiB, and the server
    would refuse it half-way through the writes."""
    limits = {
        "content": settings.max_content_bytes,
        "session_id": settings.max_field_bytes,
        "message_id": settings.max_field_bytes,
    }
    for key, limit in limits.items():
        value = fields.get(key)
        if isinstance(value, str) and len(value) > limit // 4 and _utf8_size(value) > limit:
            raise _too_large(f"The {key} field", _utf8_size(value), limit)
    for i, item in enumerate(files):
        for what, text, limit in (
            ("name", item.name, settings.max_name_bytes),
            ("type", item.claimed, settings.max_field_bytes),
        ):
            if len(text) > limit // 4 and _utf8_size(text) > limit:
                raise _too_large(f"The {what} of file {i}", _utf8_size(text), limit)


def _digest_all(files: list[IncomingFile]) -> None:
    """SHA-256 of every file (runs in a worker thread: megabytes of hashing)."""
    for item in files:
        item.sha256 = hashlib.sha256(item.data).hexdigest()


async def validate_file(
    item: IncomingFile,
    settings: Settings,
    *,
    decoder: DecodePool,
    owner: str = "",
    thumbnail_sizes: tuple[int, ...] = (),
) -> None:
    """Sniff ``item`` and, for images, decode it on ``decoder``; raise 413/415/422 with the
    reason.

    With ``thumbnail_sizes``, a decode of at most ``decodepool.RENDER_AT_UPLOAD`` bytes (a
    JPEG at a thumbnail's DCT scale, a photo of up to about 16 megapixels) also renders the
    thumbnails it allows, into ``item.thumbs``; a failure there is not a refusal. The decode
    waits for its budget in ``owner``'s turn.
    """
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
        # on the thumbnail pool: verifying decodes, so it shares that budget
        _, width, height, item.thumbs = await decoder.verify_and_render(
            item.data, thumbnail_sizes, max_pixels=settings.thumbnail_max_pixels, owner=owner
        )
    except thumbnails.ThumbnailError as exc:
        # 422 for corrupt/truncated images and for pixel bombs (the byte size was fine).
        raise HTTPException(http_status(exc), f"Image {label} is refused: {exc.reason}") from None
    item.is_image, item.width, item.height = True, width, height


async def _session_chatflow(store: ChatStore, session_id: str, user_id: str) -> str:
    """The session's chatflow id if the caller owns it; 404 otherwise."""
    row = await store.session_row(session_id, user_id)
    if row is not None:
        return str(row.get("chatflow_id") or "")
    if not await store.owns_session(session_id, user_id):
        raise HTTPException(404, "Chat session not found")
    msg = await store.first_session_message(session_id, user_id)
    return str((msg or {}).get("chatflow_id") or "")


async def store_upload(
    store: ChatStore,
    settings: Settings,
    user_id: str,
    fields: dict[str, str],
    files: list[IncomingFile],
    *,
    decoder: DecodePool,
    thumbnail_sizes: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Validate and write ``files``; return the message in the history format.

    ``decoder`` and ``thumbnail_sizes``: see :func:`validate_file`.

    Order matters: cheap checks of the request itself, then ownership (a foreign session or
    message is a 404 before any file is decoded), then the files, then the writes.
    """
    check_sizes(fields, files, settings)
    for key in ("session_id", "content", "message_id"):
        if isinstance(fields.get(key), str):
            _check_text(fields[key], key)
    for i, item in enumerate(files):
        _check_text(item.name, f"The name of file {i}")
        _check_text(item.claimed, f"The type of file {i}")
    session_id = (fields.get("session_id") or "").strip()
    if not session_id:
        raise HTTPException(422, "session_id is required")
    if not files:
        raise HTTPException(422, "No file in the request")
    if len(files) > settings.max_files_per_upload:
        raise HTTPException(413, f"At most {settings.max_files_per_upload} files per request")
    chatflow_id = await _session_chatflow(store, session_id, user_id)
    existing = None
    if fields.get("message_id"):
        existing = await store.user_message(fields["message_id"], user_id)
        if existing is None or existing.get("session_id") != session_id:
            raise HTTPException(404, "Message not found")
        if existing.get("role") != "user":
            raise HTTPException(422, "Files can only be attached to user messages")

    for item in files:
        await validate_file(
            item, settings, decoder=decoder, owner=user_id, thumbnail_sizes=thumbnail_sizes
        )
    await asyncio.to_thread(_digest_all, files)
    message_oid = existing["_id"] if existing else ObjectId()
    now = utcnow()
    # Ids chosen before the first write, and journaled: whatever stops this request half-way
    # (an error, a cancelled task, a killed process) leaves a record of what to remove.
    oids = [ObjectId() for _ in files]
    new_message = existing is None
    entry = await retry(
        lambda: store.begin_upload(user_id, oids, message_oid, new_message), "starting the upload"
    )
    try:
        rows = []
        for item, oid in zip(files, oids, strict=True):
            meta = {
                "user_id": user_id,
                "session_id": session_id,
                "original_name": item.name,
                "message_id": str(message_oid),
                "mime_type": item.mime,
            }
            await retry(
                lambda oid=oid, item=item, meta=meta: store.write_file(
                    oid, item.name or "upload", item.data, meta
                ),
                "storing the file",
            )
            item.file_id = str(oid)
            rows.append(_upload_row(item, oid, message_oid, session_id, user_id, chatflow_id, now))
        await retry(lambda: store.insert_uploads(rows), "storing the upload rows")
        new_ids = [str(oid) for oid in oids]
        if existing is not None:
            message = await _attach(store, existing, new_ids, user_id)
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
            await retry(lambda: store.insert_message(message), "storing the message")
    except BaseException as exc:
        # Shielded: a cancelled request still removes what it wrote.
        await asyncio.shield(_undo(store, user_id, oids, message_oid, new_message, entry))
        if isinstance(exc, pymongo.errors.DocumentTooLarge):
            raise HTTPException(413, "The upload does not fit a 16 MiB document") from None
        if isinstance(exc, Busy):
            log.warning("upload not stored: %s", exc)
            raise HTTPException(503, f"{exc}; nothing was stored, send it again") from None
        raise
    await retry(lambda: store.end_upload(entry), "ending the upload")
    uploads = [upload_from_row(row) for row in rows]
    created = message.get("created_at")
    return {
        "id": str(message_oid),
        "session_id": session_id,
        "role": message.get("role"),
        "content": message.get("content"),
        "created_at": created.isoformat() if created else None,
        "file_ids": [f for f in message["file_ids"] if isinstance(f, str)],
        "has_files": True,
        "uploads": uploads,
    }


async def _attach(
    store: ChatStore, existing: dict[str, Any], new_ids: list[str], user_id: str
) -> dict[str, Any]:
    """Append ``new_ids`` to an existing message atomically (see
    :meth:`ChatStore.attach_files`); return the message after, 404 when it is gone."""
    after = await store.attach_files(existing, new_ids, user_id)
    if after is None:  # deleted meanwhile; the caller undoes the files
        raise HTTPException(404, "Message not found")
    return after


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
        "file_hash": item.sha256 or hashlib.sha256(item.data).hexdigest(),
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


async def _undo(
    store: ChatStore,
    user_id: str,
    oids: list[ObjectId],
    message_oid: ObjectId,
    new_message: bool,
    entry: ObjectId,
) -> None:
    """Remove a half-written upload (there are no transactions on the target servers). If
    that fails too, the journal entry stays and the next sweep finishes the job."""
    try:
        await store.undo_upload(user_id, oids, message_oid, new_message)
        await store.end_upload(entry)
    except Exception as exc:  # noqa: BLE001 - the original error is re-raised by the caller
        log.warning("upload undo failed (%s); the orphan sweep will remove it", _one_line(str(exc)))
