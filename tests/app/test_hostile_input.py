"""Hostile input: every case answers a 4xx with a one-line JSON detail, never a 500, and
nothing is left in the database.

The same cases run on the current stack (in-process) and on the original service's pins
(uvicorn in the pinned venv, importing this checkout), since JSON decoding, multipart
parsing and the form limits differ between Starlette versions.
"""

from __future__ import annotations

import base64
import json
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pymongo.database import Database

from app_patch.service.app import create_app
from app_patch.service.settings import BSON_LIMIT, Settings
from app_patch.testdata.samples import sample_variant
from app_patch.testdata.seed import add_session
from mongrate.config import with_database
from tests.app.conftest import ALICE, SECRET, at, bearer
from tests.app.test_operator_tools import ROOT, clean_env, uvicorn

UPLOAD = "/api/v1/chat/files"
PNG = sample_variant("png", 1).data
MB = 1024 * 1024
DEEP = 10_000
DIGITS = "7" * 5000
COLLECTIONS = ("fs.files", "fs.chunks", "file_uploads", "chat_messages")


def _png_b64() -> str:
    return base64.b64encode(PNG).decode()


def _json_body(session_id: str, **over: Any) -> bytes:
    upload = {"data": _png_b64(), "type": "file", "name": "a.png", "mime": "image/png"}
    upload.update(over.pop("upload", {}))
    body = {"session_id": session_id, "content": "hi", "uploads": [upload], **over}
    return json.dumps(body).encode()


def _raw(text: str | bytes) -> dict[str, Any]:
    content = text.encode() if isinstance(text, str) else text
    return {"content": content, "headers": {"Content-Type": "application/json"}}


def _nested(opener: str, closer: str, inner: str = "") -> str:
    return opener * DEEP + inner + closer * DEEP


def hostile_cases(session_id: str, name_limit: int) -> dict[str, tuple[str, str, dict, int]]:
    """name -> (method, path, httpx keyword arguments, expected status)."""
    sid = session_id
    cases: dict[str, tuple[str, str, dict, int]] = {
        # Past the 16 MiB BSON limit, and exactly at it: the message could never be stored.
        "content 17 MB": ("POST", UPLOAD, _raw(_json_body(sid, content="c" * (17 * MB))), 413),
        "content of exactly the BSON limit": (
            "POST", UPLOAD, _raw(_json_body(sid, content="c" * BSON_LIMIT)), 413),
        "content past the limit in multibyte text": (
            "POST", UPLOAD, _raw(_json_body(sid, content="é" * (3 * MB))), 413),
        "file name 9 MB": ("POST", UPLOAD, _raw(_json_body(sid, upload={"name": "n" * 9 * MB})), 413),
        "file name one byte past the limit": (
            "POST", UPLOAD, _raw(_json_body(sid, upload={"name": "n" * (name_limit + 1)})), 413),
        "claimed type 9 MB": (
            "POST", UPLOAD, _raw(_json_body(sid, upload={"mime": "image/" + "x" * 9 * MB})), 413),
        "session_id 9 MB": ("POST", UPLOAD, _raw(_json_body("s" * 9 * MB)), 413),
        "message_id 9 MB": ("POST", UPLOAD, _raw(_json_body(sid, message_id="m" * 9 * MB)), 413),
        "JSON array nested 10,000 deep": ("POST", UPLOAD, _raw(_nested("[", "]")), 422),
        "JSON object nested 10,000 deep as session_id": (
            "POST", UPLOAD, _raw('{"session_id": ' + _nested('{"a":', "}", "1") + "}"), 422),
        "JSON nested 10,000 deep inside uploads": (
            "POST", UPLOAD,
            _raw(f'{{"session_id": "{sid}", "uploads": [{_nested("[", "]")}]}}'), 422),
        "JSON nested 900 deep (decodes, fails validation)": (
            "POST", UPLOAD,
            _raw(f'{{"session_id": "{sid}", "uploads": [{"[" * 900 + "]" * 900}]}}'), 422),
        "unclosed nesting 10,000 deep": ("POST", UPLOAD, _raw("[" * DEEP), 422),
        "integer of 5,000 digits": ("POST", UPLOAD, _raw(DIGITS), 422),
        "integer of 5,000 digits as session_id": (
            "POST", UPLOAD, _raw(f'{{"session_id": {DIGITS}, "uploads": []}}'), 422),
        "integer of 5,000 digits as content": (
            "POST", UPLOAD,
            _raw(f'{{"session_id": "{sid}", "content": {DIGITS}, '
                 f'"uploads": [{{"data": "{_png_b64()}"}}]}}'), 422),
        "malformed JSON": ("POST", UPLOAD, _raw("{nope"), 422),
        "Content-Length of 5,000 digits": (
            "POST", UPLOAD,
            {"content": b"{}", "headers": {"Content-Type": "application/json",
                                           "Content-Length": DIGITS}}, 413),
        "multipart content 17 MB": (
            "POST", UPLOAD,
            {"data": {"session_id": sid, "content": "c" * (17 * MB)},
             "files": [("files", ("a.png", PNG, "image/png"))]}, 413),
        "multipart file name 9 MB": (
            "POST", UPLOAD,
            {"data": {"session_id": sid}, "files": [("files", ("n" * 9 * MB, PNG, "image/png"))]},
            413),
        "multipart session_id 9 MB": (
            "POST", UPLOAD,
            {"data": {"session_id": "s" * 9 * MB}, "files": [("files", ("a.png", PNG, "image/png"))]},
            413),
        "history limit of 5,000 digits": (
            "GET", f"/api/v1/chat/sessions/{sid}/history?limit={DIGITS}", {}, 422),
        "history cursor of 5,000 digits": (
            "GET", f"/api/v1/chat/sessions/{sid}/history?limit=5&before={DIGITS}_{'a' * 24}", {},
            422),
        "thumbnail size of 5,000 digits": (
            "GET", f"/api/v1/chat/files/{'a' * 24}/thumbnail?size={DIGITS}", {}, 422),
        "thumbnail size of -5,000 digits": (
            "GET", f"/api/v1/chat/files/{'a' * 24}/thumbnail?size=-{DIGITS}", {}, 422),
    }  # fmt: skip
    return cases


