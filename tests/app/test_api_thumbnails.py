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
from app_patch.service.settings import Settings
from app_patch.service.storage import ChatStore
from app_patch.testdata.hostile import hostile_corpus
from app_patch.testdata.samples import sample_variant
from tests.app.conftest import ALICE, SECRET, bearer, put_file

PHOTO = sample_variant("jpeg", 2).data  # 640x400
CORPUS = hostile_corpus()
STATUS = {"thumbnail": 200, "not_image": 415, "bad_image": 422, "too_large": 422}


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


@pytest.mark.parametrize("size", ["150", "0", "-100", "abc", "2000", "1e9"])
def test_any_other_size_is_422(client, mongo_db, alice, size):
    fid = put_file(mongo_db, PHOTO)
    assert thumb(client, fid, alice, size=size).status_code == 422


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
def test_hostile_corpus_gives_a_thumbnail_or_a_clean_4xx(client, mongo_db, alice, name):
    data, outcome = CORPUS[name]
    fid = put_file(mongo_db, data, name=f"{name}.png", claimed="image/png")
    r = thumb(client, fid, alice, size=100)
    assert r.status_code == STATUS[outcome], r.text
    if outcome == "thumbnail":
        with Image.open(io.BytesIO(r.content)) as img:
            img.load()
            assert max(img.size) <= 100 and img.format in ("JPEG", "PNG")
    else:
        assert r.json()["detail"]  # a reason, not just a code


def test_the_source_size_cap_is_a_422(mongo_db, alice, mongo_url):
    from fastapi.testclient import TestClient

    from app_patch.service.settings import Settings
    from tests.app.conftest import SECRET

    small = Settings(mongodb_url=mongo_url, jwt_secret=SECRET, thumbnail_max_source_bytes=1000)
    fid = put_file(mongo_db, PHOTO)
    with TestClient(create_app(small)) as c:
        r = thumb(c, fid, alice)
    assert r.status_code == 422 and "too large" in r.json()["detail"]


def test_if_none_match_star_is_only_a_304_when_a_thumbnail_exists(client, mongo_db, alice):
    star = {**alice, "If-None-Match": "*"}
    pdf = put_file(mongo_db, sample_variant("pdf", 0).data)
    gone = put_file(mongo_db, PHOTO)
    mongo_db["fs.files"].delete_one({"_id": ObjectId(gone)})
    photo = put_file(mongo_db, PHOTO)
    assert thumb(client, pdf, star).status_code == 415
    assert thumb(client, gone, star).status_code == 404
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
    assert client.head(f"/api/v1/chat/files/{pdf}/thumbnail", headers=alice).status_code == 415


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
            await asyncio.sleep(0.3)  # time for the others to read theirs, were they allowed
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
        thumbnails.configure(max_concurrency=2)  # the other tests' default pool size
    assert statuses == [200, 200, 200]
    assert seen_while_rendering == [thumbnails.ESTIMATE_HEAD] * 2 + [len(photo)]
