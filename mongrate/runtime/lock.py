"""The lease lock that keeps concurrent runs apart: its documents, its heartbeat, and the
context manager a run holds it with.

One document per lease, ``_id`` = "mongrate:<epoch>" (zero-padded). Contention is settled
only by inserting the next epoch: a unique-key insert is atomic everywhere, whereas FerretDB
v1 runs find_one_and_update as read-then-write, so a conditional upsert lets several runs in
at once. Only the owner ever writes its epoch document, and a run has lost the lock as soon as
a higher epoch exists.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from mongrate.errors import LockLostError, LockTimeoutError
from mongrate.mongo.codec import COMMAND_NOT_FOUND, MAJORITY, MAJORITY_READ, utcnow
from mongrate.mongo.collections import per_client
from mongrate.progress import Reporter

LOCK_ID = "mongrate"
#: leases kept as history below the current one, and how often older ones are dropped
KEEP_LEASES = 5
PRUNE_EVERY = 5


@dataclass(frozen=True)
class LockHolder:
    owner: str
    host: str
    pid: int
    command: str
    acquired_at: datetime
    expires_at: datetime
    lease_id: str = ""

    def describe(self) -> str:
        return (
            f"{self.host} pid {self.pid} ({self.command}) since "
            f"{self.acquired_at:%Y-%m-%d %H:%M:%S} UTC, lease until {self.expires_at:%H:%M:%S}"
        )


class Leases:
    """The lock collection of one database, as seen by one run (``owner``)."""

    def __init__(self, db: Database, collection: str):
        self.db = db
        self.lock = db.get_collection(collection, write_concern=MAJORITY,
                                      read_concern=MAJORITY_READ)
        self.owner = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.lease_id: str | None = None
        self._skew: timedelta | None = None

    # One document per lease, ``_id`` = "mongrate:<epoch>" (zero-padded). Contention is
    # settled only by inserting the next epoch: a unique-key insert is atomic everywhere,
    # whereas FerretDB v1 runs find_one_and_update as read-then-write, so a conditional
    # upsert lets several runs in at once. Only the owner ever writes its epoch document,
    # and a run has lost the lock as soon as a higher epoch exists.
    def now(self) -> datetime:
        """The server's clock (offset measured once), so hosts with skewed clocks agree
        on when a lease expires."""
        if self._skew is None:
            # the server's clock, not the database's: once per client (a fleet's databases
            # share one), not a round trip per database
            self._skew = per_client(self.db.client, "clock skew", self._measure_skew)
        return utcnow() + self._skew

    def _measure_skew(self) -> timedelta:
        before = utcnow()
        try:
            reply = self.db.command("hello")
        except OperationFailure as exc:
            if exc.code != COMMAND_NOT_FOUND:
                raise
            # MongoDB < 4.4.2 and mongo-java-server know only the legacy name
            reply = self.db.command("isMaster")
        server = reply.get("localTime")
        local = before + (utcnow() - before) / 2
        return (server - local) if isinstance(server, datetime) else timedelta(0)

    @staticmethod
    def _epoch_id(epoch: int) -> str:
        return f"{LOCK_ID}:{epoch:012d}"

    @staticmethod
    def _epochs(**bounds: str) -> dict:
        """A filter on lease ``_id``s (``mongrate:<epoch>``) within ``bounds``. A string
        range rather than ``$regex``: mongo-java-server ignores the other operators beside
        a ``$regex`` (``{$lt: x, $regex: r}`` matched every lease)."""
        return {"_id": {"$gte": f"{LOCK_ID}:", "$lt": f"{LOCK_ID};", **bounds}}

    def _latest_lease(self) -> dict | None:
        return self.lock.find_one(self._epochs(), sort=[("_id", DESCENDING)])

    @staticmethod
    def _holder_of(doc: dict | None) -> LockHolder | None:
        if not doc or doc.get("released"):
            return None
        return LockHolder(doc["owner"], doc.get("host", "?"), doc.get("pid", 0),
                          doc.get("command", "?"), doc["acquired_at"], doc["expires_at"],
                          doc["_id"])

    def holder(self) -> LockHolder | None:
        return self._holder_of(self._latest_lease())

    def try_acquire(self, lease: float, command: str) -> tuple[bool, LockHolder | None]:
        """One attempt. Returns (acquired, the expired holder we took over from, if any)."""
        latest = self._latest_lease()
        previous = self._holder_of(latest)
        now = self.now()
        if previous and previous.expires_at >= now:
            return False, None
        epoch = int(latest["_id"].rsplit(":", 1)[1]) + 1 if latest else 1
        doc = {
            "_id": self._epoch_id(epoch), "owner": self.owner, "host": self.host,
            "pid": self.pid, "command": command, "acquired_at": now,
            "expires_at": now + timedelta(seconds=lease), "released": False,
        }
        try:
            self.lock.insert_one(doc)
        except DuplicateKeyError:
            return False, None  # another run inserted this epoch first
        self.lease_id = doc["_id"]
        # older epochs are history; dropping them every PRUNE_EVERY-th lease keeps the
        # collection at a few documents without a write on every acquisition
        if epoch % PRUNE_EVERY == 0:
            self.lock.delete_many(self._epochs(**{"$lt": self._epoch_id(epoch - KEEP_LEASES)}))
        return True, previous

    def renew(self, lease: float) -> bool:
        """Extend our lease; False once a later epoch exists (our lease was taken over)."""
        if self.lease_id is None:
            return False
        if self.lock.find_one(self._epochs(**{"$gt": self.lease_id}), {"_id": 1}):
            return False
        result = self.lock.update_one(
            {"_id": self.lease_id, "owner": self.owner, "released": False},
            {"$set": {"expires_at": self.now() + timedelta(seconds=lease)}},
        )
        return result.matched_count == 1

    def release(self) -> None:
        if self.lease_id is not None:
            self.lock.update_one({"_id": self.lease_id, "owner": self.owner},
                                 {"$set": {"released": True, "released_at": self.now()}})
            self.lease_id = None

    def force_release(self, holder: LockHolder) -> bool:
        """Release exactly ``holder``'s lease (a lease taken since is not touched)."""
        result = self.lock.update_one(
            {"_id": holder.lease_id, "owner": holder.owner, "released": False},
            {"$set": {"released": True, "released_at": self.now(), "released_by": self.host}},
        )
        return result.matched_count == 1