def _counts(db: Database) -> dict[str, int]:
    return {name: db[name].count_documents({}) for name in COLLECTIONS}


def _one_line_detail(response: httpx.Response) -> str:
    """The response's ``detail`` as one line of text, short and not echoing the input."""
    body = response.json()
    detail = body["detail"]
    assert isinstance(detail, str), body
    assert "\n" not in detail and 0 < len(detail) <= 300, detail[:400]
    return detail


def _raw_request(base: str, method: str, path: str, headers: dict[str, str],
                 content: bytes = b"") -> httpx.Response:
    """One request over a plain socket, headers exactly as given (httpx checks them)."""
    host, port = base.removeprefix("http://").split(":")
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode() + content)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    raw_headers, _, body = rest.partition(b"\r\n\r\n")
    return httpx.Response(int(status_line.split()[1]), content=body)


def check_hostile(send: Callable[..., httpx.Response], db: Database, session_id: str,
                  name_limit: int, base: str | None = None) -> None:
    before = _counts(db)
    wrong: dict[str, Any] = {}
    for name, (method, path, kwargs, status) in hostile_cases(session_id, name_limit).items():
        headers = {**bearer(ALICE), **kwargs.pop("headers", {})}
        if base is not None and "Content-Length" in headers:  # httpx would refuse to send it
            r = _raw_request(base, method, path, headers, kwargs.get("content", b""))
            if r.status_code == 400 and r.text == "Invalid HTTP request received.":
                continue  # uvicorn refused it before the app saw it: fine too
        else:
            r = send(method, path, headers=headers, **kwargs)
        if r.status_code != status:
            wrong[name] = (r.status_code, r.text[:300])
            continue
        try:
            _one_line_detail(r)
        except (AssertionError, ValueError, KeyError) as exc:
            wrong[name] = ("detail", str(exc)[:300])
    assert not wrong, wrong
    assert _counts(db) == before  # nothing stored by any of them

    # The same family, just inside the limits: accepted.
    name = "é" * (name_limit // 2)  # exactly the limit in UTF-8 bytes
    kwargs = _raw(_json_body(session_id, upload={"name": name}))
    at_limit = send("POST", UPLOAD, headers={**bearer(ALICE), **kwargs.pop("headers")}, **kwargs)
    assert at_limit.status_code == 201, at_limit.text[:300]
    assert at_limit.json()["uploads"][0]["name"] == name


@pytest.fixture
def session(mongo_db: Database) -> str:
    return add_session(mongo_db, user_id=ALICE, messages=[("user", "hello", at(0))]).session_id


def test_hostile_input_current_stack(mongo_db: Database, mongo_url: str, session: str) -> None:
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        check_hostile(client.request, mongo_db, session, settings.max_name_bytes)


def test_content_at_a_configured_limit_is_stored(mongo_db: Database, mongo_url: str,
                                                 session: str) -> None:
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET, max_content_bytes=1000)
    with TestClient(create_app(settings)) as client:
        ok = client.post(UPLOAD, headers=bearer(ALICE), json=json.loads(
            _json_body(session, content="é" * 500)))
        over = client.post(UPLOAD, headers=bearer(ALICE), json=json.loads(
            _json_body(session, content="é" * 500 + "x")))
    assert ok.status_code == 201 and over.status_code == 413, (ok.text, over.text)
    assert "1001 bytes; the limit is 1000 bytes" in over.json()["detail"]


