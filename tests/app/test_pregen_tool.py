"""``python -m app_patch.tools.pregen_thumbnails``: existing images' thumbnails, resumable."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from bson import ObjectId
from fastapi.testclient import TestClient
from PIL import Image

from app_patch.service import thumbnails
from app_patch.service.app import create_app
from app_patch.service.settings import Settings
from app_patch.service.thumbservice import cache_key
from app_patch.testdata.samples import sample_variant
from tests.app.conftest import ALICE, BOB, SECRET, bearer, gridfs_bytes, put_file

TOOL = [sys.executable, "-m", "app_patch.tools.pregen_thumbnails"]


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def stored(mongo_db) -> dict[str, str]:
    """Images of two users, and what must be skipped: a corrupt image, missing bytes, a PDF."""
    photo, png = sample_variant("jpeg", 2).data, _png((900, 500))
    ids = {
        "photo": put_file(mongo_db, photo, user_id=ALICE, name="a.jpg"),
        "png": put_file(mongo_db, png, user_id=BOB, name="b.png"),
        "photo2": put_file(mongo_db, sample_variant("jpeg", 1).data, user_id=ALICE),
        "corrupt": put_file(mongo_db, png[: len(png) // 2], user_id=ALICE, name="c.png"),
        "pdf": put_file(mongo_db, sample_variant("pdf", 0).data, user_id=ALICE, name="d.pdf"),
        "gone": put_file(mongo_db, photo, user_id=ALICE, name="gone.jpg"),
    }
    gone = ids["gone"]
    mongo_db["fs.chunks"].delete_many({"files_id": ObjectId(gone)})
    mongo_db["fs.files"].delete_one({"_id": ObjectId(gone)})
    return ids


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TOOL, *args], capture_output=True, text=True, timeout=120)


def _cache(db) -> dict[str, dict]:
    return {d["filename"]: d for d in db["thumbnails.files"].find()}


def test_makes_what_the_app_would_and_skips_what_it_cannot(
    mongo_db, mongo_url, stored, generations
):
    proc = _run("--url", mongo_url, "--batch", "2", "-v")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("pregen: 5 images") >= 1  # the PDF is not an image row
    done = proc.stdout.strip().splitlines()[-1]
    assert "5 images: 0 already complete, 9 thumbnails made, 2 skipped" in done, done
    assert "1 bytes missing" in done and "1 not renderable" in done
    assert (
        f"skipped {stored['corrupt']}" in proc.stdout and f"skipped {stored['gone']}" in proc.stdout
    )
    cache = _cache(mongo_db)
    assert len(cache) == 9
    for name in ("photo", "png", "photo2"):
        data = gridfs_bytes(mongo_db, stored[name])
        made = thumbnails.make_thumbnails(data, thumbnails.THUMB_SIZES)
        for size, thumb in made.items():
            doc = cache[cache_key(stored[name], size)]
            chunks = mongo_db["thumbnails.chunks"].find({"files_id": doc["_id"]}).sort("n", 1)
            assert b"".join(bytes(c["data"]) for c in chunks) == thumb.data
            user = BOB if name == "png" else ALICE
            assert doc["metadata"] == {
                "file_id": stored[name], "size": size, "version": thumbnails.PIPELINE_VERSION,
                "user_id": user, "mime": thumb.mime, "width": thumb.width, "height": thumb.height,
            }  # fmt: skip
    # The app serves them from the cache: no render.
    settings = Settings(mongodb_url=mongo_url, jwt_secret=SECRET)
    with TestClient(create_app(settings)) as client:
        url = f"/api/v1/chat/files/{stored['png']}/thumbnail"
        assert client.get(url, headers=bearer(BOB), params={"size": 300}).status_code == 200
    assert generations == []


def test_a_second_run_skips_what_is_cached_and_fills_only_gaps(mongo_db, mongo_url, stored):
    assert _run("--url", mongo_url).returncode == 0
    before = _cache(mongo_db)
    again = _run("--url", mongo_url)
    assert again.returncode == 0
    assert "5 images: 3 already complete, 0 thumbnails made, 2 skipped" in again.stdout
    assert _cache(mongo_db).keys() == before.keys()
    # An interrupted run leaves gaps: only those are made.
    lost = cache_key(stored["photo"], 300)
    mongo_db["thumbnails.files"].delete_one({"filename": lost})
    third = _run("--url", mongo_url, "--jobs", "1")
    assert "2 already complete, 1 thumbnails made" in third.stdout
    assert _cache(mongo_db).keys() == before.keys()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--url", "mongodb://127.0.0.1:9/x?serverSelectionTimeoutMS=300"], "cannot reach"),
        (["--batch", "0"], "not a positive integer"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, mongo_db):
    proc = _run(*args)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr
    assert "thumbnails.files" not in mongo_db.list_collection_names()