class Heartbeat(threading.Thread):
    """Renews the lease every lease/3 seconds. ``lost`` is set when a later lease exists,
    or when no renewal has succeeded for a whole lease (the server was unreachable)."""

    def __init__(self, leases: Leases, lease: float):
        super().__init__(name="mongrate-heartbeat", daemon=True)
        self.leases = leases
        self.lease = lease
        self.lost = threading.Event()
        self._stop_event = threading.Event()
        self.last_renewed = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.wait(self.lease / 3):
            try:
                if not self.leases.renew(self.lease):
                    self.lost.set()
                    return
                self.last_renewed = time.monotonic()
            except PyMongoError:
                if time.monotonic() - self.last_renewed > self.lease:
                    self.lost.set()
                    return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class Lock:
    """Context manager for the lease lock: waits up to ``timeout`` showing the holder."""

    def __init__(self, leases: Leases, *, lease: float, timeout: float, command: str,
                 reporter: Reporter):
        self.leases, self.lease, self.timeout = leases, lease, timeout
        self.command, self.reporter = command, reporter
        self.heartbeat: Heartbeat | None = None

    def __enter__(self) -> Lock:
        deadline = time.monotonic() + self.timeout
        shown = None
        delay = 0.05
        while True:
            acquired, took_over = self.leases.try_acquire(self.lease, self.command)
            if acquired:
                if took_over:
                    self.reporter.info(f"took over an expired lock from {took_over.describe()}")
                break
            holder = self.leases.holder()
            if time.monotonic() >= deadline:
                who = holder.describe() if holder else "another run"
                raise LockTimeoutError(
                    f"lock not acquired within {self.timeout:g}s: held by {who}; wait for it, "
                    "or if that run is dead and its lease is long, 'mongrate unlock --force'"
                )
            if holder and (shown is None or shown != holder.owner):
                self.reporter.info(f"waiting for the lock held by {holder.describe()}")
                shown = holder.owner
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)  # a waiter notices a release within a quarter second
        self.heartbeat = Heartbeat(self.leases, self.lease)
        self.heartbeat.start()
        return self

    def check(self) -> None:
        """Raise LockLostError unless our lease is still ours (called between batches)."""
        hb = self.heartbeat
        if hb and (hb.lost.is_set() or time.monotonic() - hb.last_renewed > self.lease):
            raise LockLostError(
                "lost the lock (our lease expired and may have been taken over); stopped "
                "before writing more: run the command again to resume"
            )

    def __exit__(self, *exc: object) -> None:
        if self.heartbeat:
            self.heartbeat.stop()
            self.heartbeat.lost.set()  # a step thread still running must not write any more
        try:
            self.leases.release()
        except Exception:  # noqa: BLE001 - the lease will expire anyway; don't mask the real error
            pass