@pytest.mark.slow
def test_hostile_input_pinned_stack(pinned_python: str, mongo_server_url: str, mongo_client: Any,
                                    tmp_path: Path) -> None:
    name = f"t_hostile_{uuid.uuid4().hex[:12]}"
    db = mongo_client[name]
    session_id = add_session(db, user_id=ALICE, messages=[("user", "hello", at(0))]).session_id
    env = clean_env(MONGODB_URL=with_database(mongo_server_url, name), JWT_ACCESS_SECRET=SECRET)
    log = tmp_path / "server.log"
    try:
        with uvicorn("app_patch.service.app:app", ROOT, env, log, python=pinned_python) as base:
            with httpx.Client(base_url=base, timeout=120) as http:
                limit = Settings(jwt_secret="k").max_name_bytes
                check_hostile(http.request, db, session_id, limit, base)
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    finally:
        mongo_client.drop_database(name)


REDOS_TYPE = 'multipart/form-data; boundary="' + "\\" * 42 + "a"  # 74 bytes (CVE-2024-24762)


def _timed_post(base: str, content_type: str) -> tuple[int, float]:
    body = b"--x\r\nContent-Disposition: form-data; name=\"session_id\"\r\n\r\ns\r\n--x--\r\n"
    started = time.perf_counter()
    r = _raw_request(base, "POST", UPLOAD, {**bearer(ALICE), "Content-Type": content_type,
                                            "Content-Length": str(len(body))}, body)
    return r.status_code, time.perf_counter() - started


@pytest.mark.slow
def test_the_multipart_redos_header_is_refused_at_once_on_the_pinned_stack(
    pinned_python: str, mongo_server_url: str, mongo_client: Any, tmp_path: Path
) -> None:
    """python-multipart 0.0.6 (the original's pin) backtracks for seconds on this header;
    the patch answers 400 before Starlette parses it, and the event loop stays free."""
    assert len(REDOS_TYPE) == 74
    name = f"t_redos_{uuid.uuid4().hex[:12]}"
    env = clean_env(MONGODB_URL=with_database(mongo_server_url, name), JWT_ACCESS_SECRET=SECRET)
    try:
        with uvicorn("app_patch.service.app:app", ROOT, env, tmp_path / "log",
                     python=pinned_python) as base:
            version = subprocess.run(
                [pinned_python, "-c", "import multipart; print(multipart.__version__)"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
            assert version == "0.0.6"
            baseline = []
            for _ in range(5):  # a browser's header: parsed, then a 404 for the unknown session
                status, took = _timed_post(base, "multipart/form-data; boundary=x")
                assert status in (404, 422), status
                baseline.append(took)
            pings: list[float] = []
            stop = threading.Event()

            def ping() -> None:
                with httpx.Client(base_url=base, timeout=30) as http:
                    while not stop.is_set():
                        started = time.perf_counter()
                        http.get("/demo/static/demo.css").raise_for_status()
                        pings.append(time.perf_counter() - started)
                        time.sleep(0.01)

            pinger = threading.Thread(target=ping)
            pinger.start()
            try:
                while not pings and pinger.is_alive():
                    time.sleep(0.01)
                evil = [_timed_post(base, REDOS_TYPE) for _ in range(5)]
                seen = len(pings)
                while len(pings) == seen and pinger.is_alive():  # one more after them
                    time.sleep(0.01)
            finally:
                stop.set()
                pinger.join(30)
        assert {status for status, _ in evil} == {400}
        typical = statistics.median(baseline)
        # Relative to a normal request of the same shape. The floors are room for a busy
        # machine (a stall between two requests); the unpatched service takes about 20 s
        # per request here, and blocks the pings as long.
        assert statistics.median(t for _, t in evil) < max(1.0, 3 * typical), (evil, baseline)
        assert max(pings) < max(5.0, 10 * typical), (max(pings), typical)
    finally:
        mongo_client.drop_database(name)


def test_browser_multipart_types_pass_the_check():
    from app_patch.service.compat import browser_like_multipart

    for good in ("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
                 "multipart/form-data; boundary=------------------------d74496d66958873e",
                 "multipart/form-data;boundary=abc; charset=utf-8",
                 'multipart/form-data; boundary="a b:c"'):
        assert browser_like_multipart(good), good
    for bad in (REDOS_TYPE, "multipart/form-data", "multipart/form-data; boundary=a\\b",
                "multipart/form-data; boundary=" + "a" * 71,
                "multipart/form-data; boundary=a; x=y", "multipart/form-data; boundary=a; " * 9):
        assert not browser_like_multipart(bad), bad
