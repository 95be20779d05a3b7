"""The decode pool of one app: worker threads, two fair lanes of decode budget, memory trim.

Every decode of an untrusted image (a thumbnail, an upload's verification) first waits for
its estimated bytes (:func:`app_patch.service.thumbnails.estimate_cost`) in its owner's turn,
and only then runs on one of ``workers`` threads. One :class:`DecodePool` belongs to one app
(created with its services, see :mod:`app_patch.service.router`): two apps in one process
with different settings do not share limits. The operator tools make their own.

Thread-safe and loop-agnostic: async waiters of any event loop and blocking waiters (worker
threads) share one budget, so a pool outlives the event loops of its app.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import platform
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import BinaryIO, TypeVar

from app_patch.service import thumbnails
from app_patch.service.fairness import FairBudget, Grant
from app_patch.service.thumbnails import ESTIMATE_HEAD, Thumbnail, estimate_cost

T = TypeVar("T")

#: Decodes up to this many bytes (pixels decoded plus the source) take the small lane.
SMALL_DECODE_BYTES = 16 * 1024 * 1024
#: Uploads render their thumbnails from the verification decode when it is at most this.
RENDER_AT_UPLOAD = 64 * 1024 * 1024
#: Default cap on the bytes of all large decodes in flight (one larger than this runs alone).
DEFAULT_DECODE_BUDGET = 128 * 1024 * 1024
#: After a decode this large, freed heap goes back to the OS (glibc keeps it otherwise).
TRIM_AFTER_BYTES = 32 * 1024 * 1024
#: The owner of work nobody waits for (pre-generation): one turn among the users.
BACKGROUND = "~background"


# --- memory ------------------------------------------------------------------------------


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_libc = _glibc()


def fix_mmap_threshold() -> None:
    """Have glibc map every allocation of MMAP_THRESHOLD or more on its own.

    By default glibc raises its mmap threshold to the size of the largest block freed (up
    to 32 MB), so after the first large decode Pillow's 16 MB image blocks and libtiff's
    strip buffers come from the heap, where freed memory stays: RSS creeps up decode after
    decode and never comes down. A fixed threshold gives each such block back on free. An
    operator's own MALLOC_MMAP_THRESHOLD_ wins. Process-wide by nature (one allocator), and
    idempotent: every pool sets the same value.
    """
    if _libc is not None and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        _libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def give_memory_back() -> None:
    """Return freed heap pages to the OS (glibc only; elsewhere a no-op): what smaller
    allocations left in the arenas after a large decode. Milliseconds; called after
    decodes of TRIM_AFTER_BYTES or more."""
    if _libc is not None:
        _libc.malloc_trim(0)


# --- the pool ----------------------------------------------------------------------------


class DecodeSlot:
    """Bytes of the decode budget held for one job; :meth:`run` it on the pool's workers."""

    def __init__(self, pool: DecodePool, grant: Grant, cost: int) -> None:
        self._pool, self._grant, self.cost, self._handed_over = pool, grant, cost, False

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the worker pool. Once only: the job then owns the grant and
        releases it when it ends, even if this caller is cancelled meanwhile (the memory is
        in use until the thread finishes, cancelled or not)."""
        if self._handed_over:
            raise RuntimeError("a DecodeSlot runs one job")
        self._handed_over = True
        grant = self._grant
        try:
            job = self._pool.submit(self.cost, fn, *args)
        except BaseException:
            grant.release()
            raise
        job.add_done_callback(lambda _: grant.release())  # also when cancelled before start
        return await asyncio.wrap_future(job)

    def release_unused(self) -> None:
        if not self._handed_over:
            self._grant.release()


class DecodePool:
    """``workers`` decode threads and the budget of bytes decoded at once.

    Two lanes, both serving their owners (users) in turn: the small lane (any number of
    bytes, one grant per worker) for decodes up to ``SMALL_DECODE_BYTES``; the large lane
    (``budget`` bytes, one worker kept free for the small lane) for the rest. So a queue of
    huge images from one user delays neither another user's huge image by more than one
    turn nor anyone's small one at all. After a decode of ``TRIM_AFTER_BYTES`` or more the
    freed heap goes back to the OS.
    """

    def __init__(self, workers: int, budget: int = DEFAULT_DECODE_BUDGET) -> None:
        for name, value in (("workers", workers), ("budget", budget)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.workers, self.budget = workers, budget
        self.small = FairBudget(max_grants=workers)
        self.large = FairBudget(budget, max_grants=max(1, workers - 1))
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def lane(self, cost: int) -> FairBudget:
        """The lane a decode of ``cost`` bytes waits in."""
        return self.small if cost <= SMALL_DECODE_BYTES else self.large

    def submit(self, cost: int, fn: Callable[..., T], *args: object) -> Future[T]:
        """``fn(*args)`` on a worker (the caller holds ``cost`` bytes of the budget)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the decode pool is closed")
            if self._executor is None:  # threads only once something decodes
                fix_mmap_threshold()
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="thumbnail")
            executor = self._executor
        return executor.submit(_decode_job, cost, fn, *args)

    @asynccontextmanager
    async def slot(self, cost: int, owner: str = "") -> AsyncIterator[DecodeSlot]:
        """Wait for ``cost`` bytes of the budget, in ``owner``'s turn.

        Acquire before reading a large source, so a queue of requests holds no image bytes.
        """
        slot = DecodeSlot(self, await self.lane(cost).acquire(owner, cost), cost)
        try:
            yield slot
        finally:
            slot.release_unused()

    @contextmanager
    def slot_blocking(self, cost: int, owner: str = "") -> Iterator[None]:
        """:meth:`slot` for code running on its own threads (the operator tools): block for
        the budget, run the decode in the calling thread, give memory back after."""
        grant = self.lane(cost).acquire_blocking(owner, cost)
        try:
            yield
        finally:
            if cost >= TRIM_AFTER_BYTES:
                give_memory_back()
            grant.release()

    def close(self) -> None:
        """Stop taking work; jobs already submitted finish on their threads."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    # -- the decodes the app runs ---------------------------------------------------------

    async def make_thumbnail(
        self,
        data: bytes | BinaryIO,
        size: int,
        *,
        max_pixels: int | None = None,
        owner: str = "",
    ) -> Thumbnail:
        """:func:`~app_patch.service.thumbnails.make_thumbnail` on a worker, in ``owner``'s
        turn. A waiter that is cancelled never starts; a job that started keeps its bytes
        until its thread is done."""
        data = _as_bytes(data)
        cost = estimate_cost(
            bytes(data[:ESTIMATE_HEAD]), size, source_bytes=len(data), max_pixels=max_pixels
        )
        async with self.slot(cost, owner) as slot:
            return await slot.run(_make_thumbnail, data, size, max_pixels)

    async def verify_image(
        self, data: bytes | BinaryIO, *, max_pixels: int | None = None, owner: str = ""
    ) -> tuple[str, int, int]:
        """:func:`~app_patch.service.thumbnails.verify_image` on a worker (it decodes, so it
        shares the budget)."""
        data = _as_bytes(data)
        cost = estimate_cost(
            bytes(data[:ESTIMATE_HEAD]), source_bytes=len(data), max_pixels=max_pixels
        )
        async with self.slot(cost, owner) as slot:
            return await slot.run(_verify_image, data, max_pixels)

    async def verify_and_render(
        self,
        data: bytes,
        sizes: Iterable[int],
        *,
        max_pixels: int | None = None,
        owner: str = "",
    ) -> tuple[str, int, int, dict[int, Thumbnail]]:
        """:func:`~app_patch.service.thumbnails.verify_and_render` on a worker when the
        decode is at most RENDER_AT_UPLOAD bytes (a JPEG at a thumbnail's DCT scale, a photo
        of up to about 16 megapixels), else :meth:`verify_image` and no thumbnails:
        shrinking a huge image is left to the background rather than added to the upload's
        wait."""
        sizes = tuple(sizes)
        head = bytes(data[:ESTIMATE_HEAD])
        cost = (
            estimate_cost(head, sizes[0], source_bytes=len(data), max_pixels=max_pixels)
            if sizes
            else 0
        )
        if not sizes or cost > RENDER_AT_UPLOAD:
            return (*await self.verify_image(data, max_pixels=max_pixels, owner=owner), {})
        async with self.slot(cost, owner) as slot:
            return await slot.run(_verify_and_render, data, sizes, max_pixels)


def _as_bytes(data: bytes | BinaryIO) -> bytes | bytearray | memoryview:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    if not hasattr(data, "read"):
        raise TypeError(f"image data must be bytes or a binary file, not {type(data).__name__}")
    try:
        data.seek(0)
    except (AttributeError, OSError, ValueError):  # not seekable: read what is left
        pass
    return data.read()


def _decode_job(cost: int, fn: Callable[..., T], *args: object) -> T:
    try:
        return fn(*args)
    finally:
        if cost >= TRIM_AFTER_BYTES:
            give_memory_back()  # the decoded image is gone once fn has returned


# The pipeline's functions are looked up when the job runs, so a test can observe the
# workers with a stand-in for them.
def _make_thumbnail(data: bytes, size: int, max_pixels: int | None) -> Thumbnail:
    return thumbnails.make_thumbnail(data, size, max_pixels=max_pixels)


def _verify_image(data: bytes, max_pixels: int | None) -> tuple[str, int, int]:
    return thumbnails.verify_image(data, max_pixels=max_pixels)


def _verify_and_render(
    data: bytes, sizes: tuple[int, ...], max_pixels: int | None
) -> tuple[str, int, int, dict[int, Thumbnail]]:
    return thumbnails.verify_and_render(data, sizes, max_pixels=max_pixels)
