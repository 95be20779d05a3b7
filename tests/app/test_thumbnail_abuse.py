"""The memory bar, measured on a real app process: one user queues 12 worst-case thumbnails
(small files that decode to 100-200 MB each), another asks for a small one meanwhile.

Before: the process reached 1.2 GB, stayed at about 970 MB, and the small thumbnail waited
33.8 s behind the queue (it was answered after the whole queue).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app_patch.testdata.hostile import memory_worst_cases
from tests.app.conftest import ALICE, BOB, SECRET, bearer, put_file, status_kb

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def _small_png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 30 + seed).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_twelve_queued_worst_cases_stay_under_300_mb_and_others_are_served(
    mongo_db, mongo_url, tmp_path
):
    queue = [
        put_file(mongo_db, data, user_id=ALICE, name=f"{name}-{i}.png")
        for i in range(4)
        for name, data in memory_worst_cases().items()
    ]
    warm, small = (put_file(mongo_db, _small_png(i), user_id=BOB) for i in range(2))
    port = _free_port()
    env = {
        **os.environ,
        "MONGODB_URL": mongo_url,
        "JWT_ACCESS_SECRET": SECRET,
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path / "app.log").open("wb")
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app_patch.service.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1/chat/files"
    try:
        deadline = time.monotonic() + 60
        while True:  # up, and Pillow warmed by one small thumbnail
            try:
                r = httpx.get(f"{base}/{warm}/thumbnail", headers=bearer(BOB), timeout=30)
                assert r.status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and app.poll() is None, "the app did not start"
                time.sleep(0.1)
        baseline = status_kb("VmRSS", app.pid) * 1024

        done: list[float] = []  # when each of alice's was answered
        statuses: list[int] = []

        def fetch(file_id: str) -> None:
            r = httpx.get(
                f"{base}/{file_id}/thumbnail?size=300", headers=bearer(ALICE), timeout=300
            )
            statuses.append(r.status_code)
            done.append(time.monotonic())

        threads = [threading.Thread(target=fetch, args=(f,)) for f in queue]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 300
        while not done and time.monotonic() < deadline:
            time.sleep(0.05)  # the queue is in: one of alice's is done, the rest wait
        started = time.monotonic()
        mine = httpx.get(f"{base}/{small}/thumbnail", headers=bearer(BOB), timeout=300)
        waited = time.monotonic() - started
        queue_done_then = len(done)
        for thread in threads:
            thread.join(600)
        queue_left = max(done) - started  # what bob would have waited behind the queue
        peak = status_kb("VmHWM", app.pid) * 1024
        time.sleep(1.0)
        after = status_kb("VmRSS", app.pid) * 1024
    finally:
        app.terminate()
        app.wait(15)
        log.close()
    print(
        f"baseline {baseline / MB:.0f} MB, peak {peak / MB:.0f} MB, after {after / MB:.0f} MB; "
        f"bob's small thumbnail in {waited:.2f} s with {12 - queue_done_then} of alice's 12 "
        f"still queued, which took {queue_left:.2f} s more"
    )
    assert mine.status_code == 200 and statuses == [200] * 12
    assert peak < 300 * MB
    assert after < baseline + 40 * MB  # memory given back after the peak
    # Not behind alice's queue: answered while most of it was still waiting, in a small part
    # of the time the rest of it took (both slow down alike on a busy machine). The speed
    # goal (under 2 s) is in bench/abuse.py.
    assert queue_done_then <= 6 and waited < queue_left / 3, (waited, queue_left)
