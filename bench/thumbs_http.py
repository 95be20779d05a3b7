"""Thumbnail requests through the HTTP app: a fresh render against the GridFS-cached one.

For each image stored in GridFS, repeatedly (interleaved, same run):

- ``fresh``: the cache entry is deleted, then ``GET /files/{id}/thumbnail`` reads the original
  from GridFS, sniffs, decodes, resizes, encodes and stores the result;
- ``cached``: the same request again, answered from the ``thumbnails`` bucket;
- ``304``: the same request with ``If-None-Match`` (one ownership query, no bytes);
- ``first view``: the image is uploaded (``POST /files``), then its thumbnail is asked for at
  once, as a frontend showing the new message would. The upload's background work (the
  thumbnails its verification decode allows, the rest from GridFS) races that request.

Prints medians and the fresh/cached ratio. The cached path must be faster than the fresh
one for every image (exit 1 otherwise); how much faster depends on the image: the larger
the original, the more a cache hit saves. The first view's target is within 2x of a cached
view (exit 1 when missed); the upload's own time is printed beside it.

Run: .venv/bin/python bench/thumbs_http.py [--url mongodb://...] [--reps N] [--size PX]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Starlette nags about its httpx-based TestClient; nothing to act on in a benchmark.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from fastapi.testclient import TestClient  # noqa: E402
from gridfs import GridFSBucket  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from results import record  # noqa: E402

from app_patch.service.app import create_app  # noqa: E402
from app_patch.service.auth import issue_token  # noqa: E402
from app_patch.service.settings import Settings  # noqa: E402
from app_patch.service.thumbnails import PIPELINE_VERSION  # noqa: E402

SECRET = "bench-secret-0123456789abcdef0123"
USER = "bench-user"


def photo(size: tuple[int, int], fmt: str, **params: object) -> bytes:
    """A photo-like picture (gradients, shapes, grain) encoded as ``fmt``."""
    w, h = size
    base = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize(size),
            Image.radial_gradient("L").resize(size),
            Image.effect_noise((max(1, w // 6), max(1, h // 6)), 60).resize(size, Image.BICUBIC),
        ),
    )
    draw = ImageDraw.Draw(base)
    for i in range(40):
        x, y = (i * 7919) % w, (i * 104729) % h
        r = 20 + (i * 37) % max(21, w // 8)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=((i * 53) % 256, (i * 97) % 256, 120))
    grain = Image.effect_noise(size, 12).convert("RGB")
    img = Image.blend(base, grain, 0.08)
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


CASES = [
    ("JPEG 4000x3000 (12 MP)", lambda: photo((4000, 3000), "JPEG", quality=90)),
    ("JPEG 1280x960", lambda: photo((1280, 960), "JPEG", quality=90)),
    ("PNG 1600x1200", lambda: photo((1600, 1200), "PNG")),
    ("WebP 1024x768", lambda: photo((1024, 768), "WEBP", quality=85)),
]


def run(url: str, reps: int, size: int) -> int:
    sync = MongoClient(url)
    db_name = f"bench_thumbs_{uuid.uuid4().hex[:8]}"
    db = sync[db_name]
    bucket = GridFSBucket(db)
    try:
        files = []
        for label, make in CASES:
            data = make()
            oid = bucket.upload_from_stream(label, data, metadata={"user_id": USER})
            db.file_uploads.insert_one(
                {
                    "file_id": str(oid),
                    "user_id": USER,
                    "original_name": label,
                    "mime_type": "image/*",
                }
            )
            files.append((label, str(oid), len(data)))
        settings = Settings(mongodb_url=url.rstrip("/") + "/" + db_name, jwt_secret=SECRET)
        headers = {"Authorization": f"Bearer {issue_token(USER, SECRET)}"}
        failures = []
        medians: dict[str, float] = {}
        print(f"thumbnail size {size}px, {reps} runs each, medians")
        print(
            f"{'image':26}{'bytes':>10}{'fresh ms':>10}{'cached ms':>11}{'304 ms':>9}{'ratio':>8}"
        )
        with TestClient(create_app(settings)) as client:
            client.get(f"/api/v1/chat/files/{files[-1][1]}/thumbnail", headers=headers)  # warm-up
            for label, fid, nbytes in files:
                url_ = f"/api/v1/chat/files/{fid}/thumbnail?size={size}"
                key = f"{fid}_{size}_v{PIPELINE_VERSION}"
                fresh, cached, revalidated = [], [], []
                for _ in range(reps):
                    for doc in db["thumbnails.files"].find({"filename": key}, {"_id": 1}):
                        db["thumbnails.chunks"].delete_many({"files_id": doc["_id"]})
                        db["thumbnails.files"].delete_one({"_id": doc["_id"]})
                    fresh.append(_time(client, url_, headers, 200))
                    cached.append(_time(client, url_, headers, 200))
                    etag = client.get(url_, headers=headers).headers["etag"]
                    revalidated.append(_time(client, url_, {**headers, "If-None-Match": etag}, 304))
                f, c, r = (statistics.median(x) * 1000 for x in (fresh, cached, revalidated))
                medians[label] = c
                print(f"{label:26}{nbytes:>10,}{f:>10.1f}{c:>11.1f}{r:>9.1f}{f / c:>7.1f}x")
                if c >= f:
                    failures.append(
                        f"{label}: cached ({c:.1f} ms) not faster than fresh ({f:.1f} ms)"
                    )
            failures += first_views(client, db, headers, CASES, reps, size, medians)
        print("RESULT:", "ok" if not failures else "FAILED: " + "; ".join(failures))
        record("thumbs_http", "thumbnail requests: cached, 304, first view",
               f"{len(failures)} miss(es)" + (f": {failures[0][:60]}" if failures else ""),
               "the fresh request; the cached one", "cached faster; first <= 2x cached",
               not failures)
        return 1 if failures else 0
    finally:
        sync.drop_database(db_name)
        sync.close()


def first_views(
    client: TestClient,
    db: Any,
    headers: dict,
    cases: list,
    reps: int,
    size: int,
    cached: dict[str, float],
) -> list[str]:
    """Upload each image, then view its thumbnail at once; returns the missed targets."""
    session_id = f"bench-session-{uuid.uuid4().hex[:8]}"
    db.chat_sessions.insert_one({"session_id": session_id, "user_id": USER, "chatflow_id": "b"})
    services = client.portal.call(client.app.state.chat_holder.get)
    print(f"\nfirst view of a freshly uploaded image, {size}px, {reps} runs each, medians")
    print(f"{'image':26}{'upload ms':>10}{'first ms':>10}{'cached ms':>11}{'ratio':>8}")
    missed = []
    for label, make in cases:
        data, uploads, firsts = make(), [], []
        for _ in range(reps):
            started = time.perf_counter()
            r = client.post(
                "/api/v1/chat/files",
                headers=headers,
                data={"session_id": session_id},
                files=[("files", (label, data, "application/octet-stream"))],
            )
            uploads.append(time.perf_counter() - started)
            if r.status_code != 201:
                raise SystemExit(f"upload of {label}: {r.status_code} {r.text}")
            fid = r.json()["uploads"][0]["file_id"]
            firsts.append(
                _time(client, f"/api/v1/chat/files/{fid}/thumbnail?size={size}", headers, 200)
            )
            client.portal.call(services.pregen.drain)  # the next upload starts from quiet
        u, f = (statistics.median(x) * 1000 for x in (uploads, firsts))
        ratio = f / cached[label]
        print(f"{label:26}{u:>10.1f}{f:>10.1f}{cached[label]:>11.1f}{ratio:>7.1f}x")
        if ratio > 2:
            missed.append(f"{label}: first view {ratio:.1f}x a cached view (target 2x)")
    return missed


def _time(client: TestClient, url: str, headers: dict, status: int) -> float:
    started = time.perf_counter()
    response = client.get(url, headers=headers)
    elapsed = time.perf_counter() - started
    if response.status_code != status:
        raise SystemExit(f"{url}: expected {status}, got {response.status_code}: {response.text}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="MongoDB/FerretDB server URL (default: a throwaway FerretDB)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--size", type=int, default=200, choices=(100, 200, 300))
    args = parser.parse_args()
    if args.url:
        return run(args.url, args.reps, args.size)
    from mongrate.testing.server import FerretDBServer

    with FerretDBServer() as server:
        return run(server.url, args.reps, args.size)


if __name__ == "__main__":
    sys.exit(main())
