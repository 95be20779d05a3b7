"""Serving stored files and their thumbnails over HTTP: headers, conditional and range requests.

Files stream from GridFS chunk by chunk (never read whole). The type sent is the one sniffed
from the file's first bytes; only :data:`app_patch.sniff.INLINE_SAFE_MIMES` may be shown
inline, and active or unknown content (HTML, SVG, XML, octet-stream) always leaves as an
``application/octet-stream`` attachment. Every response forbids MIME sniffing and sandboxes
the document in case a browser navigates to it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import unicodedata
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException
from fastapi.responses import Response, StreamingResponse
from gridfs.asynchronous.grid_file import AsyncGridOut
from gridfs.errors import CorruptGridFile

from app_patch import sniff
from app_patch.service import thumbnails
from app_patch.service.storage import ChatStore, FileRecord

SNIFF_BYTES = 8192
FILE_CACHE_CONTROL = "private, max-age=3600"
THUMB_CACHE_CONTROL = "private, max-age=86400"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    # Responses depend on who asks; a shared cache must never serve one user's file to another.
    "Vary": "Authorization",
}
# Known, script-free types that keep their real Content-Type but only ever as attachments.
ATTACHMENT_TYPES = frozenset(
    {sniff.PDF, sniff.TEXT, sniff.ZIP, sniff.TIFF, sniff.HEIC, sniff.HEIF, sniff.POSTSCRIPT}
)
_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9 ._()+,=@-]")
# C0/C1 controls, line/paragraph separators, and the bidirectional marks, embeddings,
# overrides and isolates: a name like "invoice\u202Egnp.exe" would otherwise *display* as
# "invoiceexe.png" in a download dialog.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_RANGE_SPEC = re.compile(r"\s*([0-9]*)\s*-\s*([0-9]*)\s*", re.ASCII)
# Digits past this many name a byte beyond any file; int() on thousands of them is refused.
_MAX_DIGITS = 30


# -- names and types -----------------------------------------------------------------------


def _base_name(name: str) -> str:
    """The last path component, with control and bidi-override characters removed."""
    name = _CONTROL.sub("", name or "")
    name = re.split(r"[\\/]", name)[-1]
    return name.strip().strip(".").strip()


def ascii_filename(name: str, mime: str) -> str:
    """A plain-ASCII, quote-free file name for the legacy ``filename=`` parameter."""
    base = unicodedata.normalize("NFKD", _base_name(name)).encode("ascii", "ignore").decode()
    base = _UNSAFE_ASCII.sub("_", base).strip(" ._")[:150]
    if not base or set(base) <= {"_"}:
        base = "file" + sniff.extension_for(mime)
    return base


def content_disposition(kind: str, name: str, mime: str) -> str:
    """``inline``/``attachment`` with an ASCII ``filename`` and an RFC 6266 ``filename*``."""
    fallback = ascii_filename(name, mime)
    full = _base_name(name)[:255] or fallback
    encoded = quote(full, safe="!#$&+-.^_`|~")  # RFC 5987 attr-char, everything else %XX
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def served_type(sniffed: str) -> tuple[str, bool]:
    """(Content-Type, may be inline) for a sniffed MIME type."""
    if sniffed in sniff.INLINE_SAFE_MIMES:
        return sniffed, True
    if sniffed in ATTACHMENT_TYPES:
        return (sniffed + "; charset=utf-8" if sniffed == sniff.TEXT else sniffed), False
    return sniff.OCTET, False


# -- validators ------------------------------------------------------------------------------


def file_etag(grid_out: AsyncGridOut) -> str:
    """A strong ETag from the GridFS id, length and upload time (or md5 when stored)."""
    md5 = grid_out.md5
    if md5:
        return f'"{grid_out._id}-{md5}"'
    uploaded = grid_out.upload_date
    stamp = int(uploaded.timestamp() * 1000) if isinstance(uploaded, dt.datetime) else 0
    return f'"{grid_out._id}-{grid_out.length}-{stamp}"'


def etag_matches(header: str | None, etag: str, *, star: bool = True) -> bool:
    """Weak comparison of ``If-None-Match`` against our ETag (RFC 9110 13.1.2).

    ``*`` matches any current representation; callers that have not yet established that
    one exists pass ``star=False``.
    """
    if not header:
        return False
    if header.strip() == "*":
        return star
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in header.split(","))


def _http_date(when: dt.datetime | None) -> str | None:
    if not isinstance(when, dt.datetime):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return format_datetime(when.astimezone(dt.UTC), usegmt=True)


def _not_modified_since(header: str | None, when: dt.datetime | None) -> bool:
    if not header or not isinstance(when, dt.datetime):
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.replace(microsecond=0) <= since


# -- ranges ------------------------------------------------------------------------------


class Unsatisfiable(Exception):
    """The Range header names no byte of the file (416)."""


def parse_range(header: str | None, length: int) -> tuple[int, int] | None:
    """The single byte range ``(first, last)`` asked for, None to send the whole file.

    Malformed and multi-range headers are ignored (RFC 9110 allows that: a full 200 reply);
    a well-formed range that starts past the end raises :class:`Unsatisfiable`.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    # str.isdigit() accepts "²" and other digits int() refuses: match ASCII digits only.
    match = _RANGE_SPEC.fullmatch(spec)
    if match is None:
        return None
    first_s, last_s = match.groups()
    if first_s == "":
        if last_s == "":
            return None
        suffix = _byte_pos(last_s)
        if suffix == 0 or length == 0:
            raise Unsatisfiable
        return max(0, length - suffix), length - 1
    first = _byte_pos(first_s)
    if last_s and _byte_pos(last_s) < first:
        return None  # syntactically invalid: ignored
    if first >= length:
        raise Unsatisfiable
    last = _byte_pos(last_s) if last_s else length - 1
    return first, min(last, length - 1)


