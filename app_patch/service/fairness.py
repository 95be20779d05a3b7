"""A semaphore that counts units (bytes, slots) and serves its owners (users) in turn.

Used for the decode budget of thumbnails (bytes of decoded pixels in flight) and for the
upload slots (uploads parsed and stored at once). One user's queue of requests then cannot
hold every unit: waiters are granted round-robin by owner, first-come first-served within
an owner, and optionally at most ``per_owner`` grants are held by one owner at a time.

Thread-safe and loop-agnostic: async waiters (any event loop) and blocking waiters (worker
threads, the operator tools) share one budget, which is what the process-wide decode cap
needs.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager


class _Waiter:
    __slots__ = ("owner", "units", "wake", "granted")

    def __init__(self, owner: str, units: int, wake: Callable[[], None]) -> None:
        self.owner, self.units, self.wake, self.granted = owner, units, wake, False


class FairBudget:
    """``capacity`` units (None: unbounded), at most ``max_grants`` holders (None: any),
    at most ``per_owner`` holders per owner (None: any).

    The turn goes to the waiting owner served least recently. A request larger than the
    whole capacity is granted once nothing else is held, so it runs alone rather than never.
    Turns are strict: when the owner whose turn it is cannot be served yet, nobody else is,
    so a large request is never starved by a stream of small ones from other owners. An
    owner at its ``per_owner`` cap loses its turn instead (serving it has to wait for its
    own release anyway).
    """

    def __init__(
        self,
        capacity: int | None = None,
        *,
        max_grants: int | None = None,
        per_owner: int | None = None,
    ) -> None:
        for name, value in (
            ("capacity", capacity),
            ("max_grants", max_grants),
            ("per_owner", per_owner),
        ):
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        self.capacity, self.max_grants, self.per_owner = capacity, max_grants, per_owner
        self._lock = threading.Lock()
        self._queues: OrderedDict[str, deque[_Waiter]] = OrderedDict()  # in arrival order
        self._held: dict[str, int] = {}
        self._served: dict[str, int] = {}  # owner -> tick of its latest grant
        self._tick = 0
        self.in_use = 0
        self.grants = 0

    # -- state (call with the lock held) ----------------------------------------------------

    def _fits(self, waiter: _Waiter) -> bool:
        if self.max_grants is not None and self.grants >= self.max_grants:
            return False
        if self.capacity is None or self.in_use + waiter.units <= self.capacity:
            return True
        return self.grants == 0  # larger than the whole budget: alone

    def _owner_full(self, owner: str) -> bool:
        return self.per_owner is not None and self._held.get(owner, 0) >= self.per_owner

    def _grant(self, waiter: _Waiter) -> None:
        waiter.granted = True
        self.in_use += waiter.units
        self.grants += 1
        self._held[waiter.owner] = self._held.get(waiter.owner, 0) + 1

    def _dispatch(self) -> list[_Waiter]:
        """Grant what the turn order allows; return the waiters to wake (outside the lock).

        The turn is the waiting owner served least recently (never, for a newcomer), ties
        going to the one that queued first.
        """
        woken = []
        while self._queues:
            ready = [o for o in self._queues if not self._owner_full(o)]
            if not ready:
                break
            owner = min(ready, key=lambda o: self._served.get(o, 0))
            queue = self._queues[owner]
            if not self._fits(queue[0]):
                break
            waiter = queue.popleft()
            if not queue:
                del self._queues[owner]
            self._grant(waiter)
            self._tick += 1
            self._served[owner] = self._tick
            woken.append(waiter)
        return woken

    def _tidy(self, owner: str) -> None:
        """Forget when an owner was served once it neither waits nor holds anything."""
        if owner not in self._queues and owner not in self._held:
            self._served.pop(owner, None)

    def _enqueue(self, waiter: _Waiter) -> list[_Waiter]:
        self._queues.setdefault(waiter.owner, deque()).append(waiter)
        return self._dispatch()

    def _forget(self, waiter: _Waiter) -> list[_Waiter]:
        """A waiter gave up: drop it if queued, else release what it was granted."""
        if waiter.granted:
            return self._release(waiter)
        queue = self._queues.get(waiter.owner)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[waiter.owner]
        self._tidy(waiter.owner)
        return self._dispatch()  # it may have been the head that blocked the others

    def _release(self, waiter: _Waiter) -> list[_Waiter]:
        waiter.granted = False
        self.in_use -= waiter.units
        self.grants -= 1
        left = self._held[waiter.owner] - 1
        if left:
            self._held[waiter.owner] = left
        else:
            del self._held[waiter.owner]
            self._tidy(waiter.owner)
        return self._dispatch()

    @staticmethod
    def _wake(woken: list[_Waiter]) -> None:
        for waiter in woken:
            waiter.wake()

    # -- public -----------------------------------------------------------------------------

    def waiting(self) -> int:
        """How many requests wait (for tests and logs)."""
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def _settle(self, waiter: _Waiter) -> None:
        with self._lock:
            woken = self._forget(waiter)
        self._wake(woken)

    async def acquire(self, owner: str, units: int = 1) -> Grant:
        """Wait (asynchronously) for ``units`` on behalf of ``owner``.

        The grant may be released from any thread, exactly once however often it is called.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # its loop is closed: nobody will ever use the grant
                self._settle(waiter)

        waiter = _Waiter(owner, units, wake)
        with self._lock:
            woken = self._enqueue(waiter)
        self._wake(woken)
        try:
            await future
        except BaseException:  # cancelled while waiting, or just as it was granted
            self._settle(waiter)
            raise
        return Grant(self, waiter)

    def acquire_blocking(self, owner: str, units: int = 1) -> Grant:
        """:meth:`acquire` for threads: block until granted."""
        event = threading.Event()
        waiter = _Waiter(owner, units, event.set)
        with self._lock:
            woken = self._enqueue(waiter)
        self._wake(woken)
        try:
            event.wait()
        except BaseException:
            self._settle(waiter)
            raise
        return Grant(self, waiter)

    @asynccontextmanager
    async def hold(self, owner: str, units: int = 1) -> AsyncIterator[None]:
        """``units`` for ``owner`` while the block runs."""
        grant = await self.acquire(owner, units)
        try:
            yield
        finally:
            grant.release()

    @contextmanager
    def hold_blocking(self, owner: str, units: int = 1) -> Iterator[None]:
        """:meth:`hold` for threads."""
        grant = self.acquire_blocking(owner, units)
        try:
            yield
        finally:
            grant.release()


class Grant:
    """Units held from a :class:`FairBudget`; :meth:`release` gives them back once."""

    __slots__ = ("_budget", "_waiter")

    def __init__(self, budget: FairBudget, waiter: _Waiter) -> None:
        self._budget, self._waiter = budget, waiter

    def release(self) -> None:
        budget = self._budget
        with budget._lock:
            woken = budget._release(self._waiter) if self._waiter.granted else []
        budget._wake(woken)
