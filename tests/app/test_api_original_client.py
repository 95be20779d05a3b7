"""The original service's own client, ``test_image_rendering.py``: its history and files
checks, made the way it makes them, on seeded sessions (one of 130 messages), with a minted
access token in place of its login; plus the key sets of the original's responses.

The client (in the original repository, ``services/flowise-proxy-service-py``) asks for the
history without ``limit`` and needs an upload in it; then lists the session's files, fetches
each, and asks a thumbnail (no ``size``) of each whose ``mime_type`` starts with ``image/``.
Any non-200 fails it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from app_patch.testdata.seed import add_session, seed
from tests.app.conftest import apply_contract, at, bearer

API = "/api/v1/chat"
LONG_SESSION_MESSAGES = 130

#: The original's keys (ORIGINAL_API.md, from session_routes.py, chat.py and file_routes.py).
MESSAGE_KEYS = {"id", "role", "content", "created_at", "session_id", "file_ids", "has_files",
                "uploads"}
UPLOAD_KEYS = {"file_id", "name", "mime", "size", "type", "url", "download_url", "is_image",
               "uploaded_at"}
THUMB_KEYS = {"thumbnail_url", "thumbnail_small", "thumbnail_medium"}
FILE_KEYS = {"file_id", "original_name", "mime_type", "file_size", "upload_type", "uploaded_at",
             "processed", "metadata"}


def original_client_checks(client: Any, headers: dict[str, str], session_id: str) -> list[str]:
    """``test_chat_history`` then ``test_file_endpoints`` of the original client; the failures
    it would report (empty: it passes)."""
    r = client.get(f"{API}/sessions/{session_id}/history", headers=headers)
    if r.status_code != 200:
        return [f"Chat history failed: {r.status_code}"]
    history = r.json().get("history", [])
    if not any(message.get("uploads") for message in history):
        return ["No file uploads found in history"]
    r = client.get(f"{API}/files/session/{session_id}", headers=headers)
    if r.status_code != 200:
        return [f"Session files failed: {r.status_code}"]
    files = r.json().get("files", [])
    if not files:
        return ["No files found in session"]
    for info in files:
        file_id = info["file_id"]
        if client.get(f"{API}/files/{file_id}", headers=headers).status_code != 200:
            return [f"File access failed: {file_id}"]
        if info.get("mime_type", "").startswith("image/"):
            thumb = client.get(f"{API}/files/{file_id}/thumbnail", headers=headers)
            if thumb.status_code != 200:
                return [f"Thumbnail generation failed: {file_id}"]
    return []


@pytest.fixture(scope="module")
def seeded_db(mongo_server_url: str, mongo_client: Any):
    """Seeded sessions plus one of 130 messages whose only images sit in its first messages,
    among them the kinds no thumbnail can be made of; then the post-migration contract."""
    from mongrate.config import with_database

    name = f"t_original_client_{os.getpid()}"
    db = mongo_client[name]
    seed(db, sessions=6, messages_per_session=12, uploads=40, seed=7)
    messages = [
        ("user" if i % 2 == 0 else "assistant", f"message {i}", at(i * 30))
        for i in range(LONG_SESSION_MESSAGES)
    ]
    kinds = ["png", "jpeg", "truncated_jpeg", "truncated_png", "large_dims_png", "pdf", "text"]
    uploads = [{"kind": kind, "message": 2 * i} for i, kind in enumerate(kinds)]
    long = add_session(db, user_id="user-long", messages=messages, uploads=uploads)
    apply_contract(db)
    yield db, long.session_id, with_database(mongo_server_url, name)
    mongo_client.drop_database(name)


@pytest.fixture
def mongo_url(seeded_db):
    return seeded_db[2]


def _sessions(db) -> list[tuple[str, str, bool]]:
    """(session id, user, whether one of its files lost its bytes) of every session."""
    missing = {r["session_id"] for r in db.file_uploads.find({"file_missing": True})}
    return [(s["session_id"], s["user_id"], s["session_id"] in missing)
            for s in db.chat_sessions.find({})]


def test_the_original_clients_checks_pass_on_every_seeded_session(client, seeded_db):
    db, long_session, _ = seeded_db
    checked = 0
    for session_id, user, lost_bytes in _sessions(db):
        failures = original_client_checks(client, bearer(user), session_id)
        has_uploads = db.file_uploads.count_documents(
            {"session_id": session_id, "user_id": user}
        ) > 0
        if lost_bytes:  # the original 404s a file whose bytes are gone as well
            assert all(f.startswith("File access failed") for f in failures), failures
        elif has_uploads:
            assert failures == [], (session_id, failures)
            checked += 1
    assert checked >= 3 and long_session in {s for s, _, _ in _sessions(db)}


def test_a_session_of_130_messages_comes_back_whole_with_its_oldest_uploads(
    client, seeded_db
):
    """The long session's images sit in its first messages: with the old 100-message default
    the client found no upload and failed."""
    db, session_id, _ = seeded_db
    headers = bearer("user-long")
    assert original_client_checks(client, headers, session_id) == []
    body = client.get(f"{API}/sessions/{session_id}/history", headers=headers).json()
    assert body["count"] == len(body["history"]) == LONG_SESSION_MESSAGES
    stored = [str(m["_id"]) for m in db.chat_messages.find({"session_id": session_id})
              .sort([("created_at", 1), ("_id", 1)])]
    assert [m["id"] for m in body["history"]] == stored


def test_responses_have_the_original_keys(client, seeded_db):
    db, session_id, _ = seeded_db
    headers = bearer("user-long")
    body = client.get(f"{API}/sessions/{session_id}/history", headers=headers).json()
    assert {"history", "count"} <= set(body)
    uploads = [u for m in body["history"] for u in m["uploads"]]
    assert all(set(m) == MESSAGE_KEYS for m in body["history"])
    assert {u["is_image"] for u in uploads} == {True, False}
    for upload in uploads:
        want = UPLOAD_KEYS | THUMB_KEYS if upload["is_image"] else UPLOAD_KEYS
        assert set(upload) == want, upload
        assert isinstance(upload["size"], int) and upload["type"] == "file"
    files = client.get(f"{API}/files/session/{session_id}", headers=headers).json()
    assert set(files) >= {"session_id", "files"} and len(files["files"]) == len(uploads)
    assert all(FILE_KEYS <= set(f) for f in files["files"])
    stamps = [f["uploaded_at"] for f in files["files"]]
    assert stamps == sorted(stamps)  # oldest first
    message_id = next(m["id"] for m in body["history"] if m["uploads"])
    listed = client.get(f"{API}/files/message/{message_id}", headers=headers).json()
    assert set(listed) >= {"message_id", "files"} and listed["files"]
