"""GET /files/{id}/thumbnail: sizes, the GridFS cache, validators, and the hostile corpus."""

from __future__ import annotations

import asyncio
import io
import threading

import httpx
import pytest
from bson import ObjectId
from PIL import Image

from app_patch.service import thumbnails
from app_patch.service.app import create_app
from app_patch.service.placeholder import placeholder_png
from app_patch.service.settings import Settings
from app_patch.service.storage import ChatStore
from app_patch.testdata.hostile import hostile_corpus
from app_patch.testdata.samples import sample_variant
from app_patch.testdata.seed import add_session
from tests.app.conftest import ALICE, SECRET, at, bearer, put_file

PHOTO = sample_variant("jpeg", 2).data  # 640x400
CORPUS = hostile_corpus()
PLACEHOLDER = "x-thumbnail-placeholder"


def thumb(client, file_id, headers, **params):
    return client.get(f"/api/v1/chat/files/{file_id}/thumbnail", headers=headers, params=params)


@pytest.mark.parametrize("size", [100, 200, 300, None])
def test_thumbnail_sizes(client, mongo_db, alice, size):
    fid = put_file(mongo_db, PHOTO, name="photo.jpg")
    r = thumb(client, fid, alice, **({"size": size} if size else {}))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "private, max-age=86400"
    assert r.headers["x-content-type-options"] == "nosniff"
    with Image.open(io.BytesIO(r.content)) as img:
        assert max(img.size) == (size or 200)
        assert img.size[0] > img.size[1]  # 640x400 keeps its aspect


@pytest.mark.parametrize(
    "asked, served",
    [(1, 100), (64, 100), (101, 200), (150, 200), (201, 300), (400, 300), (10_000, 300)],
)
def test_any_sane_size_is_served_from_the_supported_ones(client, mongo_db, alice, asked, served):
    """The original accepted any integer (frontends ask for 64, 150, 400, 500)."""
    fid = put_file(mongo_db, PHOTO)
    r = thumb(client, fid, alice, size=asked)
    assert r.status_code == 200, r.text
    with Image.open(io.BytesIO(r.content)) as img:
        assert max(img.size) == served
    assert r.headers["etag"] == thumb(client, fid, alice, size=served).headers["etag"]
    assert mongo_db["thumbnails.files"].count_documents({}) == 1  # one cached size, not two


@pytest.mark.parametrize("size", ["0", "-100", "10001", "99999999999999999999", "abc", "1e9"])
def test_an_absurd_size_is_a_422_that_says_so(client, mongo_db, alice, size):
    fid = put_file(mongo_db, PHOTO)
    r = thumb(client, fid, alice, size=size)
    assert r.status_code == 422
    assert "size" in str(r.json()["detail"])


def test_generated_once_then_served_from_the_gridfs_cache(
    client, mongo_db, alice, command_log, generations, settings
):
    fid = put_file(mongo_db, PHOTO)
    first = thumb(client, fid, alice, size=100)
    assert first.status_code == 200 and generations == [100]
    key = f"{fid}_100_v{thumbnails.PIPELINE_VERSION}"
    (doc,) = mongo_db["thumbnails.files"].find({"filename": key})
    assert doc["metadata"]["file_id"] == fid and doc["metadata"]["size"] == 100
    assert doc["metadata"]["version"] == thumbnails.PIPELINE_VERSION
    assert doc["metadata"]["user_id"] == ALICE and doc["metadata"]["mime"] == "image/jpeg"
    assert "thumb_key" in mongo_db["thumbnails.files"].index_information()

    command_log.clear()
    second = thumb(client, fid, alice, size=100)
    assert second.content == first.content and generations == [100]
    touched = {target for _, target in command_log.data_commands()}
    assert "fs.chunks" not in touched and "fs.files" not in touched  # the original is not read

    # The cache outlives the process: a fresh app finds it.
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings)) as other:
        assert thumb(other, fid, alice, size=100).content == first.content
    assert generations == [100]
    assert thumb(client, fid, alice, size=300).status_code == 200 and generations == [100, 300]


