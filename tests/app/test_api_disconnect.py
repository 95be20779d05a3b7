"""A client that drops an upload half-way: one log line, not an ASGI traceback."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import pytest

from app_patch.service.auth import issue_token
from mongrate.config import with_database
from tests.app.test_operator_tools import ROOT, clean_env, uvicorn

SECRET = "disconnect-secret-0123456789abcdef"
USER, SESSION = "user-disconnect", "sess-disconnect"


def _drop_after_part_of_the_body(base: str, content_type: str, body: bytes) -> None:
    """Send the headers and a third of ``body`` (Content-Length says all of it), then close."""
    host, port = base.removeprefix("http://").split(":")
    head = (
        f"POST /api/v1/chat/files HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {issue_token(USER, SECRET)}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + body[: len(body) // 3])
        time.sleep(0.3)


@pytest.fixture
def served(mongo_server_url: str, mongo_client: Any, tmp_path: Any):
    name = f"t_drop_{uuid.uuid4().hex[:12]}"
    db = mongo_client[name]
    db.chat_sessions.insert_one({"session_id": SESSION, "user_id": USER, "chatflow_id": "cf"})
    env = clean_env(MONGODB_URL=with_database(mongo_server_url, name), JWT_ACCESS_SECRET=SECRET)
    log = tmp_path / "server.log"
    try:
        with uvicorn("app_patch.service.app:app", ROOT, env, log) as base:
            yield base, log, db
    finally:
        mongo_client.drop_database(name)


def test_a_dropped_upload_logs_one_line(served):
    base, log, db = served
    boundary = "b0undary"
    multipart = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"session_id\"\r\n\r\n{SESSION}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n"
    ).encode() + b"\x89PNG" + b"x" * 300_000 + f"\r\n--{boundary}--\r\n".encode()
    json_body = b'{"session_id": "' + SESSION.encode() + b'", "uploads": [{"data": "' + (
        b"A" * 300_000
    ) + b'"}]}'
    before = log.read_text()
    _drop_after_part_of_the_body(base, f"multipart/form-data; boundary={boundary}", multipart)
    _drop_after_part_of_the_body(base, "application/json", json_body)
    deadline = time.monotonic() + 60  # the server logs when it notices; a busy one is late
    while sum(bool(line.strip()) for line in log.read_text()[len(before):].splitlines()) < 2:
        assert time.monotonic() < deadline, log.read_text()[len(before):]
        time.sleep(0.1)
    time.sleep(0.5)  # and nothing more follows
    written = log.read_text()[len(before):]
    assert "Traceback" not in written and "Exception in ASGI application" not in written
    lines = [line for line in written.splitlines() if line.strip()]
    assert len(lines) == 2 and all("disconnected" in line for line in lines), lines
    assert db["fs.files"].count_documents({}) == 0 and db.file_uploads.count_documents({}) == 0
