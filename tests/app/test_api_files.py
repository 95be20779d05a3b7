"""GET/DELETE /files/{id} and the file lists: types, names, caching, ranges, streaming."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import unquote

import httpx
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from app_patch.service.files import SNIFF_BYTES, file_response
from app_patch.service.storage import ChatStore
from app_patch.testdata.samples import sample_variant
from app_patch.testdata.seed import add_session
from tests.app.conftest import ALICE, BOB, at, put_file

PNG = sample_variant("png", 1).data
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
XML = b'<?xml version="1.0"?><note><to>x</to></note>'


def url(file_id: str, suffix: str = "") -> str:
    return f"/api/v1/chat/files/{file_id}{suffix}"


def disposition_filename(header: str) -> tuple[str, str]:
    """(ASCII ``filename=``, decoded RFC 6266 ``filename*``) of a Content-Disposition."""
    plain = re.search(r'; filename="([^"\\]*)"', header).group(1)
    star = re.search(r"; filename\*=UTF-8''([A-Za-z0-9!#$&+.^_`|~%-]+)$", header).group(1)
    return plain, unquote(star, errors="strict")


def test_an_image_is_served_inline_with_private_caching_and_hardening(client, mongo_db, alice):
    fid = put_file(mongo_db, PNG, name="photo.png", claimed="image/jpeg")
    r = client.get(url(fid), headers=alice)
    assert r.status_code == 200
    assert r.content == PNG
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"].startswith("inline;")
    assert r.headers["cache-control"] == "private, max-age=3600"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert re.fullmatch(r'"[^"]+"', r.headers["etag"])
    assert r.headers["last-modified"].endswith("GMT")
    assert r.headers["content-length"] == str(len(PNG))
    d = client.get(url(fid), headers=alice, params={"download": "true"})
    assert d.content == PNG and d.headers["content-disposition"].startswith("attachment;")


def test_the_type_sent_is_sniffed_even_before_the_migration(client, mongo_db, alice):
    """A row still carrying the client's wrong label: the bytes decide."""
    fid = put_file(mongo_db, PNG, name="x.jpg")
    mongo_db.file_uploads.update_one(
        {"file_id": fid}, {"$set": {"mime_type": "image/jpeg"}, "$unset": {"is_image": ""}}
    )
    assert client.get(url(fid), headers=alice).headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "data, sent",
    [
        (HTML, "application/octet-stream"),
        (SVG, "application/octet-stream"),
        (XML, "application/octet-stream"),
        (b"\x00\x01\x02binary junk\xff", "application/octet-stream"),
        (sample_variant("pdf", 0).data, "application/pdf"),
        (sample_variant("tiff", 0).data, "image/tiff"),
        (b"just some notes\n", "text/plain; charset=utf-8"),
    ],
    ids=["html", "svg", "xml", "unknown", "pdf", "tiff", "text"],
)
def test_active_and_unknown_content_only_ever_leaves_as_an_attachment(
    client, mongo_db, alice, data, sent
):
    fid = put_file(mongo_db, data, name="innocent.png", claimed="image/png")
    r = client.get(url(fid), headers=alice)
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == sent
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "name, ascii_part, full",
    [
        ('my "best" photo.png', "my _best_ photo.png", 'my "best" photo.png'),
        ("evil\r\nContent-Type: text/html.png", "html.png", "html.png"),
        ("../../etc/passwd", "passwd.png", "passwd.png"),
        ("..\\..\\windows\\win.ini", "win.png", "win.png"),
        ("фото_1.png", "1.png", "фото_1.png"),
        ("café-menü.png", "cafe-menu.png", "café-menü.png"),
        ("😀 party.png", "party.png", "😀 party.png"),
        ("", "file.png", "file.png"),
        ("写真", "file.png", "写真.png"),
        ("a;b=c,d.png", "a_b=c,d.png", "a;b=c,d.png"),
        # Bidi overrides/isolates/marks would make "...exe" display as "...png".
        ("invoice\u202egnp.exe", "invoicegnp.exe.png", "invoicegnp.exe.png"),
        ("\u2066a\u2069\u200e\u200fb\u202a\u202d\u061c.png", "ab.png", "ab.png"),
    ],
)
def test_any_name_survives_content_disposition(client, mongo_db, alice, name, ascii_part, full):
    fid = put_file(mongo_db, PNG, name=name)
    header = client.get(url(fid), headers=alice).headers["content-disposition"]
    assert "\r" not in header and "\n" not in header
    assert header.isascii()
    plain, decoded = disposition_filename(header)
    assert plain == ascii_part
    assert decoded == full


