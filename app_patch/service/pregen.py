"""Thumbnails before anyone asks: an upload's thumbnails, made in the background.

The upload hands over what its verification already rendered (see
:func:`app_patch.service.uploads.validate_file`: a cheap decode renders the sizes it allows).
One background task per app stores those and renders the missing sizes from GridFS, one
decode per image, in the decode budget's background turn, so users' own requests keep
theirs. Until stored, rendered thumbnails are served from memory.

Bounded: at most ``capacity`` images wait; when the queue is full an image's thumbnails are
dropped with one log line (they are made on first view instead). Failure-safe: nothing here
can fail an upload, and a failure is one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import HTTPException

from app_patch.service import thumbnails
from app_patch.service.storage import ChatStore
from app_patch.service.thumbservice import ThumbnailService
from app_patch.service.uploads import IncomingFile

log = logging.getLogger(__name__)
#: The default size first: it is the one history's thumbnail_url shows.
ORDER = sorted(thumbnails.THUMB_SIZES, key=lambda size: size != thumbnails.DEFAULT_SIZE)

SETTLE_SECONDS = 0.25
_Job = tuple[str, str, dict[int, thumbnails.Thumbnail]]


class Pregenerator:
    """The background queue of one app (one event loop)."""

    def __init__(self, thumbs: ThumbnailService, store: ChatStore, capacity: int) -> None:
        self.thumbs, self.store, self.capacity = thumbs, store, capacity
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(max(1, capacity))
        self._worker: asyncio.Task[None] | None = None

    def submit(self, user_id: str, files: list[IncomingFile]) -> int:
        """Queue the stored images among ``files``; returns how many were queued."""
        if self.capacity == 0:
            return 0
        queued = 0
        for item in files:
            if not (item.is_image and item.file_id):
                continue
            if self.queue.full():
                log.warning(
                    "background thumbnails: queue full (%d images); %s will get its "
                    "thumbnails on first view",
                    self.capacity,
                    item.file_id,
                )
                continue
            self.thumbs.remember(item.file_id, item.thumbs)
            self.queue.put_nowait((item.file_id, user_id, dict(item.thumbs)))
            queued += 1
        if queued and (self._worker is None or self._worker.done()):
            self._worker = asyncio.get_running_loop().create_task(self._work())
        return queued

    async def drain(self) -> None:
        """Wait until every queued image is done (tests and benchmarks)."""
        await self.queue.join()

    async def aclose(self) -> None:
        """Stop the worker; what is still queued is dropped (made on first view)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        while not self.queue.empty():
            self._forget(self.queue.get_nowait())
            self.queue.task_done()

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            # The uploader's frontend asks for the new message's thumbnails right away; they
            # are served from memory, faster without this job's writes competing for the
            # database. Background work goes second.
            await asyncio.sleep(SETTLE_SECONDS)
            try:
                await self._one(*job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one line, and on to the next image
                log.warning(
                    "background thumbnails of %s failed: %s: %s", job[0], type(exc).__name__, exc
                )
            finally:
                self._forget(job)
                self.queue.task_done()

    async def _one(
        self, file_id: str, user_id: str, rendered: dict[int, thumbnails.Thumbnail]
    ) -> None:
        record = await self.store.find_file(file_id, user_id)
        if record is None:
            return  # deleted meanwhile
        try:
            await self.thumbs.pregenerate(self.store, record, user_id, ORDER, rendered)
        except HTTPException as exc:
            if exc.status_code != 404:  # 404: deleted while rendering, nothing to say
                log.warning("background thumbnails of %s: %s", file_id, exc.detail)

    def _forget(self, job: _Job) -> None:
        file_id, _, rendered = job
        self.thumbs.forget(file_id, list(rendered))
