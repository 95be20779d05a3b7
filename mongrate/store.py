"""What mongrate keeps in Mongo: current heads, the step log, the lease lock.

This is the only module that knows those collection names (they come from Config).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.database import Database
from pymongo.errors import (
    ConfigurationError,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from mongrate._version import __version__
from mongrate.config import Config
from mongrate.errors import ConnectionFailure

LOCK_ID = "mongrate"


def utcnow() -> datetime:
    """Naive UTC with millisecond precision: what BSON dates hold, so values round-trip."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    cred, _, host = rest.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def connect(config: Config, *, timeout_ms: int = 5000) -> tuple[MongoClient, Database]:
    """Connect and ping, turning every failure into one clear line within ~timeout."""
    url = config.require_url()
    try:
        client: MongoClient = MongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=None,
            appname=f"mongrate {__version__}",
        )
        db = client[config.database_name]
        db.command("ping")
        return client, db
    except ServerSelectionTimeoutError:
        raise ConnectionFailure(
            f"cannot reach the server at {redact(url)} within {timeout_ms / 1000:.0f}s: "
            "is it running, and are host and port right?"
        ) from None
    except ConfigurationError as exc:
        raise ConnectionFailure(f"bad server URL {redact(url)}: {exc}") from None
    except OperationFailure as exc:
        if exc.code in (18, 13):  # AuthenticationFailed, Unauthorized
            raise ConnectionFailure(
                f"the server at {redact(url)} refused the credentials: check user and password"
            ) from None
        raise ConnectionFailure(f"server error on connect: {exc.details or exc}") from None
    except PyMongoError as exc:
        raise ConnectionFailure(f"cannot connect to {redact(url)}: {exc}") from None


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