POLYGLOT = PNG + HTML  # a PNG to every sniffer, an HTML page to a browser given the name


@pytest.mark.parametrize(
    "data, name, sent, saved",
    [
        (POLYGLOT, "report.html", "image/png", "report.png"),
        (POLYGLOT, "con.png\0.html", "image/png", "_con.png"),  # a NUL ends the name
        (PNG, "photo.JPEG", "image/png", "photo.png"),
        (PNG, "photo.PNG", "image/png", "photo.PNG"),
        (PNG, "no extension", "image/png", "no extension.png"),
        (PNG, "setup.exe", "image/png", "setup.exe.png"),
        (sample_variant("jpeg", 0).data, "scan.jpeg", "image/jpeg", "scan.jpeg"),
        (sample_variant("pdf", 0).data, "doc.png", "application/pdf", "doc.pdf"),
        (b"just some notes\n", "run.js", "text/plain; charset=utf-8", "run.txt"),
        (b"a,b\n1,2\n", "table.csv", "text/plain; charset=utf-8", "table.csv"),
        (HTML, "page.html", "application/octet-stream", "page.bin"),
        (SVG, "logo.png", "application/octet-stream", "logo.bin"),
        (b"\x00\x01\x02binary junk\xff", "model.dat", "application/octet-stream", "model.dat"),
    ],
)
def test_the_download_name_agrees_with_the_type_served(
    client, mongo_db, alice, data, name, sent, saved
):
    fid = put_file(mongo_db, data, name=name)
    for params in ({"download": "true"}, {}):
        r = client.get(url(fid), headers=alice, params=params)
        assert r.status_code == 200 and r.headers["content-type"] == sent
        plain, full = disposition_filename(r.headers["content-disposition"])
        assert full == plain == saved
    if sent.startswith("image/"):  # thumbnails are JPEG or PNG whatever the file was named
        t = client.get(url(fid, "/thumbnail"), headers=alice)
        _, thumb_name = disposition_filename(t.headers["content-disposition"])
        want = (".png",) if t.headers["content-type"] == "image/png" else (".jpg", ".jpeg")
        assert thumb_name.startswith("thumb_200_") and thumb_name.lower().endswith(want)


def test_etag_and_last_modified_answer_304(client, mongo_db, alice):
    fid = put_file(mongo_db, PNG)
    first = client.get(url(fid), headers=alice)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        r = client.get(url(fid), headers={**alice, "If-None-Match": tag})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["etag"] == etag
        assert r.headers["cache-control"] == "private, max-age=3600"
    assert client.get(url(fid), headers={**alice, "If-None-Match": '"nope"'}).status_code == 200
    assert client.get(url(fid), headers={**alice, "If-Modified-Since": modified}).status_code == 304
    early = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert client.get(url(fid), headers={**alice, "If-Modified-Since": early}).status_code == 200


