"""A whole-session history is streamed as it is read (one messages cursor, a JSON chunk per
batch) and is the same body, byte for byte, as the one built in memory before."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.responses import JSONResponse

from app_patch.service import history
from app_patch.service.driver import DRIVER
from app_patch.service.storage import ChatStore
from app_patch.testdata.seed import seed
from tests.app.conftest import apply_contract, bearer


@pytest.fixture
def seeded(mongo_db: Any) -> Any:
    seed(mongo_db, sessions=6, messages_per_session=14, uploads=70, seed=5)
    return mongo_db


def _in_memory(mongo_url: str, db_name: str, user: str, session: str) -> bytes:
    async def build() -> bytes:
        client = DRIVER.connect(mongo_url, tz_aware=False)
        try:
            store = ChatStore(client[db_name], DRIVER)
            body = await history.load_history(store, user, session)
            return JSONResponse(body).body
        finally:
            await DRIVER.close(client)

    return asyncio.run(build())


@pytest.mark.parametrize("migrated", [False, True], ids=["untidy", "migrated"])
def test_the_streamed_body_is_the_in_memory_one(client, seeded, mongo_url, monkeypatch, migrated):
    if migrated:
        apply_contract(seeded)
    monkeypatch.setattr(history, "STREAM_BATCH", 3)  # many batches, links across them
    sessions = list(seeded.chat_sessions.find({}, {"session_id": 1, "user_id": 1}))
    assert sessions
    for s in sessions:
        url = f"/api/v1/chat/sessions/{s['session_id']}/history"
        with client.stream("GET", url, headers=bearer(s["user_id"])) as r:
            assert r.status_code == 200
            assert "content-length" not in r.headers  # written as it is read
            chunks = list(r.iter_raw())
        expected = _in_memory(mongo_url, seeded.name, s["user_id"], s["session_id"])
        assert b"".join(chunks) == expected
        assert len(chunks) > 2 or expected.count(b'"id":') <= 3


def test_one_cursor_and_a_query_per_batch(client, seeded, command_log, monkeypatch):
    apply_contract(seeded)
    monkeypatch.setattr(history, "STREAM_BATCH", 4)
    s = seeded.chat_sessions.find_one({}, {"session_id": 1, "user_id": 1})
    n = seeded.chat_messages.count_documents({"session_id": s["session_id"],
                                              "user_id": s["user_id"]})
    command_log.clear()
    r = client.get(f"/api/v1/chat/sessions/{s['session_id']}/history", headers=bearer(s["user_id"]))
    assert r.status_code == 200 and r.json()["count"] == n
    finds = [c for c in command_log.data_commands() if c == ("find", "chat_messages")]
    uploads = [c for c in command_log.data_commands() if c == ("find", "file_uploads")]
    assert len(finds) <= 2  # the ownership check and the one cursor (getMores aside)
    assert len(uploads) == -(-n // 4)


def test_unknown_session_is_still_a_404(client, seeded, alice):
    r = client.get("/api/v1/chat/sessions/nope/history", headers=alice)
    assert r.status_code == 404 and r.json() == {"detail": "Chat session not found"}


def test_startup_objects_are_frozen_out_of_full_collections(settings, seeded, monkeypatch):
    """A full collection must not walk the modules and the app on every run (it held the
    event loop for tens of ms under streamed histories): the first services freeze them."""
    import gc

    from fastapi.testclient import TestClient

    from app_patch.service import router
    from app_patch.service.app import create_app

    monkeypatch.setattr(router, "_startup_frozen", False)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    s = seeded.chat_sessions.find_one({}, {"session_id": 1, "user_id": 1})
    with TestClient(create_app(settings)) as client:
        url = f"/api/v1/chat/sessions/{s['session_id']}/history"
        assert client.get(url, headers=bearer(s["user_id"])).status_code == 200
    assert gc.get_freeze_count() > 1000
