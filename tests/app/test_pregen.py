"""Thumbnails before anyone asks: made in the background after an upload, bounded,
failure-safe; served from memory until stored."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app_patch.service import thumbnails
from app_patch.service.app import create_app
from app_patch.service.settings import Settings
from app_patch.service.storage import ChatStore
from app_patch.service.thumbservice import ThumbnailService
from app_patch.testdata.seed import add_session
from tests.app.conftest import ALICE, SECRET, at, bearer

UPLOAD = "/api/v1/chat/files"


def _photo(size: tuple[int, int], seed: int = 0) -> bytes:
    """A JPEG with some texture (made small, then enlarged: quick to build)."""
    small = Image.effect_noise((size[0] // 10, size[1] // 10), 40 + seed).convert("RGB")
    buf = io.BytesIO()
    small.resize(size).save(buf, "JPEG", quality=85)
    return buf.getvalue()


PHOTO = _photo((4000, 3000))  # verification decodes 500x375: enough for 100 and 200, not 300


@pytest.fixture
def session_id(mongo_db) -> str:
    return add_session(mongo_db, user_id=ALICE, messages=[("user", "hi", at(0))]).session_id


def _upload(client, session_id: str, *images: bytes) -> list[str]:
    r = client.post(
        UPLOAD,
        headers=bearer(ALICE),
        data={"session_id": session_id},
        files=[("files", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)],
    )
    assert r.status_code == 201, r.text
    return [u["file_id"] for u in r.json()["uploads"]]


def _cached_sizes(db, file_id: str, want: int = 3, wait: float = 15.0) -> dict[int, bytes]:
    """The cached thumbnails of ``file_id`` once ``want`` are there (or the wait is over)."""
    deadline = time.monotonic() + wait
    while True:
        docs = list(db["thumbnails.files"].find({"metadata.file_id": file_id}))
        if len(docs) >= want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    out = {}
    for doc in docs:
        chunks = db["thumbnails.chunks"].find({"files_id": doc["_id"]}).sort("n", 1)
        out[doc["metadata"]["size"]] = b"".join(bytes(c["data"]) for c in chunks)
        assert doc["metadata"]["user_id"] == ALICE
    return out


def test_an_upload_gets_all_its_thumbnails_in_the_background(
    mongo_db, mongo_url, session_id, generations
):
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET)
    with TestClient(create_app(settings)) as client:
        (file_id,) = _upload(client, session_id, PHOTO)
        cached = _cached_sizes(mongo_db, file_id)
    assert sorted(cached) == [100, 200, 300]
    real = {size: thumbnails.make_thumbnails(PHOTO, [size])[size].data for size in cached}
    assert cached == real  # the very bytes an on-demand request would have made
    # 100 and 200 came from the upload's own 1/8-scale decode; only 300 was decoded again.
    assert generations == [300]


def test_the_first_view_is_served_from_memory_before_the_background_stores_it(
    mongo_db, mongo_url, session_id, generations, monkeypatch
):
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET)
    release = threading.Event()
    real_store = ChatStore.store_thumbnail

    async def slow_store(self, key, data, metadata):
        while not release.is_set():
            await asyncio.sleep(0.01)
        return await real_store(self, key, data, metadata)

    monkeypatch.setattr(ChatStore, "store_thumbnail", slow_store)
    try:
        with TestClient(create_app(settings)) as client:
            (file_id,) = _upload(client, session_id, PHOTO)
            url = f"/api/v1/chat/files/{file_id}/thumbnail"
            first, small = (
                client.get(url, headers=bearer(ALICE)),
                client.get(url, headers=bearer(ALICE), params={"size": 100}),
            )
            stored_meanwhile = mongo_db["thumbnails.files"].count_documents({})
            release.set()
            cached = _cached_sizes(mongo_db, file_id)
    finally:
        release.set()
    assert first.status_code == small.status_code == 200
    assert stored_meanwhile == 0 and generations.count(200) == generations.count(100) == 0
    assert first.content == cached[200] and small.content == cached[100]


def test_a_full_queue_drops_with_a_log_line_and_the_upload_still_succeeds(
    mongo_db, mongo_url, session_id, monkeypatch, caplog
):
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET, thumbnail_pregen_queue=1)
    release = threading.Event()
    real = ThumbnailService.pregenerate

    async def held(self, *args, **kw):
        while not release.is_set():
            await asyncio.sleep(0.01)
        return await real(self, *args, **kw)

    monkeypatch.setattr(ThumbnailService, "pregenerate", held)
    caplog.set_level(logging.WARNING, logger="app_patch")
    photos = [_photo((800, 600), seed) for seed in range(3)]
    try:
        with TestClient(create_app(settings)) as client:
            ids = _upload(client, session_id, *photos)
            release.set()
            kept = _cached_sizes(mongo_db, ids[0])
            dropped = [
                mongo_db["thumbnails.files"].count_documents({"metadata.file_id": f})
                for f in ids[1:]
            ]
            on_view = client.get(f"/api/v1/chat/files/{ids[2]}/thumbnail", headers=bearer(ALICE))
    finally:
        release.set()
    full = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full) == 2 and ids[1] in full[0] and ids[2] in full[1]
    assert sorted(kept) == [100, 200, 300] and dropped == [0, 0]
    assert on_view.status_code == 200  # made on first view instead


def test_a_failing_background_job_is_one_log_line_and_the_next_one_runs(
    mongo_db, mongo_url, session_id, monkeypatch, caplog
):
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET)
    real = ThumbnailService.pregenerate
    failures = iter([RuntimeError("disk on fire")])

    async def fails_once(self, *args, **kw):
        for exc in failures:
            raise exc
        return await real(self, *args, **kw)

    monkeypatch.setattr(ThumbnailService, "pregenerate", fails_once)
    caplog.set_level(logging.WARNING, logger="app_patch")
    with TestClient(create_app(settings)) as client:
        (first,) = _upload(client, session_id, _photo((800, 600), 1))
        (second,) = _upload(client, session_id, _photo((800, 600), 2))
        assert sorted(_cached_sizes(mongo_db, second)) == [100, 200, 300]
        failed = mongo_db["thumbnails.files"].count_documents({"metadata.file_id": first})
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("app_patch")]
    assert lines == [f"background thumbnails of {first} failed: RuntimeError: disk on fire"]
    assert failed == 0


def test_background_thumbnails_can_be_turned_off(mongo_db, mongo_url, session_id, generations):
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET, thumbnail_pregen_queue=0)
    with TestClient(create_app(settings)) as client:
        (file_id,) = _upload(client, session_id, PHOTO)
        time.sleep(0.3)
        nothing = mongo_db["thumbnails.files"].count_documents({})
        assert (
            client.get(f"/api/v1/chat/files/{file_id}/thumbnail", headers=bearer(ALICE)).status_code
            == 200
        )
    assert nothing == 0 and generations == [200]
