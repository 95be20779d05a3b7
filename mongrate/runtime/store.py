"""What mongrate keeps in Mongo: current heads and the step log (the lease lock lives in
:mod:`mongrate.runtime.lock`), and the connection to the server."""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    ConfigurationError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from mongrate._version import __version__
from mongrate.config import Config, redact
from mongrate.errors import ConnectionFailure
from mongrate.mongo.codec import MAJORITY, MAJORITY_READ, exact_dates, utcnow
from mongrate.mongo.witness import CommandTally
from mongrate.runtime.lock import Leases


def url_options(url: str) -> dict[str, str]:
    """The URL's query options, names lower-cased (MongoDB option names ignore case)."""
    query = url.partition("?")[2].partition("#")[0]
    return {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}


def connect(config: Config, *, timeout_ms: int = 5000) -> tuple[MongoClient, Database]:
    """Connect and ping, turning every failure into one clear line within ~timeout."""
    name = config.database_name  # no database named: say so before trying the server
    client = connect_client(config, timeout_ms=timeout_ms)
    return client, exact_dates(client[name])


def client_options(url: str, *, timeout_ms: int = 5000) -> tuple[dict[str, Any], float]:
    """The options mongrate adds to ``url`` (those it does not set itself) and the seconds
    server selection then waits."""
    given = url_options(url)
    ours = {"serverSelectionTimeoutMS": timeout_ms, "connectTimeoutMS": timeout_ms,
            "socketTimeoutMS": None, "appname": f"mongrate {__version__}"}
    options = {k: v for k, v in ours.items() if k.lower() not in given}
    try:
        waited = float(given.get("serverselectiontimeoutms", timeout_ms)) / 1000
    except ValueError:  # pymongo would only warn, and wait its default 30 s
        raise ConnectionFailure(
            f"bad server URL {redact(url)}: serverSelectionTimeoutMS must be a number of "
            "milliseconds") from None
    return options, waited


def connect_client(config: Config, *, timeout_ms: int = 5000) -> MongoClient:
    """A pinged client for the server of ``config`` (no database needed). Options in the
    URL win: ours only fill in what it does not set."""
    url = config.require_url()
    options, waited = client_options(url, timeout_ms=timeout_ms)
    try:
        # the tally lets a rewrite prove nobody else wrote without reading again (witness)
        client: MongoClient = MongoClient(url, **options, event_listeners=[CommandTally()])
        client.admin.command("ping")
        return client
    except ServerSelectionTimeoutError:
        raise ConnectionFailure(
            f"cannot reach the server at {redact(url)} within {waited:g}s: "
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


class Store:
    """Heads, log and lock of one database."""

    def __init__(self, db: Database, config: Config):
        db = exact_dates(db)  # a fleet's db comes from its own client
        self.db = db
        self.config = config
        # Majority on replica sets and sharded clusters: what decides the next step (heads,
        # log, lock, undo) is never read from, or written to, one member alone.
        def own(name: str) -> Collection:
            return db.get_collection(name, write_concern=MAJORITY, read_concern=MAJORITY_READ)

        self.versions = own(config.version_collection)
        self.log = own(config.log_collection)
        self.undo = own(config.undo_collection)
        self.backups = own(config.backups_collection)
        self.leases = Leases(db, config.lock_collection)

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
            "host": self.leases.host,
            "pid": self.leases.pid,
            "owner": self.leases.owner,
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