def test_ranges_across_chunk_boundaries(client, mongo_db, alice):
    data = PNG + bytes(range(256)) * 40  # > 10 kB in 1000-byte chunks
    fid = put_file(mongo_db, data, chunk_size=1000)
    n = len(data)
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=995-2010": (995, 2010),
        "bytes=9000-": (9000, n - 1),
        "bytes=-5": (n - 5, n - 1),
        f"bytes=100-{n + 500}": (100, n - 1),
        f"bytes=-{n + 10}": (0, n - 1),
        "bytes=8190-8195": (8190, 8195),  # straddles the sniffed head
    }
    for header, (first, last) in cases.items():
        r = client.get(url(fid), headers={**alice, "Range": header})
        assert r.status_code == 206, header
        assert r.content == data[first : last + 1], header
        assert r.headers["content-range"] == f"bytes {first}-{last}/{n}"
        assert r.headers["content-length"] == str(last - first + 1)
    full = client.get(url(fid), headers=alice)
    assert full.content == data and full.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize(
    "header",
    [f"bytes={10**6}-", "bytes=-0", f"bytes={10**6}-{10**6 + 5}", "bytes=" + "9" * 5000 + "-"],
    ids=["past-end", "empty-suffix", "past-end-closed", "5000-digits"],
)
def test_an_unsatisfiable_range_is_416(client, mongo_db, alice, header):
    fid = put_file(mongo_db, PNG)
    r = client.get(url(fid), headers={**alice, "Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(PNG)}"


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=0-1,5-6", "items=0-5", "bytes=9-3"])
def test_ranges_we_do_not_serve_get_the_whole_file(client, mongo_db, alice, header):
    fid = put_file(mongo_db, PNG)
    r = client.get(url(fid), headers={**alice, "Range": header})
    assert r.status_code == 200 and r.content == PNG


def test_latin1_superscript_digits_in_a_range_are_ignored(mongo_db, settings):
    """str.isdigit() says yes to "²", int() says no (was a 500). The raw bytes must reach the
    app as sent, which TestClient does not do (it re-encodes header values as UTF-8)."""
    from app_patch.service.app import create_app
    from tests.app.conftest import bearer

    fid = put_file(mongo_db, PNG)
    app = create_app(settings)
    headers = [b"bytes=\xb2-", b"bytes=0-\xb3", b"bytes=-\xb9", b"bytes=\xb9\xb2-\xb3"]

    async def ask() -> list[tuple[int, bytes]]:
        transport = httpx.ASGITransport(app=app)  # passes header bytes through untouched
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = [await c.get(url(fid), headers={**bearer(ALICE), "Range": h}) for h in headers]
        await app.state.chat_holder.aclose()
        return [(r.status_code, r.content) for r in rs]

    assert asyncio.run(ask()) == [(200, PNG)] * len(headers)


def test_if_range_with_a_stale_etag_sends_everything(client, mongo_db, alice):
    fid = put_file(mongo_db, PNG)
    etag = client.get(url(fid), headers=alice).headers["etag"]
    fresh = client.get(url(fid), headers={**alice, "Range": "bytes=0-3", "If-Range": etag})
    stale = client.get(url(fid), headers={**alice, "Range": "bytes=0-3", "If-Range": '"old"'})
    assert (fresh.status_code, fresh.content) == (206, PNG[:4])
    assert (stale.status_code, stale.content) == (200, PNG)


def test_a_zero_byte_file(client, mongo_db, alice):
    fid = put_file(mongo_db, b"", name="empty.png", claimed="image/png")
    r = client.get(url(fid), headers=alice)
    assert (r.status_code, r.content) == (200, b"")
    assert r.headers["content-type"] == "application/octet-stream"
    assert client.get(url(fid), headers={**alice, "Range": "bytes=0-"}).status_code == 416


def test_files_stream_chunk_by_chunk(mongo_db, mongo_url):
    """The body is produced one GridFS chunk at a time, never as one bytes object."""
    data = bytes(range(256)) * 4096  # 1 MiB
    fid = put_file(mongo_db, data, chunk_size=64 * 1024)

    async def pieces() -> list[int]:
        client = AsyncMongoClient(mongo_url)
        try:
            store = ChatStore(client[mongo_db.name])
            record = await store.find_file(fid, ALICE)
            response = await file_response(
                store,
                record,
                download=False,
                if_none_match=None,
                if_modified_since=None,
                range_header=None,
                if_range=None,
            )
            return [len(p) async for p in response.body_iterator]
        finally:
            await client.close()

    sizes = asyncio.run(pieces())
    assert sum(sizes) == len(data)
    assert max(sizes) <= 64 * 1024 and len(sizes) >= 16
    assert sizes[0] == SNIFF_BYTES


def test_missing_foreign_and_malformed_ids_all_look_the_same(client, mongo_db, alice, bob):
    mine = put_file(mongo_db, PNG)
    gone = put_file(mongo_db, PNG)
    mongo_db["fs.files"].delete_one({"_id": ObjectId(gone)})
    answers = [
        client.get(url(mine), headers=bob),
        client.get(url(gone), headers=alice),
        client.get(url(str(ObjectId())), headers=alice),
        client.get(url("not-an-id"), headers=alice),
        client.get(url("../../etc/passwd"), headers=alice),
    ]
    assert [a.status_code for a in answers] == [404] * 5
    assert len({a.text for a in answers[:4]}) == 1


def test_session_and_message_file_lists(client, mongo_db, alice, bob):
    s = add_session(
        mongo_db,
        user_id=ALICE,
        messages=[("user", "one", at(0)), ("user", "two", at(60))],
        uploads=[
            {"kind": "png", "message": 0, "name": "a.png", "uploaded_at": at(1)},
            {"kind": "pdf", "message": 1, "name": "b.pdf", "mime": "image/png",
             "uploaded_at": at(61)},
            {"kind": "jpeg", "message": 1, "name": "c.jpg", "uploaded_at": at(62)},
        ],
    )
    r = client.get(url("session/" + s.session_id), headers=alice)
    assert r.status_code == 200
    body = r.json()
    assert body["session_id"] == s.session_id and body["count"] == 3
    assert {f["original_name"] for f in body["files"]} == {"a.png", "b.pdf", "c.jpg"}
    first = body["files"][0]
    for key in (
        "file_id",
        "original_name",
        "mime_type",
        "file_size",
        "upload_type",
        "uploaded_at",
        "processed",
        "metadata",
        "is_image",
        "url",
    ):
        assert key in first
    assert [f["file_id"] for f in body["files"]] == s.file_ids  # oldest first, as the original
    m = client.get(url("message/" + s.message_ids[1]), headers=alice).json()
    assert m["message_id"] == s.message_ids[1]
    assert [f["original_name"] for f in m["files"]] == ["b.pdf", "c.jpg"]
    # Unknown, malformed or someone else's: 200 with no files, as the original answered.
    for path, who, echo in [
        ("session/" + s.session_id, bob, s.session_id),
        ("session/no-such-session", alice, "no-such-session"),
        ("message/" + s.message_ids[1], bob, s.message_ids[1]),
        ("message/" + str(ObjectId()), alice, None),
        ("message/nonsense", alice, "nonsense"),
    ]:
        r = client.get(url(path), headers=who)
        assert r.status_code == 200, path
        key = "session_id" if path.startswith("session/") else "message_id"
        assert r.json()["files"] == [] and r.json()["count"] == 0
        assert r.json()[key] == (echo or path.split("/")[1])


def test_delete_removes_bytes_thumbnails_row_and_message_link(client, mongo_db, alice, bob):
    s = add_session(
        mongo_db,
        user_id=ALICE,
        messages=[("user", "pics", at(0))],
        uploads=[{"kind": "png", "message": 0}, {"kind": "jpeg", "message": 0}],
    )
    fid, keep = s.file_ids
    oid = ObjectId(fid)
    assert client.get(url(fid, "/thumbnail"), headers=alice).status_code == 200
    assert mongo_db["thumbnails.files"].count_documents({"metadata.file_id": fid}) == 1
    assert client.delete(url(fid), headers=bob).status_code == 404
    assert mongo_db["fs.files"].count_documents({"_id": oid}) == 1
    r = client.delete(url(fid), headers=alice)
    assert r.status_code == 200, r.text
    assert mongo_db["fs.files"].count_documents({"_id": oid}) == 0
    assert mongo_db["fs.chunks"].count_documents({"files_id": oid}) == 0
    assert mongo_db["thumbnails.files"].count_documents({"metadata.file_id": fid}) == 0
    assert mongo_db["thumbnails.chunks"].count_documents({}) == 0
    assert mongo_db.file_uploads.count_documents({"file_id": fid}) == 0
    msg = mongo_db.chat_messages.find_one({"_id": ObjectId(s.message_ids[0])})
    assert msg["file_ids"] == [keep] and msg["has_files"] is True
    assert client.delete(url(fid), headers=alice).status_code == 404
    assert client.delete(url(keep), headers=alice).status_code == 200
    msg = mongo_db.chat_messages.find_one({"_id": ObjectId(s.message_ids[0])})
    assert msg["file_ids"] == [] and msg["has_files"] is False


def test_a_gridfs_file_without_a_row_is_served_to_its_owner_only(client, mongo_db, alice, bob):
    from gridfs import GridFSBucket

    oid = GridFSBucket(mongo_db).upload_from_stream(
        "lone.png", PNG, metadata={"user_id": ALICE, "original_name": "lone.png"}
    )
    assert client.get(url(str(oid)), headers=alice).content == PNG
    assert client.get(url(str(oid)), headers=bob).status_code == 404
    # ... unless someone else's upload row claims the id: then nobody but that user.
    mongo_db.file_uploads.insert_one({"file_id": str(oid), "user_id": BOB, "original_name": "x"})
    assert client.get(url(str(oid)), headers=alice).status_code == 404


def test_head_gives_the_get_headers_without_a_body(client, mongo_db, alice, bob):
    data = PNG + bytes(2000)
    fid = put_file(mongo_db, data, name="photo.png")
    got = client.get(url(fid), headers=alice)
    head = client.head(url(fid), headers=alice)
    assert (head.status_code, head.content) == (200, b"")
    for key in ("content-type", "content-length", "content-disposition", "etag", "accept-ranges"):
        assert head.headers[key] == got.headers[key], key
    assert head.headers["content-length"] == str(len(data))
    part = client.head(url(fid), headers={**alice, "Range": "bytes=10-19"})
    assert (part.status_code, part.content) == (206, b"")
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert part.headers["content-length"] == "10"
    etag = got.headers["etag"]
    assert client.head(url(fid), headers={**alice, "If-None-Match": etag}).status_code == 304
    assert client.head(url(fid), headers=bob).status_code == 404
    assert client.head(url(str(ObjectId())), headers=alice).status_code == 404


def test_a_missing_chunk_is_a_422_when_it_is_the_first_one_asked_for(client, mongo_db, alice):
    """Downloads read the files document and the requested chunks only (no count of
    fs.chunks): a range that avoids the gap is served; one starting in it is a 422 before
    any byte; a whole download is cut short at the gap (its Content-Length is not met)."""
    data = bytes(range(256)) * 80  # 20 chunks of 1024 bytes
    fid = put_file(mongo_db, data, chunk_size=1024)
    mongo_db["fs.chunks"].delete_one({"files_id": ObjectId(fid), "n": 15})
    part = client.get(url(fid), headers={**alice, "Range": "bytes=0-99"})
    assert (part.status_code, part.content) == (206, data[:100])
    for headers in ({"Range": "bytes=15400-15500"}, {"Range": "bytes=-5000"}):
        r = client.get(url(fid), headers={**alice, **headers})
        assert r.status_code == 422, headers
        assert "incomplete" in r.json()["detail"]
    whole = client.get(url(fid), headers=alice)
    assert whole.status_code == 200 and len(whole.content) == 15 * 1024
    assert whole.headers["content-length"] == str(len(data))
    mongo_db["fs.chunks"].delete_one({"files_id": ObjectId(fid), "n": 0})
    assert client.get(url(fid), headers=alice).status_code == 422  # the head itself
    complete = put_file(mongo_db, data, chunk_size=1024)
    assert client.get(url(complete), headers=alice).content == data


def test_an_uppercase_file_id_deletes_everything_the_lowercase_one_names(
    client, mongo_db, alice, bob
):
    s = add_session(
        mongo_db,
        user_id=ALICE,
        messages=[("user", "pic", at(0))],
        uploads=[{"kind": "png", "message": 0}],
    )
    (fid,) = s.file_ids
    upper = fid.upper()
    assert upper != fid
    lower_thumb = client.get(url(fid, "/thumbnail"), headers=alice)
    upper_thumb = client.get(url(upper, "/thumbnail"), headers=alice)
    assert upper_thumb.headers["etag"] == lower_thumb.headers["etag"]  # one cache entry
    assert mongo_db["thumbnails.files"].count_documents({}) == 1
    assert (
        client.get(url(upper), headers=alice).content == client.get(url(fid), headers=alice).content
    )
    assert client.delete(url(upper), headers=bob).status_code == 404
    r = client.delete(url(upper), headers=alice)
    assert r.status_code == 200 and r.json()["file_id"] == fid
    assert mongo_db["fs.files"].count_documents({}) == 0
    assert mongo_db.file_uploads.count_documents({}) == 0
    assert mongo_db["thumbnails.files"].count_documents({}) == 0
    msg = mongo_db.chat_messages.find_one({"_id": ObjectId(s.message_ids[0])})
    assert msg["file_ids"] == [] and msg["has_files"] is False


def test_delete_also_removes_thumbnails_found_only_by_their_key(client, mongo_db, alice):
    from gridfs import GridFSBucket

    fid = put_file(mongo_db, PNG)
    other = put_file(mongo_db, PNG)
    bucket = GridFSBucket(mongo_db, bucket_name="thumbnails")
    bucket.upload_from_stream(f"{fid}_100_v0", b"old pipeline, no metadata")
    bucket.upload_from_stream(f"{other}_100_v0", b"someone else's")
    assert client.delete(url(fid), headers=alice).status_code == 200
    names = [d["filename"] for d in mongo_db["thumbnails.files"].find({})]
    assert names == [f"{other}_100_v0"]
    assert mongo_db["thumbnails.chunks"].count_documents({}) == 1


def test_parallel_deletes_of_one_messages_files_leave_no_dangling_id(mongo_db, settings):
    from app_patch.service.app import create_app
    from tests.app.conftest import bearer

    s = add_session(
        mongo_db,
        user_id=ALICE,
        messages=[("user", "five", at(0))],
        uploads=[{"kind": "png", "message": 0} for _ in range(5)],
    )
    app = create_app(settings)

    async def delete_all() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(
                *[c.delete(url(fid), headers=bearer(ALICE)) for fid in s.file_ids]
            )
        await app.state.chat_holder.aclose()
        return [r.status_code for r in rs]

    assert asyncio.run(delete_all()) == [200] * 5
    msg = mongo_db.chat_messages.find_one({"_id": ObjectId(s.message_ids[0])})
    assert msg["file_ids"] == [] and msg["has_files"] is False
