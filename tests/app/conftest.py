"""Fixtures for the web-layer tests: a real FerretDB database, the app, tokens, data helpers.

``apply_contract`` turns pre-change data (as :mod:`app_patch.testdata.seed` writes it) into the
post-migration shape of notes/SCHEMA.md, the way the revisions will, so the endpoint tests
do not depend on ``versions/``. It is test-scale code (a query per row is fine here).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from gridfs import GridFSBucket
from pymongo import monitoring
from pymongo.database import Database

from app_patch.service import thumbnails
from app_patch.service.app import create_app
from app_patch.service.auth import issue_token
from app_patch.service.settings import Settings
from app_patch.sniff import is_image_mime, normalise_mime, sniff_mime


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The service's tests run on FerretDB only: they test the app, not the server, and
    running them twice would double the suite's longest part. The engine, versions/ and
    the testing kit run on both servers."""
    metafunc.definition.add_marker(pytest.mark.mongo_servers("ferretdb", "url"))


SECRET = "test-access-secret-0123456789abcdef"
ALICE = "user-alice"
BOB = "user-bob"
LINK_WINDOW = dt.timedelta(minutes=10)
DATA_COMMANDS = frozenset(
    {"find", "getMore", "aggregate", "insert", "update", "delete", "count", "findAndModify"}
)


