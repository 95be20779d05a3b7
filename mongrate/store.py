"""What mongrate keeps in Mongo: current heads, the step log, the lease lock.

This is the only module that knows those collection names (they come from Config).
"""

from __future__ import annotations

import os
import socket
import threading
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
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
        self.undo.create_index(
            [("revision", ASCENDING), ("collection", ASCENDING), ("doc_id", ASCENDING)],
            name="rev_coll_doc", unique=True,
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

    def last_success(self, revision: str, direction: str = "upgrade") -> dict | None:
        return self.log.find_one(
            {"revision": revision, "direction": direction, "status": "succeeded"},
            sort=[("started_at", DESCENDING)],
        )

    def log_entries(self, revision: str | None = None, limit: int = 0) -> list[dict]:
        query = {"revision": revision} if revision else {}
        return list(self.log.find(query).sort("started_at", DESCENDING).limit(limit))

    # ----------------------------------------------------------------- lock
    def holder(self) -> LockHolder | None:
        doc = self.lock.find_one({"_id": LOCK_ID})
        if not doc or doc.get("owner") is None:
            return None
        return LockHolder(doc["owner"], doc.get("host", "?"), doc.get("pid", 0),
                          doc.get("command", "?"), doc["acquired_at"], doc["expires_at"])

    def try_acquire(self, lease: float, command: str) -> tuple[bool, LockHolder | None]:
        """One atomic attempt. Returns (acquired, previous holder if we took an expired lease)."""
        now = utcnow()
        previous = self.holder()
        fields = {
            "owner": self.owner, "host": self.host, "pid": self.pid, "command": command,
            "acquired_at": now, "expires_at": now + timedelta(seconds=lease),
        }
        try:
            doc = self.lock.find_one_and_update(
                {"_id": LOCK_ID, "$or": [
                    {"owner": None}, {"expires_at": {"$lt": now}}, {"owner": self.owner},
                ]},
                {"$set": fields},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False, None  # the lock document exists and is held: the filter missed
        took_over = previous if previous and previous.owner != self.owner else None
        return doc is not None and doc.get("owner") == self.owner, took_over

    def renew(self, lease: float) -> bool:
        result = self.lock.update_one(
            {"_id": LOCK_ID, "owner": self.owner},
            {"$set": {"expires_at": utcnow() + timedelta(seconds=lease)}},
        )
        return result.matched_count == 1

    def release(self) -> None:
        self.lock.update_one({"_id": LOCK_ID, "owner": self.owner}, {"$set": {"owner": None}})

    def force_release(self) -> LockHolder | None:
        holder = self.holder()
        self.lock.update_one({"_id": LOCK_ID}, {"$set": {"owner": None}})
        return holder


class Heartbeat(threading.Thread):
    """Renews the lease every lease/3 seconds; ``lost`` is set if renewal fails."""

    def __init__(self, store: Store, lease: float):
        super().__init__(name="mongrate-heartbeat", daemon=True)
        self.store = store
        self.lease = lease
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.lease / 3):
            try:
                if not self.store.renew(self.lease):
                    self.lost.set()
                    return
            except PyMongoError:
                continue  # a blip: the next beat retries well before the lease runs out

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
