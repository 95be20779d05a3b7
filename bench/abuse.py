"""Another user's small request while one user abuses the service (the speed goals that
tests/app/test_upload_fairness.py and test_thumbnail_abuse.py check only relatively).

- ``upload``: bob's 1 KB upload while two of alice's JSON bodies trickle in a byte every
  0.5 s. Before the fix they held both upload slots and bob had no answer for 30 s.
  Target: under 2 s.
- ``thumbnail``: bob's small thumbnail while alice has 12 worst-case thumbnails queued
  (small files that decode to 100-200 MB each). Before: 33.8 s, behind the whole queue.
  Target: under 2 s.

Each is measured once with nothing else running and once under the abuse, in the same run.

Run: .venv/bin/python bench/abuse.py [--url mongodb://...]
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from PIL import Image  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from results import record  # noqa: E402

from app_patch.service.app import create_app  # noqa: E402
from app_patch.service.settings import Settings  # noqa: E402
from app_patch.testdata.hostile import memory_worst_cases  # noqa: E402
from app_patch.testdata.seed import add_session  # noqa: E402
from tests.app.conftest import ALICE, BOB, SECRET, at, bearer, live_server, put_file  # noqa: E402
from tests.app.test_upload_fairness import _flowise_body, _upload, slow_bodies  # noqa: E402

TARGET = 2.0  # seconds, for bob's request under abuse


def _small_png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 30 + seed).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def upload(url: str, db) -> tuple[float, float]:
    """Bob's 1 KB upload alone, and with two of alice's slow bodies open (seconds)."""
    sessions = {
        user: add_session(db, user_id=user, messages=[("user", "hi", at(0))]).session_id
        for user in (ALICE, BOB)
    }
    settings = Settings(mongodb_url=url, jwt_secret=SECRET, upload_concurrency=2)
    with live_server(create_app(settings)) as base:
        alone = min(_upload(base, BOB, sessions[BOB])[1] for _ in range(3))
        with slow_bodies(base, ALICE, 2, _flowise_body(sessions[ALICE]), every=0.5) as slow:
            while min(s.sent for s in slow) < 2:
                time.sleep(0.05)
            status, abused = _upload(base, BOB, sessions[BOB])
    assert status == 201, status
    return alone, abused


def thumbnail(url: str, db) -> tuple[float, float]:
    """Bob's small fresh thumbnail alone, and behind alice's queue of 12 worst cases."""
    queue = [
        put_file(db, data, user_id=ALICE, name=f"{name}-{i}.png")
        for i in range(4)
        for name, data in memory_worst_cases().items()
    ]
    smalls = [put_file(db, _small_png(i), user_id=BOB) for i in range(3)]
    settings = Settings(mongodb_url=url, jwt_secret=SECRET)
    import httpx

    with live_server(create_app(settings)) as base:
        files = f"{base}/api/v1/chat/files"

        def get(file_id: str, user: str, size: int = 200) -> float:
            started = time.monotonic()
            r = httpx.get(f"{files}/{file_id}/thumbnail?size={size}", headers=bearer(user),
                          timeout=300)  # fmt: skip
            assert r.status_code == 200, r.status_code
            return time.monotonic() - started

        get(smalls[0], BOB)  # warm up
        alone = get(smalls[1], BOB)
        done: list[float] = []
        threads = [
            threading.Thread(target=lambda f=f: done.append(get(f, ALICE, 300))) for f in queue
        ]
        for thread in threads:
            thread.start()
        while not done:
            time.sleep(0.05)
        abused = get(smalls[2], BOB)
        for thread in threads:
            thread.join(600)
    return alone, abused


def run(url: str) -> int:
    name = f"bench_abuse_{uuid.uuid4().hex[:8]}"
    client = MongoClient(url)
    failed = False
    try:
        for what, fn, before in (
            ("upload", upload, "no answer for 30 s"),
            ("thumbnail", thumbnail, "33.8 s, behind the queue"),
        ):
            db_name = f"{name}_{what}"
            try:
                alone, abused = fn(f"{url.rstrip('/')}/{db_name}", client[db_name])
            finally:
                client.drop_database(db_name)
            print(f"{what}: bob alone {alone:.2f} s, under abuse {abused:.2f} s")
            ok = abused < TARGET
            failed |= not ok
            record("abuse", f"bob's small {what} under another user's abuse",
                   f"{abused:.2f} s (alone {alone:.2f} s)", f"before: {before}",
                   f"under {TARGET:.0f} s", ok)  # fmt: skip
    finally:
        client.close()
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="MongoDB/FerretDB server URL (default: a throwaway FerretDB)")
    args = parser.parse_args()
    if args.url:
        return run(args.url)
    from mongrate.testing.server import FerretDBServer

    with FerretDBServer() as server:
        return run(server.url)


if __name__ == "__main__":
    sys.exit(main())