class CommandLog(monitoring.CommandListener):
    """Records every command the app's client sends (a round trip each)."""

    def __init__(self) -> None:
        self.started_events: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.started_events.append((event.command_name, str(target)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def clear(self) -> None:
        self.started_events.clear()

    def data_commands(self) -> list[tuple[str, str]]:
        """Commands that read or write data (not handshakes or session bookkeeping)."""
        return [e for e in self.started_events if e[0] in DATA_COMMANDS]


def bearer(user_id: str, **claims: Any) -> dict[str, str]:
    """Headers carrying a valid token for ``user_id``."""
    return {"Authorization": f"Bearer {issue_token(user_id, SECRET, **claims)}"}


@pytest.fixture
def settings(mongo_url: str) -> Settings:
    return Settings(mongodb_url=mongo_url, jwt_secret=SECRET, demo_user_id=ALICE, demo_mode=True)


@pytest.fixture
def command_log() -> CommandLog:
    return CommandLog()


@pytest.fixture
def client(settings: Settings, command_log: CommandLog) -> Iterator[Any]:
    """A TestClient running the app's lifespan against the test's own database."""
    from fastapi.testclient import TestClient

    app = create_app(settings, client_kwargs={"event_listeners": [command_log]})
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes rendered by make_thumbnail (the pool looks it up at call time; one-size
    background renders go through it too)."""
    calls: list[int] = []
    real = thumbnails.make_thumbnail

    def counting(data: Any, size: int, **kw: Any) -> Any:
        calls.append(size)
        return real(data, size, **kw)

    monkeypatch.setattr(thumbnails, "make_thumbnail", counting)
    return calls


@pytest.fixture
def alice() -> dict[str, str]:
    return bearer(ALICE)


@pytest.fixture
def bob() -> dict[str, str]:
    return bearer(BOB)


def t0() -> dt.datetime:
    return dt.datetime(2025, 6, 2, 12, 0, 0)


def at(seconds: float) -> dt.datetime:
    """A message time ``seconds`` after a fixed start (millisecond precision)."""
    return t0() + dt.timedelta(seconds=seconds)


def gridfs_bytes(db: Database, file_id: str) -> bytes:
    return GridFSBucket(db).open_download_stream(ObjectId(file_id)).read()


def apply_contract(db: Database) -> None:
    """Bring pre-change data to the post-migration contract (notes/SCHEMA.md)."""
    bucket = GridFSBucket(db)
    rows = list(db.file_uploads.find({}))
    user_msgs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for msg in db.chat_messages.find(
        {"role": "user"}, {"session_id": 1, "user_id": 1, "created_at": 1}
    ):
        user_msgs.setdefault((msg.get("session_id"), msg.get("user_id")), []).append(msg)
    known = {m["_id"] for msgs in user_msgs.values() for m in msgs}
    files = {d["_id"]: d for d in db["fs.files"].find({})}
    # One pass over first chunks: FerretDB scans fs.chunks on every query.
    heads = {c["files_id"]: bytes(c["data"]) for c in db["fs.chunks"].find({"n": 0})}
    for row in rows:
        change: dict[str, Any] = {}
        oid = ObjectId(row["file_id"]) if ObjectId.is_valid(row.get("file_id") or "") else None
        doc = files.get(oid) if oid else None
        if doc is None:
            change.update(file_missing=True, is_image=False)
        else:
            head = heads.get(oid, b"")
            if len(head) < min(8192, doc["length"]):  # tiny chunks: read on
                head = bucket.open_download_stream(oid).read(8192)
            mime = sniff_mime(head)
            claimed = row.get("mime_type")
            if normalise_mime(claimed) != mime:
                change["claimed_mime_type"] = claimed
            change.update(
                mime_type=mime,
                is_image=is_image_mime(mime),
                file_size=doc["length"],
                file_missing=False,
            )
        mid = row.get("message_id")
        if not (ObjectId.is_valid(mid or "") and ObjectId(mid) in known):
            candidates = user_msgs.get((row.get("session_id"), row.get("user_id")), [])
            when = row.get("uploaded_at")
            near = [m for m in candidates if when and abs(m["created_at"] - when) <= LINK_WINDOW]
            if near:
                best = min(near, key=lambda m: abs(m["created_at"] - when))
                change["message_id"] = str(best["_id"])
        db.file_uploads.update_one({"_id": row["_id"]}, {"$set": change})
    linked: dict[str, list[str]] = {}
    for row in db.file_uploads.find({}, {"file_id": 1, "message_id": 1}).sort("uploaded_at", 1):
        linked.setdefault(str(row.get("message_id")), []).append(row["file_id"])
    for msg in db.chat_messages.find({}, {"file_ids": 1}):
        ids = msg.get("file_ids") if isinstance(msg.get("file_ids"), list) else []
        ids = [f for f in ids if isinstance(f, str)]
        ids += [f for f in linked.get(str(msg["_id"]), []) if f not in ids]
        db.chat_messages.update_one(
            {"_id": msg["_id"]}, {"$set": {"file_ids": ids, "has_files": bool(ids)}}
        )


def put_file(
    db: Database,
    data: bytes,
    *,
    user_id: str = ALICE,
    session_id: str = "",
    message_id: str = "",
    name: str = "file.bin",
    claimed: str = "application/octet-stream",
    chunk_size: int = 255 * 1024,
    link: bool = True,
) -> str:
    """Store ``data`` in GridFS with a post-migration ``file_uploads`` row; return its id.

    With ``link`` and a ``message_id``, the message lists the file too.
    """
    bucket = GridFSBucket(db, chunk_size_bytes=chunk_size)
    meta = {"user_id": user_id, "session_id": session_id, "original_name": name}
    oid = bucket.upload_from_stream(name, data, metadata=meta)
    mime = sniff_mime(data[:8192])
    row = {
        "file_id": str(oid),
        "original_name": name,
        "mime_type": mime,
        "message_id": message_id,
        "session_id": session_id,
        "user_id": user_id,
        "chatflow_id": "flow-1",
        "file_size": len(data),
        "upload_type": "file",
        "file_hash": None,
        "processed": True,
        "processing_error": None,
        "uploaded_at": at(1),
        "processed_at": at(2),
        "metadata": None,
        "is_image": is_image_mime(mime),
        "file_missing": False,
    }
    if normalise_mime(claimed) != mime:
        row["claimed_mime_type"] = claimed
    db.file_uploads.insert_one(row)
    if link and message_id:
        db.chat_messages.update_one(
            {"_id": ObjectId(message_id)},
            {"$push": {"file_ids": str(oid)}, "$set": {"has_files": True}},
        )
    return str(oid)


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on 127.0.0.1 and a free port; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the kernel picks the port: no race with other helpers
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start (see the log above)")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def status_kb(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` figure in KiB (VmRSS, VmHWM...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def rss_growth(job: Any) -> int:
    """Peak RSS growth in bytes while ``job()`` runs (Linux: VmHWM reset via clear_refs)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc_trim(0)  # hand freed heap back, or an earlier big decode would hide this one
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kb("VmRSS")
    job()
    return (status_kb("VmHWM") - before) * 1024


def pytest_configure(config: pytest.Config) -> None:
    # Starlette nags about its httpx-based TestClient; nothing for these tests to act on.
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")
