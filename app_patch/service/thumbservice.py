"""The thumbnail service: thumbnails cached in GridFS, generated on the app's decode pool,
answered over HTTP.

Cache naming (:func:`cache_key`, :func:`cache_metadata`), the cache's reads and writes (through
:class:`~app_patch.service.storage.ChatStore`), the per-key generation locks, the placeholder
for an image that history promised but that cannot be rendered, and the mapping of the
pipeline's refusals to HTTP statuses (:func:`http_status`) live here; the pixels are
:mod:`app_patch.service.thumbnails`, where decodes run :mod:`app_patch.service.decodepool`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from fastapi.responses import Response
from gridfs.errors import CorruptGridFile

from app_patch import sniff
from app_patch.service import placeholder, thumbnails
from app_patch.service.decodepool import BACKGROUND, DecodePool
from app_patch.service.files import (
    INCOMPLETE,
    SECURITY_HEADERS,
    SNIFF_BYTES,
    base_name,
    content_disposition,
    etag_matches,
)
from app_patch.service.history import row_is_image
from app_patch.service.storage import ChatStore, FileRecord

THUMB_CACHE_CONTROL = "private, max-age=86400"


def cache_key(file_id: str, size: int) -> str:
    """The name a thumbnail is cached under in the ``thumbnails`` GridFS bucket."""
    return f"{file_id}_{size}_v{thumbnails.PIPELINE_VERSION}"


def cache_metadata(file_id: str, size: int, user_id: str, mime: str, **extra: object) -> dict:
    """The metadata stored with a cached thumbnail: these, and ``width``/``height`` for a
    thumbnail (``placeholder``/``stamp`` for the app's placeholder picture)."""
    return {
        "file_id": file_id,
        "size": size,
        "version": thumbnails.PIPELINE_VERSION,
        "user_id": user_id,
        "mime": mime,
        **extra,
    }


def http_status(exc: thumbnails.ThumbnailError) -> int:
    """The status for a refused image: 415 when it is not an image, 422 when it is corrupt or
    too large (the *request* is not too large, so 413 would mislead; the stored entity
    cannot be processed)."""
    return 415 if isinstance(exc, thumbnails.NotAnImage) else 422


@dataclass
class ThumbnailService:
    """Thumbnails generated once per (file, size, pipeline version) and cached in GridFS.

    A generation first estimates its decode from the source's headers and waits for those
    bytes of the app's decode budget, in its user's turn (see
    :meth:`app_patch.service.decodepool.DecodePool.slot`); only then is the source read. So a
    burst of requests holds no image bytes while it waits, one user's queue of huge images
    does not hold up others, and small images never wait behind large ones. ``rendered``
    holds thumbnails made at upload until the background stores them (:meth:`remember`).
    One instance per event loop (the per-key locks are asyncio locks).
    """

    max_pixels: int
    max_source_bytes: int
    pool: DecodePool
    _locks: dict[str, list[Any]] = field(default_factory=dict)
    rendered: dict[str, _Made] = field(default_factory=dict)

    def key(self, file_id: str, size: int) -> str:
        return cache_key(file_id, size)

    def remember(self, file_id: str, thumbs: dict[int, thumbnails.Thumbnail]) -> None:
        """Serve these (rendered at upload) from memory until :meth:`forget`."""
        for size, thumb in thumbs.items():
            self.rendered[self.key(file_id, size)] = _Made(thumb.data, thumb.mime)

    def forget(self, file_id: str, sizes: list[int]) -> None:
        for size in sizes:
            self.rendered.pop(self.key(file_id, size), None)

    def etag(self, file_id: str, size: int) -> str:
        # GridFS bytes never change under an id, so the key alone identifies the thumbnail.
        return f'"{self.key(file_id, size)}"'

    @property
    def stamp(self) -> str:
        """What decides whether an image renders besides its bytes: a placeholder made under
        other limits (or before the HEIF plugin was installed) is made again."""
        heif = int(thumbnails.HEIF_AVAILABLE)
        return f"{self.max_pixels}-{self.max_source_bytes}-{heif}"

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
        """200 with the thumbnail (or the placeholder), 304, or 400/404/422 (HEAD: no body)."""
        etag = self.etag(record.file_id, size)
        headers = {"Cache-Control": THUMB_CACHE_CONTROL, **SECURITY_HEADERS}
        # Our own ETag is only ever handed out for a thumbnail that was made; "*" asks whether
        # one exists at all, which is only known once it has been made (or found) below.
        if etag_matches(if_none_match, etag, star=False):
            return Response(status_code=304, headers={"ETag": etag, **headers})
        made = await self._get(store, record, size, user_id)
        if made.placeholder is None:
            headers["ETag"] = etag
        else:
            headers["X-Thumbnail-Placeholder"] = _header_safe(made.placeholder)
            if made.kind == _TRANSIENT:  # may render once the bytes are back: not kept
                headers["Cache-Control"] = "private, no-cache"
            else:  # a tag of its own: a later real thumbnail never matches it
                headers["ETag"] = f'"{self.key(record.file_id, size)}_placeholder_{self.stamp}"'
        if "ETag" in headers and etag_matches(if_none_match, headers["ETag"]):
            return Response(status_code=304, headers=headers)
        name = "placeholder.png" if made.placeholder is not None else record.name
        headers["Content-Disposition"] = content_disposition(
            "inline", f"thumb_{size}_{base_name(name)}", made.mime
        )
        if head_only:
            headers["Content-Length"] = str(len(made.data))
            return Response(media_type=made.mime, headers=headers)
        return Response(content=made.data, media_type=made.mime, headers=headers)

    async def _get(
        self,
        store: ChatStore,
        record: FileRecord,
        size: int,
        user_id: str,
        owner: str | None = None,
    ) -> _Made:
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
                thumb = rendered[size]
                extra = {"width": thumb.width, "height": thumb.height}
                await self._store(store, record, size, user_id, _Made(thumb.data, thumb.mime), extra)
            if todo := [s for s in missing if s not in rendered]:
                await self._generate(store, record, todo, user_id, BACKGROUND)
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

    async def _cached(self, store: ChatStore, key: str) -> _Made | None:
        grid_out = await store.open_thumbnail(key)
        if grid_out is None:
            return None
        meta = grid_out.metadata or {}
        reason = meta.get("placeholder")
        if reason and meta.get("stamp") != self.stamp:
            return None  # made under other limits: try again (the newest stored copy wins)
        mime = str(meta.get("mime") or "image/jpeg")
        data = await grid_out.read()
        return _Made(data, mime, str(reason), _INTRINSIC) if reason else _Made(data, mime)

    async def _generate(
        self,
        store: ChatStore,
        record: FileRecord,
        sizes: list[int],
        user_id: str,
        owner: str | None = None,
    ) -> dict[int, _Made]:
        """Render (or choose the placeholder) and cache; the caller holds the keys' locks."""
        made: dict[int, tuple[_Made, dict[str, Any]]] = {}
        try:
            rendered = await self._render(record, store, sizes, user_id if owner is None else owner)
            for size, thumb in rendered.items():
                extra = {"width": thumb.width, "height": thumb.height}
                made[size] = (_Made(thumb.data, thumb.mime), extra)
        except _NoThumbnail as exc:
            if not thumbnail_promised(record, exc.sniffed):
                # Not an image: 400, as the original answers ("File is not an image").
                raise HTTPException(400 if exc.status == 415 else exc.status, exc.reason) from None
            # History advertised this thumbnail (or the stored type is image/*, which the
            # original client asks for): a 200 with the placeholder, never the raw bytes.
            for size in sizes:
                picture = placeholder.placeholder_png(size)
                it = _Made(picture, placeholder.MIME, exc.reason, exc.kind)
                made[size] = (it, {"placeholder": exc.reason, "stamp": self.stamp})
            if exc.kind != _INTRINSIC:
                # limits are checked before any decode: cheap to decide again
                return {size: it for size, (it, _) in made.items()}
        for size, (it, extra) in made.items():
            await self._store(store, record, size, user_id, it, extra)
        return {size: it for size, (it, _) in made.items()}

    async def _store(
        self,
        store: ChatStore,
        record: FileRecord,
        size: int,
        user_id: str,
        made: _Made,
        extra: dict[str, Any],
    ) -> None:
        """Cache one thumbnail (or placeholder); the caller holds its key's lock."""
        metadata = cache_metadata(record.file_id, size, user_id, made.mime, **extra)
        await store.store_thumbnail(self.key(record.file_id, size), made.data, metadata)
        # A DELETE may have run while this one rendered: it removed the bytes and the cached
        # thumbnails it could see, but not the one stored just now. Deletion removes the
        # bytes first, so checking them after the store catches every interleaving.
        if not await store.file_exists(record.oid):
            await store.delete_thumbnails(record.file_id)
            raise HTTPException(404, "File not found")

    async def _render(
        self, record: FileRecord, store: ChatStore, sizes: list[int], owner: str
    ) -> dict[int, thumbnails.Thumbnail]:
        """The thumbnails, or :class:`_NoThumbnail` saying why there are none. The source is
        read only once the decode budget has room for it (see the class docstring)."""
        grid_out = await store.open_file(record.oid)
        if grid_out is None:
            raise _NoThumbnail(404, "File not found", _TRANSIENT)
        sniffed = None
        try:
            head = await grid_out.read(thumbnails.ESTIMATE_HEAD)
            sniffed = sniff.sniff_mime(head[:SNIFF_BYTES])
            if not sniff.is_image_mime(sniffed):
                reason = f"Not an image (the file is {sniffed}); no thumbnail"
                raise _NoThumbnail(415, reason, _INTRINSIC, sniffed)
            if int(grid_out.length) > self.max_source_bytes:
                reason = f"Image file too large to thumbnail ({grid_out.length} bytes)"
                raise _NoThumbnail(422, reason, _LIMIT, sniffed)
            length = int(grid_out.length)
            cost = thumbnails.estimate_cost(
                head, max(sizes), source_bytes=length, max_pixels=self.max_pixels
            )
            async with self.pool.slot(cost, owner) as slot:
                data = head + await grid_out.read()
                del head
                try:
                    if len(sizes) == 1:
                        return {sizes[0]: await slot.run(_one_thumbnail, data, sizes[0], self)}
                    return await slot.run(_thumbnails, data, sizes, self)
                except thumbnails.ThumbnailError as exc:
                    # Corrupt bytes stay corrupt under an id; a limit may be raised.
                    kind = _LIMIT if isinstance(exc, thumbnails.ImageTooLarge) else _INTRINSIC
                    reason = f"No thumbnail: {exc.reason}"
                    raise _NoThumbnail(http_status(exc), reason, kind, sniffed) from None
                finally:
                    del data  # not kept while the thumbnails are written
        except CorruptGridFile:
            if not await store.file_exists(record.oid):  # deleted while being read
                raise _NoThumbnail(404, "File not found", _TRANSIENT, sniffed) from None
            raise _NoThumbnail(422, INCOMPLETE, _TRANSIENT, sniffed) from None
        finally:
            await grid_out.close()


def _one_thumbnail(data: bytes, size: int, service: ThumbnailService) -> thumbnails.Thumbnail:
    # make_thumbnail looked up at call time, so a test can observe renders with a stand-in.
    return thumbnails.make_thumbnail(data, size, max_pixels=service.max_pixels)


def _thumbnails(
    data: bytes, sizes: list[int], service: ThumbnailService
) -> dict[int, thumbnails.Thumbnail]:
    return thumbnails.make_thumbnails(data, sizes, max_pixels=service.max_pixels)


# Why an image has no thumbnail: its bytes (kept in the cache), a configured limit (decided
# again each time, before any decode), or a state that may change (bytes or chunks missing).
_INTRINSIC, _LIMIT, _TRANSIENT = "intrinsic", "limit", "transient"


@dataclass
class _Made:
    """A thumbnail to send: bytes, type, and why it is the placeholder (None: it is real)."""

    data: bytes
    mime: str
    placeholder: str | None = None
    kind: str = _INTRINSIC


class _NoThumbnail(Exception):
    """No thumbnail: the status to answer, unless history promised one (then the placeholder)."""

    def __init__(self, status: int, reason: str, kind: str, sniffed: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.kind, self.sniffed = status, reason, kind, sniffed


def thumbnail_promised(record: FileRecord, sniffed: str | None) -> bool:
    """Whether a thumbnail request for this file must answer 200.

    True when history advertised the thumbnail (:func:`row_is_image`; for a GridFS file
    without a row, the sniffed type, as history decides it), or when the stored type is
    ``image/*``: the original client asks for a thumbnail of exactly those (its file lists'
    ``mime_type``), and the original answered them 200. Never for a file the migration
    flagged ``file_missing``: the file itself is a 404, and so is its thumbnail.
    """
    if record.row is None:
        return sniff.is_image_mime(sniffed)
    if record.row.get("file_missing") is True:
        return False
    stored = str(record.row.get("mime_type") or "")
    return row_is_image(record.row) or stored.lower().startswith("image/")


def _header_safe(text: str) -> str:
    """``text`` as a one-line printable-ASCII header value."""
    return re.sub(r"[^ -~]", "?", " ".join(text.split()))[:200]