class Store:
    """Heads, log and lock of one database."""

    def __init__(self, db: Database, config: Config):
        self.db = db
        self.config = config
        self.versions = db[config.version_collection]
        self.log = db[config.log_collection]
        self.lock = db[config.lock_collection]
        self.undo = db[config.undo_collection]
        self.backups = db[config.backups_collection]
        self.owner = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.lease_id: str | None = None
        self._skew: timedelta | None = None

    # ---------------------------------------------------------------- heads
    def heads(self) -> tuple[str, ...]:
        return tuple(sorted(d["_id"] for d in self.versions.find({}, {"_id": 1})))

    def move_heads(self, old: Iterable[str], new: Iterable[str]) -> None:
        """Make the version collection hold exactly ``new``.

        Adds before it removes: an interruption in between leaves an extra head that
        is an ancestor of the new one, which :func:`normalize_heads` drops on read,
        never a state that forgets a step.
        """
        old, new = set(old), set(new)
        for rev in sorted(new - old):
            self.versions.update_one({"_id": rev}, {"$set": {"applied_at": utcnow()}}, upsert=True)
        gone = sorted(old - new)
        if gone:
            self.versions.delete_many({"_id": {"$in": gone}})

    def set_heads(self, new: Iterable[str]) -> None:
        self.move_heads(self.heads(), new)

    # ------------------------------------------------------------------ log
    def ensure_indexes(self) -> None:
        self.log.create_index([("revision", ASCENDING), ("started_at", DESCENDING)], name="rev_time")
        self.log.create_index([("status", ASCENDING)], name="status")
        # kind is part of the key: a document whose _id is "index:x" must not collide
        # with the record of index x
        self.undo.create_index(
            [("revision", ASCENDING), ("collection", ASCENDING), ("kind", ASCENDING),
             ("doc_id", ASCENDING)],
            name="rev_coll_kind_doc", unique=True,
        )

    def log_start(self, revision: str, direction: str, *, checksum: str | None,
                  run_id: str, resumed: bool = False) -> tuple[Any, datetime]:
        doc = {
            "revision": revision,
            "direction": direction,
            "status": "started",
            "started_at": utcnow(),
            "finished_at": None,
            "duration": None,
            "error": None,
            "checksum": checksum,
            "host": self.host,
            "pid": self.pid,
            "owner": self.owner,
            "run_id": run_id,
            "resumed": resumed,
            "mongrate_version": __version__,
        }
        return self.log.insert_one(doc).inserted_id, doc["started_at"]

    def log_finish(self, log_id: Any, status: str, *, started_at: datetime,
                   error: BaseException | None = None, extra: dict | None = None) -> None:
        finished = utcnow()
        update: dict[str, Any] = {
            "status": status,
            "finished_at": finished,
            "duration": (finished - started_at).total_seconds(),
        }
        if error is not None:
            update["error"] = f"{type(error).__name__}: {error}"
            update["traceback"] = "".join(
                traceback.format_exception(type(error), error, error.__traceback__)
            )[-8000:]
        if extra:
            update.update(extra)
        self.log.update_one({"_id": log_id}, {"$set": update})

    def interrupted(self) -> list[dict]:
        """Steps logged as started that never finished (their run died)."""
        return list(self.log.find({"status": "started"}).sort("started_at", ASCENDING))

    def mark_interrupted(self, entries: Iterable[dict], *, by_run: str) -> None:
        ids = [e["_id"] for e in entries]
        if ids:
            self.log.update_many(
                {"_id": {"$in": ids}, "status": "started"},
                {"$set": {"status": "interrupted", "finished_at": utcnow(), "detected_by": by_run}},
            )

    def last_successes(self, revisions: Iterable[str]) -> dict[str, dict]:
        """The latest succeeded upgrade of each revision: one query for all of them."""
        latest: dict[str, dict] = {}
        query = {"revision": {"$in": list(revisions)}, "direction": "upgrade",
                 "status": "succeeded"}
        for entry in self.log.find(query, {"traceback": 0}).sort("started_at", ASCENDING):
            latest[entry["revision"]] = entry
        return latest

    def last_failures(self) -> list[dict]:
        """Revisions whose most recent step failed (newest entry per revision and direction)."""
        newest: dict[tuple, dict] = {}
        query = {"direction": {"$in": ["upgrade", "downgrade"]}}
        for entry in self.log.find(query, {"traceback": 0}).sort("started_at", ASCENDING):
            newest[entry["revision"]] = entry
        return [e for e in newest.values() if e["status"] == "failed"]

    def log_entries(self, revisions: Iterable[str] | None = None,
                    per_revision: int = 5) -> dict[str, list[dict]]:
        """Newest log entries of each revision (one query), newest first."""
        query = {"revision": {"$in": list(revisions)}} if revisions is not None else {}
        grouped: dict[str, list[dict]] = {}
        for entry in self.log.find(query, {"traceback": 0}).sort("started_at", DESCENDING):
            group = grouped.setdefault(entry["revision"], [])
            if len(group) < per_revision:
                group.append(entry)
        return grouped

    # ----------------------------------------------------------------- lock
    # One document per lease, ``_id`` = "mongrate:<epoch>" (zero-padded). Contention is
    # settled only by inserting the next epoch: a unique-key insert is atomic everywhere,
    # whereas FerretDB v1 runs find_one_and_update as read-then-write, so a conditional
    # upsert lets several runs in at once. Only the owner ever writes its epoch document,
    # and a run has lost the lock as soon as a higher epoch exists.
    def now(self) -> datetime:
        """The server's clock (offset measured once), so hosts with skewed clocks agree
        on when a lease expires."""
        if self._skew is None:
            before = utcnow()
            server = self.db.command("hello").get("localTime")
            local = before + (utcnow() - before) / 2
            self._skew = (server - local) if isinstance(server, datetime) else timedelta(0)
        return utcnow() + self._skew

    @staticmethod
    def _epoch_id(epoch: int) -> str:
        return f"{LOCK_ID}:{epoch:012d}"

    def _latest_lease(self) -> dict | None:
        return self.lock.find_one({"_id": {"$regex": f"^{LOCK_ID}:"}}, sort=[("_id", DESCENDING)])

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
        # older epochs are history; dropping them keeps the collection at a few documents
        self.lock.delete_many({"_id": {"$lt": self._epoch_id(max(epoch - 5, 0)),
                                       "$regex": f"^{LOCK_ID}:"}})
        return True, previous

    def renew(self, lease: float) -> bool:
        """Extend our lease; False once a later epoch exists (our lease was taken over)."""
        if self.lease_id is None:
            return False
        if self.lock.find_one({"_id": {"$gt": self.lease_id, "$regex": f"^{LOCK_ID}:"}}, {"_id": 1}):
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

    def __init__(self, store: Store, lease: float):
        super().__init__(name="mongrate-heartbeat", daemon=True)
        self.store = store
        self.lease = lease
        self.lost = threading.Event()
        self._stop_event = threading.Event()
        self.last_renewed = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.wait(self.lease / 3):
            try:
                if not self.store.renew(self.lease):
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