def test_etag_gives_304_without_touching_the_image(
    client, mongo_db, alice, command_log, generations
):
    fid = put_file(mongo_db, PHOTO)
    etag = thumb(client, fid, alice).headers["etag"]
    command_log.clear()
    r = client.get(f"/api/v1/chat/files/{fid}/thumbnail", headers={**alice, "If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == etag and r.headers["cache-control"] == "private, max-age=86400"
    assert [t for _, t in command_log.data_commands()] == ["file_uploads"]
    assert thumb(client, fid, alice, size=300).headers["etag"] != etag


def test_concurrent_requests_render_once(mongo_db, settings, generations):
    fid = put_file(mongo_db, PHOTO)
    app = create_app(settings)
    from tests.app.conftest import bearer

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(
                *[
                    c.get(f"/api/v1/chat/files/{fid}/thumbnail", headers=bearer(ALICE))
                    for _ in range(8)
                ]
            )
        return [r.status_code for r in rs]

    assert asyncio.run(burst()) == [200] * 8
    assert generations == [200]
    assert mongo_db["thumbnails.files"].count_documents({}) == 1


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_corpus_gives_a_thumbnail_a_placeholder_or_a_clean_400(
    client, mongo_db, alice, name
):
    """Images render; images that cannot (truncated, corrupt, bombs) get the placeholder;
    non-images are a 400 (as the original), except image/* types (SVG), which the original client asks for."""
    data, outcome = CORPUS[name]
    fid = put_file(mongo_db, data, name=f"{name}.png", claimed="image/png")
    r = thumb(client, fid, alice, size=100)
    stored = mongo_db.file_uploads.find_one({"file_id": fid})["mime_type"]
    if outcome == "not_image" and not stored.startswith("image/"):
        assert r.status_code == 400 and r.json()["detail"]  # a reason, not just a code
        return
    assert r.status_code == 200, r.text
    assert (PLACEHOLDER in r.headers) == (outcome != "thumbnail"), r.headers.get(PLACEHOLDER)
    if outcome != "thumbnail":
        assert r.content == placeholder_png(100) and r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as img:
        img.load()
        assert max(img.size) <= 100 and img.format in ("JPEG", "PNG")


def test_history_never_advertises_a_thumbnail_that_fails(client, mongo_db, alice):
    """Every file of the corpus in one message: each advertised thumbnail URL answers an
    image, each file without one answers 400, and the file list agrees with history."""
    session = add_session(mongo_db, user_id=ALICE, messages=[("user", "all of them", at(0))])
    mid = session.message_ids[0]
    for name, (data, _) in sorted(CORPUS.items()):
        put_file(mongo_db, data, name=name, session_id=session.session_id, message_id=mid)
    body = client.get(
        f"/api/v1/chat/sessions/{session.session_id}/history", headers=alice
    ).json()
    uploads = body["history"][0]["uploads"]
    assert len(uploads) == len(CORPUS)
    advertised = set()
    for up in uploads:
        urls = [up[k] for k in ("thumbnail_url", "thumbnail_small", "thumbnail_medium") if k in up]
        assert len(urls) in (0, 3) and bool(urls) == up["is_image"], up
        for url in urls:
            r = client.get(url, headers=alice)
            assert r.status_code == 200 and r.headers["content-type"].startswith("image/"), url
            advertised.add(up["file_id"])
        if not urls:  # only an image/* type the original client asks for (SVG) gets a 200
            want = 200 if up["mime"].startswith("image/") else 400
            assert thumb(client, up["file_id"], alice).status_code == want, up
    listed = client.get(f"/api/v1/chat/files/session/{session.session_id}", headers=alice).json()
    for f in listed["files"]:
        assert ("thumbnail_url" in f) == (f["file_id"] in advertised)
        if f["mime_type"].startswith("image/"):  # what the original client asks a thumbnail of
            assert thumb(client, f["file_id"], alice).status_code == 200, f


def test_a_placeholder_is_cached_and_made_again_under_other_limits(
    client, mongo_db, alice, generations, mongo_url
):
    from fastapi.testclient import TestClient

    truncated = put_file(mongo_db, CORPUS["jpeg_truncated"][0])
    first = thumb(client, truncated, alice, size=100)
    again = thumb(client, truncated, alice, size=100)
    assert first.content == again.content == placeholder_png(100) and generations == [100]
    (doc,) = mongo_db["thumbnails.files"].find()
    assert "truncated" in doc["metadata"]["placeholder"] == first.headers[PLACEHOLDER]
    etag = first.headers["etag"]
    assert "placeholder" in etag and first.headers["cache-control"] == "private, max-age=86400"
    assert thumb(client, truncated, {**alice, "If-None-Match": etag}, size=100).status_code == 304
    other = Settings(mongodb_url=mongo_url, jwt_secret=SECRET, thumbnail_max_pixels=10**6)
    with TestClient(create_app(other)) as c:
        r = thumb(c, truncated, {**alice, "If-None-Match": etag}, size=100)
    assert r.status_code == 200 and generations == [100, 100]  # other limits: tried again

    bomb = put_file(mongo_db, CORPUS["png_bomb_30000x30000"][0])
    assert PLACEHOLDER in thumb(client, bomb, alice).headers
    assert mongo_db["thumbnails.files"].count_documents({"metadata.file_id": bomb}) == 0


def test_the_source_size_cap_gives_the_placeholder_without_reading_the_file(
    mongo_db, alice, mongo_url, generations
):
    from fastapi.testclient import TestClient

    small = Settings(mongodb_url=mongo_url, jwt_secret=SECRET, thumbnail_max_source_bytes=1000)
    fid = put_file(mongo_db, PHOTO)
    with TestClient(create_app(small)) as c:
        r = thumb(c, fid, alice)
    assert r.status_code == 200 and "too large" in r.headers[PLACEHOLDER]
    assert r.content == placeholder_png(200) and generations == []
    assert mongo_db["thumbnails.files"].count_documents({}) == 0  # a limit: decided each time


def test_if_none_match_star_is_only_a_304_when_a_thumbnail_exists(client, mongo_db, alice):
    star = {**alice, "If-None-Match": "*"}
    pdf = put_file(mongo_db, sample_variant("pdf", 0).data)
    gone = put_file(mongo_db, PHOTO)
    mongo_db["fs.files"].delete_one({"_id": ObjectId(gone)})
    photo = put_file(mongo_db, PHOTO)
    assert thumb(client, pdf, star).status_code == 400
    # An image whose bytes are gone: the placeholder, with no validator and no caching.
    r = thumb(client, gone, star)
    assert r.status_code == 200 and PLACEHOLDER in r.headers and "etag" not in r.headers
    assert r.headers["cache-control"] == "private, no-cache"
    r = thumb(client, photo, star)
    assert (r.status_code, r.content) == (304, b"")
    assert r.headers["etag"] == thumb(client, photo, alice).headers["etag"]


def test_head_gives_the_thumbnail_headers_without_a_body(client, mongo_db, alice):
    fid = put_file(mongo_db, PHOTO)
    head = client.head(f"/api/v1/chat/files/{fid}/thumbnail", headers=alice, params={"size": 100})
    assert (head.status_code, head.content) == (200, b"")
    got = thumb(client, fid, alice, size=100)
    for key in ("content-type", "content-length", "etag", "cache-control"):
        assert head.headers[key] == got.headers[key], key
    assert int(head.headers["content-length"]) == len(got.content) > 0
    pdf = put_file(mongo_db, sample_variant("pdf", 0).data)
    assert client.head(f"/api/v1/chat/files/{pdf}/thumbnail", headers=alice).status_code == 400


def _run(app, coro_factory):
    async def main():
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await coro_factory(c, asyncio.get_running_loop())
        finally:
            await app.state.chat_holder.aclose()

    return asyncio.run(main())


def test_a_delete_during_generation_leaves_no_thumbnail(mongo_db, settings, monkeypatch):
    """The file is deleted while its thumbnail renders: the thumbnail stored afterwards goes."""
    fid = put_file(mongo_db, PHOTO)
    app = create_app(settings)
    real = thumbnails.make_thumbnail
    deleted = []

    async def scenario(c, loop):
        def render_then_delete(data, size, **kw):
            result = real(data, size, **kw)
            future = asyncio.run_coroutine_threadsafe(
                c.delete(f"/api/v1/chat/files/{fid}", headers=bearer(ALICE)), loop
            )
            deleted.append(future.result(20).status_code)
            return result

        monkeypatch.setattr(thumbnails, "make_thumbnail", render_then_delete)
        return await c.get(f"/api/v1/chat/files/{fid}/thumbnail", headers=bearer(ALICE))

    r = _run(app, scenario)
    assert deleted == [200]
    assert r.status_code == 404
    assert mongo_db["thumbnails.files"].count_documents({}) == 0
    assert mongo_db["thumbnails.chunks"].count_documents({}) == 0


def _noisy_jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 80).convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_sources_are_read_only_once_their_decode_may_start(mongo_db, mongo_url, monkeypatch):
    """With one worker, three large-file images: while the first renders, the others have
    read their headers (to estimate the decode) and nothing more."""
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET, thumbnail_concurrency=1)
    photo = _noisy_jpeg((1200, 900))
    assert len(photo) > 2 * thumbnails.ESTIMATE_HEAD
    fids = [put_file(mongo_db, photo, name=f"{i}.jpg") for i in range(3)]
    app = create_app(settings)
    started, release = threading.Event(), threading.Event()
    read: list[int] = []
    real_open, real_make = ChatStore.open_file, thumbnails.make_thumbnail

    async def counting_open(self, oid):
        grid_out = await real_open(self, oid)
        real_read, index = grid_out.read, len(read)
        read.append(0)

        async def counting_read(n=-1):
            data = await real_read(n)
            read[index] += len(data)
            return data

        grid_out.read = counting_read
        return grid_out

    def held(data, size, **kw):
        started.set()
        release.wait(10)
        return real_make(data, size, **kw)

    monkeypatch.setattr(ChatStore, "open_file", counting_open)
    monkeypatch.setattr(thumbnails, "make_thumbnail", held)

    async def scenario(c, loop):
        async def probe():
            while not started.is_set():
                await asyncio.sleep(0.01)
            # Wait (however busy the machine) until the two waiting requests have read their
            # headers, then give them time to read more, were they allowed to.
            deadline = loop.time() + 30
            while loop.time() < deadline and (
                len(read) < 3 or sum(n >= thumbnails.ESTIMATE_HEAD for n in read) < 3
            ):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            seen = sorted(read)
            release.set()
            return seen

        gets = [c.get(f"/api/v1/chat/files/{f}/thumbnail", headers=bearer(ALICE)) for f in fids]
        *responses, seen = await asyncio.gather(*gets, probe())
        return [r.status_code for r in responses], seen

    try:
        statuses, seen_while_rendering = _run(app, scenario)
    finally:
        release.set()
    assert statuses == [200, 200, 200]
    assert seen_while_rendering == [thumbnails.ESTIMATE_HEAD] * 2 + [len(photo)]
