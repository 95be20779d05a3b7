"""The whole API over realistic seeded data (every format and untidy case), post-migration."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict

import pytest
from bson import ObjectId

from app_patch.testdata.samples import IMAGE_KINDS
from app_patch.testdata.seed import seed
from tests.app.conftest import apply_contract, bearer, gridfs_bytes

NOT_IMAGES = {"pdf", "text", "zero_byte"}  # 400: history advertises no thumbnail for them
PLACEHOLDERS = {"truncated_jpeg", "truncated_png", "large_dims_png"}  # images we cannot render


@pytest.fixture(scope="module")
def seeded_db(mongo_server_url, mongo_client):
    """One seeded, migrated database shared by this module's read-only tests."""
    from mongrate.config import with_database

    name = f"t_seeded_{os.getpid()}"
    db = mongo_client[name]
    report = seed(db, sessions=8, messages_per_session=14, uploads=90, seed=11)
    apply_contract(db)
    yield db, report, with_database(mongo_server_url, name)
    mongo_client.drop_database(name)


@pytest.fixture
def seeded(seeded_db):
    return seeded_db[1]


@pytest.fixture
def mongo_db(seeded_db):
    return seeded_db[0]


@pytest.fixture
def mongo_url(seeded_db):
    return seeded_db[2]


def test_every_session_pages_back_to_exactly_what_the_database_holds(client, mongo_db, seeded):
    rows_by_user = defaultdict(dict)
    for row in mongo_db.file_uploads.find({}):
        rows_by_user[row["user_id"]][row["file_id"]] = row
    orphans = {str(d["_id"]): d for d in mongo_db["fs.files"].find({})}
    sessions = list(mongo_db.chat_sessions.find({}))
    assert len(sessions) == 8
    for sess in sessions:
        user, sid = sess["user_id"], sess["session_id"]
        expected = list(
            mongo_db.chat_messages.find({"session_id": sid}).sort([("created_at", 1), ("_id", 1)])
        )
        got, before = [], None
        while True:
            params = {"limit": 9} | ({"before": before} if before else {})
            r = client.get(
                f"/api/v1/chat/sessions/{sid}/history", headers=bearer(user), params=params
            )
            assert r.status_code == 200, r.text
            got = r.json()["history"] + got
            before = r.json()["next_before"]
            if not before:
                break
        assert [m["id"] for m in got] == [str(m["_id"]) for m in expected]
        mine = rows_by_user[user]
        for msg, doc in zip(got, expected, strict=True):
            assert msg["file_ids"] == doc["file_ids"] and msg["has_files"] == doc["has_files"]
            visible = [
                f
                for f in doc["file_ids"]
                if f in mine
                or (f in orphans and (orphans[f].get("metadata") or {}).get("user_id") == user)
            ]
            assert [u["file_id"] for u in msg["uploads"]] == visible
            for up in msg["uploads"]:
                row = mine.get(up["file_id"])
                if row is not None:
                    assert (up["name"], up["mime"], up["size"], up["is_image"]) == (
                        row["original_name"],
                        row["mime_type"],
                        row["file_size"],
                        row["is_image"],
                    )


def test_every_upload_serves_and_thumbnails_as_its_kind_demands(client, mongo_db, seeded):
    kinds = {fid: kind for fid, (kind, _variant) in seeded.samples.items()}
    seen = defaultdict(set)
    for row in mongo_db.file_uploads.find({}):
        fid, headers = row["file_id"], bearer(row["user_id"])
        r = client.get(f"/api/v1/chat/files/{fid}", headers=headers)
        if row["file_missing"]:
            assert r.status_code == 404
            continue
        assert r.status_code == 200
        if row.get("file_hash"):  # cheaper than reading GridFS again (FerretDB scans chunks)
            assert hashlib.sha256(r.content).hexdigest() == row["file_hash"]
        else:
            assert r.content == gridfs_bytes(mongo_db, fid)
        kind = kinds[fid]
        if kind not in seen:  # one render per kind: rendering and caching dominate the time
            t = client.get(
                f"/api/v1/chat/files/{fid}/thumbnail", headers=headers, params={"size": 100}
            )
            assert t.status_code == (400 if kind in NOT_IMAGES else 200), (kind, t.text)
            assert ("x-thumbnail-placeholder" in t.headers) == (kind in PLACEHOLDERS), kind
            assert kind in IMAGE_KINDS | NOT_IMAGES | PLACEHOLDERS, kind
            seen[kind].add(t.status_code)
        inline = r.headers["content-disposition"].startswith("inline")
        assert inline == (
            r.headers["content-type"]
            in {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/x-icon"}
        )
    # The seeded data really exercised the interesting kinds.
    assert {"jpeg", "png", "pdf"} <= set(seen)
    missing = next(r for r in mongo_db.file_uploads.find({"file_missing": True}))
    t = client.get(
        f"/api/v1/chat/files/{missing['file_id']}/thumbnail", headers=bearer(missing["user_id"])
    )
    assert t.status_code == 404


def test_no_user_reaches_another_users_files(client, mongo_db, seeded):
    users = sorted({r["user_id"] for r in mongo_db.file_uploads.find({}, {"user_id": 1})})
    assert len(users) >= 2
    for row in mongo_db.file_uploads.find({"file_missing": False}).limit(30):
        other = next(u for u in users if u != row["user_id"])
        for suffix in ("", "/thumbnail", "?download=true"):
            r = client.get(f"/api/v1/chat/files/{row['file_id']}{suffix}", headers=bearer(other))
            assert r.status_code == 404
        r = client.get(f"/api/v1/chat/sessions/{row['session_id']}/history", headers=bearer(other))
        assert r.status_code == 404
    assert mongo_db["fs.files"].count_documents({"_id": ObjectId(row["file_id"])}) == 1
