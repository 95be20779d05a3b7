"""POST /files: multipart and Flowise JSON bodies, limits, sniffing, refusals, what is written."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import httpx
import pytest
from bson import ObjectId
from fastapi.testclient import TestClient

from app_patch.service import thumbnails, uploads
from app_patch.service.app import create_app
from app_patch.service.settings import Settings
from app_patch.testdata.hostile import hostile_corpus
from app_patch.testdata.samples import sample_variant
from app_patch.testdata.seed import add_session
from tests.app.conftest import ALICE, BOB, SECRET, at, bearer, gridfs_bytes

PNG = sample_variant("png", 1).data
JPEG = sample_variant("jpeg", 0).data
UPLOAD = "/api/v1/chat/files"
CORPUS = hostile_corpus()
ACTIVE = {"html_named_png", "svg_with_script", "xml"}


@pytest.fixture
def session(mongo_db):
    return add_session(
        mongo_db,
        user_id=ALICE,
        chatflow_id="flow-9",
        messages=[("user", "hello", at(0)), ("assistant", "hi", at(1))],
    )


def flowise(session_id, *files, content="look at this", **extra):
    uploads = [
        {
            "data": "data:image/png;base64," + base64.b64encode(data).decode(),
            "type": "file",
            "name": name,
            "mime": mime,
        }
        for data, name, mime in files
    ]
    return {"session_id": session_id, "content": content, "uploads": uploads, **extra}


def test_multipart_upload_writes_gridfs_row_and_message(client, mongo_db, alice, session):
    r = client.post(
        UPLOAD,
        headers=alice,
        data={"session_id": session.session_id, "content": "two pictures"},
        files=[("files", ("a.png", PNG, "image/jpeg")), ("files", ("b.jpg", JPEG, "image/jpeg"))],
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["role"] == "user" and body["content"] == "two pictures" and body["has_files"]
    a, b = body["uploads"]
    assert (a["name"], a["mime"], a["is_image"], a["size"]) == (
        "a.png",
        "image/png",
        True,
        len(PNG),
    )
    assert b["mime"] == "image/jpeg"
    assert body["file_ids"] == [a["file_id"], b["file_id"]]

    msg = mongo_db.chat_messages.find_one({"_id": ObjectId(body["id"])})
    assert msg["file_ids"] == body["file_ids"] and msg["has_files"] is True
    assert msg["session_id"] == session.session_id and msg["user_id"] == ALICE
    assert msg["chatflow_id"] == "flow-9" and msg["role"] == "user"
    row = mongo_db.file_uploads.find_one({"file_id": a["file_id"]})
    assert row["mime_type"] == "image/png" and row["claimed_mime_type"] == "image/jpeg"
    assert row["message_id"] == body["id"] and row["user_id"] == ALICE
    assert row["is_image"] is True and row["file_missing"] is False
    assert row["file_size"] == len(PNG) and len(row["file_hash"]) == 64
    assert "claimed_mime_type" not in mongo_db.file_uploads.find_one({"file_id": b["file_id"]})
    assert gridfs_bytes(mongo_db, a["file_id"]) == PNG
    # ... and it reads back through the other endpoints.
    hist = client.get(f"/api/v1/chat/sessions/{session.session_id}/history", headers=alice).json()
    assert hist["history"][-1]["uploads"] == body["uploads"]
    assert client.get(a["thumbnail_small"], headers=alice).status_code == 200


def test_flowise_json_upload(client, mongo_db, alice, session):
    r = client.post(
        UPLOAD, headers=alice, json=flowise(session.session_id, (JPEG, "фото.jpg", "image/jpeg"))
    )
    assert r.status_code == 201, r.text
    (up,) = r.json()["uploads"]
    assert up["name"] == "фото.jpg" and up["mime"] == "image/jpeg"
    assert gridfs_bytes(mongo_db, up["file_id"]) == JPEG
    plain = {
        "session_id": session.session_id,
        "uploads": [{"data": base64.b64encode(PNG).decode(), "name": "p.png"}],
    }
    assert (
        client.post(UPLOAD, headers=alice, json=plain).json()["uploads"][0]["mime"] == "image/png"
    )


def test_attaching_to_an_existing_message(client, mongo_db, alice, session):
    target = session.message_ids[0]
    mongo_db.chat_messages.update_one({"_id": ObjectId(target)}, {"$set": {"file_ids": None}})
    r = client.post(
        UPLOAD,
        headers=alice,
        json=flowise(session.session_id, (PNG, "x.png", "image/png"), message_id=target),
    )
    assert r.status_code == 201 and r.json()["id"] == target
    msg = mongo_db.chat_messages.find_one({"_id": ObjectId(target)})
    assert msg["file_ids"] == [r.json()["uploads"][0]["file_id"]] and msg["has_files"] is True
    assert mongo_db.chat_messages.count_documents({"session_id": session.session_id}) == 2
    to_assistant = flowise(
        session.session_id, (PNG, "y.png", "image/png"), message_id=session.message_ids[1]
    )
    assert client.post(UPLOAD, headers=alice, json=to_assistant).status_code == 422


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_uploads_are_stored_safely_or_refused_cleanly(
    client, mongo_db, alice, session, name
):
    data, outcome = CORPUS[name]
    r = client.post(
        UPLOAD, headers=alice, json=flowise(session.session_id, (data, f"{name}.png", "image/png"))
    )
    if outcome == "thumbnail":
        expected = 201
    elif name in ACTIVE:
        expected = 415  # browsers would run it
    elif name == "empty":
        expected = 422
    elif outcome == "not_image":
        expected = 201  # kept, as an attachment-only non-image
    else:
        expected = 422  # corrupt image or pixel bomb
    assert r.status_code == expected, r.text
    if expected == 201:
        (up,) = r.json()["uploads"]
        assert up["is_image"] is (outcome == "thumbnail")
        served = client.get(up["url"], headers=alice)
        if not up["is_image"]:
            assert served.headers["content-disposition"].startswith("attachment;")
    else:
        assert r.json()["detail"]
        assert mongo_db.file_uploads.count_documents({}) == 0
        assert mongo_db["fs.files"].count_documents({}) == 0


def test_size_limit_is_413_and_nothing_is_written(mongo_db, mongo_url, session):
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET, max_upload_bytes=10_000)
    big = sample_variant("png", 2).data + b"\0" * 20_000
    from tests.app.conftest import bearer

    with TestClient(create_app(settings)) as c:
        multipart = c.post(
            UPLOAD,
            headers=bearer(ALICE),
            data={"session_id": session.session_id},
            files=[("files", ("big.png", big, "image/png"))],
        )
        as_json = c.post(
            UPLOAD,
            headers=bearer(ALICE),
            json=flowise(session.session_id, (big, "big.png", "image/png")),
        )
        huge_body = c.post(
            UPLOAD,
            headers={**bearer(ALICE), "Content-Type": "application/json"},
            content=b"x" * (settings.max_files_per_upload * 14_000 + 2 * 2**20),
        )
        ok = c.post(
            UPLOAD,
            headers=bearer(ALICE),
            json=flowise(session.session_id, (PNG, "ok.png", "image/png")),
        )
    assert multipart.status_code == as_json.status_code == huge_body.status_code == 413
    assert "limit" in multipart.json()["detail"]
    assert ok.status_code == 201
    assert mongo_db.file_uploads.count_documents({}) == 1


@pytest.mark.parametrize(
    "body, status",
    [
        ({"uploads": [{"data": "AAAA"}]}, 422),
        ({"session_id": "s", "uploads": []}, 422),
        ({"session_id": "s", "uploads": [{"data": "***not base64***"}]}, 422),
        ({"session_id": "s", "uploads": [{"data": "aGk=", "type": "url"}]}, 422),
    ],
)
def test_malformed_json_bodies(client, alice, session, body, status):
    if "session_id" in body:
        body = {**body, "session_id": session.session_id}
    r = client.post(UPLOAD, headers=alice, json=body)
    assert r.status_code == status, r.text
    assert "***" not in r.text  # never echoes the input


def test_other_body_types_and_broken_multipart(client, alice, session):
    r = client.post(UPLOAD, headers={**alice, "Content-Type": "text/plain"}, content=b"hi")
    assert r.status_code == 415
    r = client.post(UPLOAD, headers={**alice, "Content-Type": "application/json"}, content=b"{nope")
    assert r.status_code == 422  # malformed JSON, as FastAPI answers it
    r = client.post(UPLOAD, headers=alice, data={"session_id": session.session_id})
    assert r.status_code == 415  # url-encoded form
    r = client.post(UPLOAD, headers=alice, files={"session_id": (None, session.session_id)})
    assert r.status_code == 422 and "No file" in r.json()["detail"]


def test_uploading_into_someone_elses_session_or_message_is_404(
    client, mongo_db, alice, bob, session
):
    r = client.post(
        UPLOAD, headers=bob, json=flowise(session.session_id, (PNG, "x.png", "image/png"))
    )
    assert r.status_code == 404
    mine = add_session(mongo_db, user_id=BOB, messages=[("user", "b", at(0))])
    r = client.post(
        UPLOAD,
        headers=bob,
        json=flowise(
            mine.session_id, (PNG, "x.png", "image/png"), message_id=session.message_ids[0]
        ),
    )
    assert r.status_code == 404
    assert mongo_db.file_uploads.count_documents({}) == 0


def test_parallel_uploads_to_one_message_keep_every_id(mongo_db, mongo_url, session):
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET, upload_concurrency=6)
    app = create_app(settings)
    target = session.message_ids[0]
    body = flowise(session.session_id, (PNG, "p.png", "image/png"), message_id=target)

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(
                *[c.post(UPLOAD, headers=bearer(ALICE), json=body) for _ in range(6)]
            )
        await app.state.chat_holder.aclose()
        return rs

    responses = asyncio.run(post_all())
    assert [r.status_code for r in responses] == [201] * 6
    new_ids = {r.json()["uploads"][0]["file_id"] for r in responses}
    msg = mongo_db.chat_messages.find_one({"_id": ObjectId(target)})
    assert sorted(msg["file_ids"]) == sorted(new_ids) and len(new_ids) == 6
    assert msg["has_files"] is True


def test_the_whole_request_has_a_size_cap(mongo_db, mongo_url, session):
    """Each file is under the per-file limit; together they pass the request cap."""
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET, max_request_bytes=60_000)
    half = sample_variant("png", 2).data + bytes(30_000 - len(sample_variant("png", 2).data))
    with TestClient(create_app(settings)) as c:
        as_json = c.post(
            UPLOAD,
            headers=bearer(ALICE),
            json=flowise(
                session.session_id, (half, "a.png", "image/png"), (half, "b.png", "image/png")
            ),
        )
        multipart = c.post(
            UPLOAD,
            headers=bearer(ALICE),
            data={"session_id": session.session_id},
            files=[("files", (n, half + half[:2000], "image/png")) for n in ("a.png", "b.png")],
        )
        one = c.post(
            UPLOAD,
            headers=bearer(ALICE),
            json=flowise(session.session_id, (half, "a.png", "image/png")),
        )
    assert as_json.status_code == multipart.status_code == 413, (as_json.text, multipart.text)
    assert one.status_code == 201, one.text
    assert mongo_db.file_uploads.count_documents({}) == 1


def test_the_default_request_cap():
    base = Settings(jwt_secret="k")
    assert uploads.request_limit(base) == uploads.DEFAULT_REQUEST_CAP == 32 * 2**20
    big = Settings(jwt_secret="k", max_upload_bytes=60 * 2**20)
    assert uploads.request_limit(big) >= 60 * 2**20 * 4 // 3  # one file at the limit fits
    assert uploads.request_limit(Settings(jwt_secret="k", max_request_bytes=5000)) == 5000


def test_a_slow_upload_does_not_stall_other_requests(mongo_db, settings, session, monkeypatch):
    """Parsing a JSON body runs in a worker thread: while one is stuck, history still answers."""
    started, release = threading.Event(), threading.Event()
    stalled = []
    real = uploads._read_json

    def slow(body, settings_):
        started.set()
        stalled.append(not release.wait(60))  # bounded only so a bug fails, not hangs
        return real(body, settings_)

    monkeypatch.setattr(uploads, "_read_json", slow)
    app = create_app(settings)

    async def scenario() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = flowise(session.session_id, (PNG, "p.png", "image/png"))
            upload = asyncio.create_task(c.post(UPLOAD, headers=bearer(ALICE), json=body))
            while not started.is_set():
                await asyncio.sleep(0.01)
            url = f"/api/v1/chat/sessions/{session.session_id}/history"
            other = await c.get(url, headers=bearer(ALICE))
            release.set()
            done = await upload
        await app.state.chat_holder.aclose()
        return other.status_code, done.status_code

    assert asyncio.run(scenario()) == (200, 201)
    assert stalled == [False]  # the history request was answered while the parse waited


@pytest.mark.parametrize("field", ["name", "mime", "content", "session_id", "message_id"])
def test_unpaired_surrogates_are_a_422(client, mongo_db, alice, session, field):
    body = flowise(
        session.session_id, (PNG, "p.png", "image/png"), message_id=session.message_ids[0]
    )
    bad = "x\ud800y"
    if field in ("name", "mime"):
        body["uploads"][0][field] = bad
    else:
        body[field] = bad
    raw = json.dumps(body)  # ensure_ascii: the surrogate travels as a \\ud800 escape
    assert "\\ud800" in raw
    r = client.post(UPLOAD, headers={**alice, "Content-Type": "application/json"}, content=raw)
    assert r.status_code == 422, r.text
    assert "surrogate" in r.text or "unicode" in r.text  # pydantic catches session_id first
    assert mongo_db.file_uploads.count_documents({}) == 0


def test_someone_elses_session_is_a_404_before_any_image_is_decoded(
    client, mongo_db, bob, session, monkeypatch
):
    decoded = []
    real = thumbnails.verify_image

    def counting(data, **kw):
        decoded.append(len(data))
        return real(data, **kw)

    monkeypatch.setattr(thumbnails, "verify_image", counting)
    corrupt = sample_variant("truncated_png", 0).data
    for data in (CORPUS["png_bomb_8000x8000"][0], corrupt, PNG):
        r = client.post(
            UPLOAD, headers=bob, json=flowise(session.session_id, (data, "x.png", "image/png"))
        )
        assert r.status_code == 404, r.text
    target = session.message_ids[0]
    r = client.post(
        UPLOAD,
        headers=bob,
        json=flowise(session.session_id, (corrupt, "x.png", "image/png"), message_id=target),
    )
    assert r.status_code == 404
    assert decoded == []