def _byte_pos(digits: str) -> int:
    """An ASCII digit string as an int; absurdly long ones clamp past any file's end."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


# -- streaming ---------------------------------------------------------------------------


async def _stream(
    grid_out: AsyncGridOut, head: bytes, first: int, last: int
) -> AsyncIterator[bytes]:
    """Yield bytes ``first..last`` (inclusive), reusing the sniffed head when it covers them."""
    remaining = last - first + 1
    try:
        if first < len(head):
            piece = head[first : first + remaining]
            remaining -= len(piece)
            if piece:
                yield piece
        if remaining > 0:
            await grid_out.seek(max(first, len(head)))
            while remaining > 0:
                chunk = await grid_out.readchunk()
                if not chunk:
                    break
                piece = chunk[:remaining]
                remaining -= len(piece)
                yield piece
    finally:
        await grid_out.close()


def _file_headers(etag: str, grid_out: AsyncGridOut) -> dict[str, str]:
    headers = {"ETag": etag, "Cache-Control": FILE_CACHE_CONTROL, **SECURITY_HEADERS}
    modified = _http_date(grid_out.upload_date)
    if modified:
        headers["Last-Modified"] = modified
    return headers


async def file_response(
    store: ChatStore,
    record: FileRecord,
    *,
    download: bool,
    if_none_match: str | None,
    if_modified_since: str | None,
    range_header: str | None,
    if_range: str | None,
    head_only: bool = False,
) -> Response:
    """The response for ``GET /files/{file_id}``: 200, 206, 304, 416, or 404 when the bytes
    are gone and 422 when chunks are missing. ``head_only`` gives the same headers, no body.

    Costs one query more than streaming alone: the chunks are counted before any header is
    sent, so a file with a missing chunk is a 422 rather than a 200 cut off half-way.
    """
    grid_out = await store.open_file(record.oid)
    if grid_out is None:
        raise HTTPException(404, "File not found")
    streaming = False
    try:
        etag = file_etag(grid_out)
        headers = _file_headers(etag, grid_out)
        if etag_matches(if_none_match, etag) or (
            if_none_match is None and _not_modified_since(if_modified_since, grid_out.upload_date)
        ):
            return Response(status_code=304, headers=headers)
        length = int(grid_out.length)
        chunk_size = int(grid_out.chunk_size)
        expected = -(-length // chunk_size) if chunk_size > 0 else 0
        if await store.count_chunks(record.oid) != expected:
            raise _incomplete()
        try:
            head = await grid_out.read(SNIFF_BYTES)
        except CorruptGridFile:
            raise _incomplete() from None
        content_type, inline_ok = served_type(sniff.sniff_mime(head))
        kind = "inline" if inline_ok and not download else "attachment"
        headers["Content-Disposition"] = content_disposition(kind, record.name, content_type)
        headers["Accept-Ranges"] = "bytes"
        if if_range is not None and if_range.strip() != etag:
            range_header = None  # the client's copy is stale: send the whole file
        try:
            wanted = parse_range(range_header, length)
        except Unsatisfiable:
            headers["Content-Range"] = f"bytes */{length}"
            return Response(status_code=416, headers=headers)
        if wanted is None:
            first, last, status = 0, length - 1, 200
        else:
            (first, last), status = wanted, 206
            headers["Content-Range"] = f"bytes {first}-{last}/{length}"
        headers["Content-Length"] = str(max(0, last - first + 1))
        if length == 0 or head_only:
            return Response(status_code=status, media_type=content_type, headers=headers)
        response = StreamingResponse(
            _stream(grid_out, head, first, last),
            status_code=status,
            media_type=content_type,
            headers=headers,
        )
        streaming = True  # from here the body iterator closes the stream
        return response
    finally:
        if not streaming:
            await grid_out.close()


def _incomplete() -> HTTPException:
    return HTTPException(422, "The stored file is incomplete (GridFS chunks missing)")


# -- thumbnails ----------------------------------------------------------------------------


@dataclass
class ThumbnailService:
    """Thumbnails generated once per (file, size, pipeline version) and cached in GridFS.

    A generation first estimates its decode from the source's headers and waits for those
    bytes of the process-wide decode budget, in its user's turn (see
    :func:`app_patch.service.thumbnails.decode_slot`); only then is the source read. So a
    burst of requests holds no image bytes while it waits, one user's queue of huge images
    does not hold up others, and small images never wait behind large ones. ``rendered``
    holds thumbnails made at upload until the background stores them. One instance per
    event loop (the per-key locks are asyncio locks).
    """

    max_pixels: int
    max_source_bytes: int
    concurrency: int = 2  # the pool's size; kept for callers, the budget lives in thumbnails
    _locks: dict[str, list[Any]] = field(default_factory=dict)
    rendered: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    def key(self, file_id: str, size: int) -> str:
        return thumbnails.cache_key(file_id, size)

    def etag(self, file_id: str, size: int) -> str:
        # GridFS bytes never change under an id, so the key alone identifies the thumbnail.
        return f'"{self.key(file_id, size)}"'

    async def response(
        self,
        store: ChatStore,
        record: FileRecord,
        size: int,
        user_id: str,
        if_none_match: str | None,
        *,
        head_only: bool = False,
    ) -> Response:
        """200 with the thumbnail, 304, or 404/413/415/422 with a reason (HEAD: no body)."""
        etag = self.etag(record.file_id, size)
        headers = {"ETag": etag, "Cache-Control": THUMB_CACHE_CONTROL, **SECURITY_HEADERS}
        # Our own ETag is only ever handed out for a thumbnail that was made; "*" asks whether
        # one exists at all, which is only known once it has been made (or found) below.
        if etag_matches(if_none_match, etag, star=False):
            return Response(status_code=304, headers=headers)
        data, mime = await self._get(store, record, size, user_id)
        if etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        headers["Content-Disposition"] = content_disposition(
            "inline", f"thumb_{size}_{ascii_filename(record.name, mime)}", mime
        )
        if head_only:
            headers["Content-Length"] = str(len(data))
            return Response(media_type=mime, headers=headers)
        return Response(content=data, media_type=mime, headers=headers)

    async def _get(
        self,
        store: ChatStore,
        record: FileRecord,
        size: int,
        user_id: str,
        owner: str | None = None,
    ) -> tuple[bytes, str]:
        key = self.key(record.file_id, size)
        cached = self.rendered.get(key) or await self._cached(store, key)
        if cached is not None:
            return cached
        async with self._exclusive(key) as contended:
            if contended:
                cached = await self._cached(store, key)
                if cached is not None:
                    return cached
            made = await self._generate(store, record, [size], user_id, owner)
            return made[size]

    async def pregenerate(
        self,
        store: ChatStore,
        record: FileRecord,
        user_id: str,
        sizes: list[int],
        rendered: dict[int, thumbnails.Thumbnail],
    ) -> list[int]:
        """Cache ``sizes`` of ``record``: those in ``rendered`` as they are, the others from one
        decode (the background's turn in the budget). Returns the sizes stored now."""
        async with AsyncExitStack() as stack:
            missing = []
            for size in sizes:  # one fixed order: no two holders can wait on each other
                key = self.key(record.file_id, size)
                await stack.enter_async_context(self._exclusive(key))
                if await self._cached(store, key) is None:
                    missing.append(size)
            for size in [s for s in missing if s in rendered]:
                await self._keep(store, record, size, user_id, rendered[size])
            if todo := [s for s in missing if s not in rendered]:
                await self._generate(store, record, todo, user_id, thumbnails.BACKGROUND)
            return missing

    @asynccontextmanager
    async def _exclusive(self, key: str) -> AsyncIterator[bool]:
        """One generation per key at a time in this process: later askers wait, then find the
        cached result (or generate themselves if the first one failed). Yields whether
        someone else held the key first."""
        entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
        lock: asyncio.Lock = entry[0]
        entry[1] += 1
        try:
            contended = lock.locked()
            async with lock:
                yield contended
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._locks.pop(key, None)

    @staticmethod
    async def _cached(store: ChatStore, key: str) -> tuple[bytes, str] | None:
        grid_out = await store.open_thumbnail(key)
        if grid_out is None:
            return None
        meta = grid_out.metadata or {}
        return await grid_out.read(), str(meta.get("mime") or "image/jpeg")

    async def _generate(
        self,
        store: ChatStore,
        record: FileRecord,
        sizes: list[int],
        user_id: str,
        owner: str | None = None,
    ) -> dict[int, tuple[bytes, str]]:
        """Read, render and cache; the caller holds the keys' locks. The source is read only
        once the decode budget has room for it (see the class docstring)."""
        grid_out = await store.open_file(record.oid)
        if grid_out is None:
            raise HTTPException(404, "File not found")
        try:
            head = await grid_out.read(thumbnails.ESTIMATE_HEAD)
            mime = sniff.sniff_mime(head[:SNIFF_BYTES])
            if not sniff.is_image_mime(mime):
                raise HTTPException(415, f"Not an image (the file is {mime}); no thumbnail")
            if int(grid_out.length) > self.max_source_bytes:
                raise HTTPException(
                    422, f"Image file too large to thumbnail ({grid_out.length} bytes)"
                )
            cost = thumbnails.estimate_cost(
                head, max(sizes), source_bytes=int(grid_out.length), max_pixels=self.max_pixels
            )
            async with thumbnails.decode_slot(cost, user_id if owner is None else owner) as slot:
                data = head + await grid_out.read()
                del head
                try:
                    if len(sizes) == 1:
                        made = {sizes[0]: await slot.run(_one_thumbnail, data, sizes[0], self)}
                    else:
                        made = await slot.run(_thumbnails, data, sizes, self)
                except thumbnails.ThumbnailError as exc:
                    # The module names the status: 415 not an image, 422 corrupt or too large.
                    raise HTTPException(exc.http_status, f"No thumbnail: {exc.reason}") from None
                finally:
                    del data  # not kept while the thumbnails are written
        except CorruptGridFile:
            raise _incomplete() from None
        finally:
            await grid_out.close()
        for size, thumb in made.items():
            await self._keep(store, record, size, user_id, thumb)
        return {size: (thumb.data, thumb.mime) for size, thumb in made.items()}

    async def _keep(
        self,
        store: ChatStore,
        record: FileRecord,
        size: int,
        user_id: str,
        thumb: thumbnails.Thumbnail,
    ) -> None:
        """Cache one thumbnail; the caller holds its key's lock."""
        metadata = thumbnails.cache_metadata(record.file_id, size, user_id, thumb)
        await store.store_thumbnail(self.key(record.file_id, size), thumb.data, metadata)
        # A DELETE may have run while this one rendered: it removed the bytes and the cached
        # thumbnails it could see, but not the one stored just now. Deletion removes the
        # bytes first, so checking them after the store catches every interleaving.
        if not await store.file_exists(record.oid):
            await store.delete_thumbnails(record.file_id)
            raise HTTPException(404, "File not found")


def _one_thumbnail(data: bytes, size: int, service: ThumbnailService) -> thumbnails.Thumbnail:
    # make_thumbnail looked up at call time, so a test can observe renders with a stand-in.
    return thumbnails.make_thumbnail(data, size, max_pixels=service.max_pixels)


def _thumbnails(
    data: bytes, sizes: list[int], service: ThumbnailService
) -> dict[int, thumbnails.Thumbnail]:
    return thumbnails.make_thumbnails(data, sizes, max_pixels=service.max_pixels)
