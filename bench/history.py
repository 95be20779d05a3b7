"""History endpoint: fixed round trips against the per-message-query reference, same run.

Builds one session of 2,000 messages carrying 500 uploads (post-migration shape, with the
index revision's indexes), then times, through the same HTTP app and the same pymongo
``AsyncMongoClient``:

- ``ours``: ``GET /api/v1/chat/sessions/{id}/history?limit=2000`` (app_patch.service.history: one
  query for ownership, one for the messages, one ``$in`` for every upload);
- ``reference``: the original service's loop, one ``file_uploads`` query per message that
  has files, exposed on the same app at ``/bench/reference/{id}`` with the same output.

Round trips are counted with a pymongo ``CommandListener`` on the app's client, for the big
session and for a 20-message one: ours must stay the same, the reference grows per message.
Both answers must be identical. Target: ours >= 10x faster. Exits 1 if a target fails.

Run: .venv/bin/python bench/history.py [--url mongodb://...] [--reps N]
(without --url a throwaway FerretDB is started, as the tests do)

``--concurrent``: the streamed whole-session history under load. One session of 50,000
messages (about 15 MB of JSON); the service runs in its own uvicorn process; 4 clients read
the whole history at once (no ``limit``, as the original frontend asks) while a fifth asks a
route that touches no database every 20 ms. Targets: the server's RSS grows < 100 MB over
its idle size, and the no-database request answers in < 100 ms throughout (worst case).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
import uuid
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Starlette nags about its httpx-based TestClient; nothing to act on in a benchmark.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from bson import ObjectId  # noqa: E402
from fastapi import HTTPException  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from pymongo import MongoClient, monitoring  # noqa: E402
from results import record  # noqa: E402

from app_patch.service.app import create_app  # noqa: E402
from app_patch.service.auth import issue_token  # noqa: E402
from app_patch.service.history import upload_from_row  # noqa: E402
from app_patch.service.settings import Settings  # noqa: E402

TARGET = 10.0
SECRET = "bench-secret-0123456789abcdef0123"
USER = "bench-user"
MIMES = ["image/jpeg", "image/png", "application/pdf", "image/webp", "text/plain"]


class Counter(monitoring.CommandListener):
    """Counts the data commands the app sends (each is a round trip)."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in {"find", "getMore", "aggregate", "count"}:
            self.commands.append(f"{event.command_name} {event.command.get(event.command_name)}")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def build_session(db, n_messages: int, n_uploads: int, seed: int, content_chars: int = 80) -> str:
    """One post-migration session; uploads spread over the user messages (some carry two)."""
    import random

    rng = random.Random(seed)
    session_id = str(uuid.uuid4())
    start = dt.datetime(2025, 6, 2, 9, 0, 0)
    db.chat_sessions.insert_one(
        {
            "session_id": session_id,
            "user_id": USER,
            "chatflow_id": "f",
            "topic": "bench",
            "is_active": True,
            "created_at": start,
        }
    )
    messages = [
        {
            "_id": ObjectId(),
            "chatflow_id": "f",
            "session_id": session_id,
            "user_id": USER,
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"message {i} " + "x" * content_chars,
            "file_ids": [],
            "has_files": False,
            "created_at": start + dt.timedelta(seconds=7 * i),
        }
        for i in range(n_messages)
    ]
    user_msgs = [m for m in messages if m["role"] == "user"]
    carriers = rng.sample(user_msgs, k=min(len(user_msgs), int(n_uploads * 0.8)))
    rows = []
    for j in range(n_uploads):
        msg = carriers[j % len(carriers)]
        fid = str(ObjectId())
        mime = MIMES[j % len(MIMES)]
        msg["file_ids"].append(fid)
        msg["has_files"] = True
        rows.append(
            {
                "file_id": fid,
                "original_name": f"file {j}.bin",
                "mime_type": mime,
                "message_id": str(msg["_id"]),
                "session_id": session_id,
                "user_id": USER,
                "chatflow_id": "f",
                "file_size": 1000 + j,
                "upload_type": "file",
                "file_hash": None,
                "processed": True,
                "processing_error": None,
                "uploaded_at": msg["created_at"] + dt.timedelta(seconds=1),
                "processed_at": None,
                "metadata": None,
                "is_image": mime.startswith("image/"),
                "file_missing": False,
            }
        )
    for at in range(0, len(messages), 5000):  # FerretDB: bounded batches
        db.chat_messages.insert_many(messages[at : at + 5000])
    if rows:
        db.file_uploads.insert_many(rows)
    return session_id


def create_indexes(db) -> None:
    """The index revision's indexes (notes/SCHEMA.md), so both sides get the same help."""
    db.chat_messages.create_index([("session_id", 1), ("created_at", 1)], name="session_created")
    db.file_uploads.create_index([("file_id", 1)], name="file_id_unique", unique=True)
    db.file_uploads.create_index([("message_id", 1), ("user_id", 1)], name="message_user")


def add_reference_route(app, holder) -> None:
    """The pre-change service's history loop: one uploads query per message with files."""

    @app.get("/bench/reference/{session_id}")
    async def reference(session_id: str) -> JSONResponse:
        store = (await holder.get()).store
        if await store.sessions.find_one({"session_id": session_id, "user_id": USER}) is None:
            raise HTTPException(404)
        msgs = (
            await store.messages.find({"session_id": session_id})
            .sort([("created_at", 1), ("_id", 1)])
            .to_list(None)
        )
        history = []
        for m in msgs:
            uploads = []
            if m.get("has_files") and m.get("file_ids"):
                rows = await store.uploads.find(
                    {"file_id": {"$in": m["file_ids"]}, "user_id": USER}
                ).to_list(None)
                by_id = {r["file_id"]: r for r in rows}
                uploads = [upload_from_row(by_id[f]) for f in m["file_ids"] if f in by_id]
            history.append(
                {
                    "id": str(m["_id"]),
                    "session_id": session_id,
                    "role": m["role"],
                    "content": m["content"],
                    "created_at": m["created_at"].isoformat(),
                    "file_ids": m["file_ids"],
                    "has_files": m["has_files"],
                    "uploads": uploads,
                }
            )
        return JSONResponse({"history": history, "count": len(history)})


def timed(client: TestClient, url: str, headers: dict, reps: int) -> tuple[float, dict]:
    samples, body = [], None
    for _ in range(reps):
        started = time.perf_counter()
        r = client.get(url, headers=headers)
        samples.append(time.perf_counter() - started)
        r.raise_for_status()
        body = r.json()
    return statistics.median(samples), body


def run(url: str, reps: int) -> int:
    sync = MongoClient(url)
    db_name = f"bench_history_{uuid.uuid4().hex[:8]}"
    db = sync[db_name]
    try:
        t = time.perf_counter()
        create_indexes(db)
        big = build_session(db, 2000, 500, seed=1)
        small = build_session(db, 20, 5, seed=2)
        print(
            f"data: 2,000 messages / 500 uploads (+ a 20/5 session) in {time.perf_counter() - t:.1f} s"
        )
        counter = Counter()
        settings = Settings(
            mongodb_url=url.rstrip("/") + "/" + db_name,
            jwt_secret=SECRET,
            history_max_limit=2000,
        )
        app = create_app(settings, client_kwargs={"event_listeners": [counter]})
        add_reference_route(app, app.state.chat_holder)
        return _measure(app, counter, big, small, reps)
    finally:
        sync.drop_database(db_name)
        sync.close()


def _measure(app, counter: Counter, big: str, small: str, reps: int) -> int:
    headers = {"Authorization": f"Bearer {issue_token(USER, SECRET)}"}
    ours_url = "/api/v1/chat/sessions/{}/history?limit=2000"
    with TestClient(app) as client:
        client.get(ours_url.format(small), headers=headers)  # warm connections and caches
        client.get(f"/bench/reference/{small}", headers=headers)
        trips = {}
        for name, sid in (("small", small), ("big", big)):
            for side, url in (
                ("ours", ours_url.format(sid)),
                ("reference", f"/bench/reference/{sid}"),
            ):
                counter.commands.clear()
                client.get(url, headers=headers).raise_for_status()
                trips[(side, name)] = len(counter.commands)
        ours_s, ours_body = timed(client, ours_url.format(big), headers, reps)
        ref_s, ref_body = timed(client, f"/bench/reference/{big}", headers, max(2, reps // 3))
        page_s, _ = timed(client, f"/api/v1/chat/sessions/{big}/history?limit=100", headers, reps)

    same = [
        {k: m[k] for k in ("id", "role", "content", "file_ids", "has_files", "uploads")}
        for m in ours_body["history"]
    ] == [
        {k: m[k] for k in ("id", "role", "content", "file_ids", "has_files", "uploads")}
        for m in ref_body["history"]
    ]
    uploads = sum(len(m["uploads"]) for m in ours_body["history"])
    ratio = ref_s / ours_s
    print(f"{'':28}{'small (20 msgs)':>18}{'big (2,000 msgs)':>18}")
    for side in ("ours", "reference"):
        print(f"{side + ' round trips':28}{trips[(side, 'small')]:>18}{trips[(side, 'big')]:>18}")
    print(f"ours: {ours_body['count']} messages, {uploads} uploads in one response")
    print(f"ours      median {ours_s * 1000:8.1f} ms  (limit=2000, {reps} runs)")
    print(f"reference median {ref_s * 1000:8.1f} ms  (per-message queries)")
    print(f"ours, one page of 100: {page_s * 1000:.1f} ms")
    print(f"ratio reference/ours: {ratio:.1f}x (target >= {TARGET:.0f}x)")
    failures = []
    if trips[("ours", "small")] != trips[("ours", "big")]:
        failures.append("round trips grow with the session")
    if not same:
        failures.append("ours and the reference disagree")
    if uploads != 500:
        failures.append(f"expected 500 uploads, got {uploads}")
    if ratio < TARGET:
        failures.append(f"ratio {ratio:.1f}x below {TARGET:.0f}x")
    print("RESULT:", "ok" if not failures else "FAILED: " + "; ".join(failures))
    record("history", "history of 2,000 messages, 500 uploads",
           f"{ratio:.1f}x faster, {trips[('ours', 'big')]} round trips",
           f"per-message queries {ref_s * 1000:.0f} ms", f">= {TARGET:.0f}x, constant trips",
           not failures)
    return 1 if failures else 0


CONCURRENT_MESSAGES = 50_000
CONCURRENT_CLIENTS = 4
RSS_TARGET_MB = 100
LATENCY_TARGET_MS = 100


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_concurrent(url: str, n_messages: int = CONCURRENT_MESSAGES) -> int:
    """The --concurrent mode (see the module docstring)."""
    import asyncio
    import os
    import socket
    import subprocess

    import httpx

    sync = MongoClient(url)
    db_name = f"bench_stream_{uuid.uuid4().hex[:8]}"
    db = sync[db_name]
    proc = None
    try:
        t = time.perf_counter()
        big = build_session(db, n_messages, n_messages // 25, seed=3, content_chars=200)
        create_indexes(db)  # after the data: FerretDB inserts faster without them
        print(f"data: {n_messages:,} messages in {time.perf_counter() - t:.1f} s")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "MONGODB_URL": url.rstrip("/") + "/" + db_name,
               "JWT_ACCESS_SECRET": SECRET, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app_patch.service.app:app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"], env=env,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                if httpx.get(f"{base}/demo/static/demo.css", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {issue_token(USER, SECRET, ttl_seconds=3600)}"}
        history_url = f"{base}/api/v1/chat/sessions/{big}/history"
        warm = httpx.get(history_url, headers=headers, timeout=300)  # warm the client, caches
        warm.raise_for_status()
        body_mb = len(warm.content) / 2**20
        count = warm.json()["count"]
        del warm
        time.sleep(1.0)
        idle_kb = _rss_kb(proc.pid)
        with httpx.Client(timeout=60) as http:  # the same request with nothing else running
            idle_ms = []
            for _ in range(50):
                started = time.perf_counter()
                http.get(f"{base}/demo/static/demo.css").raise_for_status()
                idle_ms.append((time.perf_counter() - started) * 1000)
                time.sleep(0.02)
        result = asyncio.run(_concurrent_load(base, history_url, headers, proc.pid))
        peak_kb, latencies, sizes, elapsed = result
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        sync.drop_database(db_name)
        sync.close()
    growth_mb = (peak_kb - idle_kb) / 1024
    worst_ms = max(latencies) * 1000
    print(f"history: {count:,} messages, {body_mb:.1f} MB of JSON per response")
    print(f"{CONCURRENT_CLIENTS} concurrent whole histories in {elapsed:.1f} s, "
          f"bytes each: {sorted(set(sizes))}")
    print(f"server RSS: idle {idle_kb / 1024:.0f} MB, peak {peak_kb / 1024:.0f} MB, "
          f"growth {growth_mb:.0f} MB (target < {RSS_TARGET_MB} MB)")
    print(f"no-database request meanwhile: {len(latencies)} answers, median "
          f"{statistics.median(latencies) * 1000:.1f} ms, worst {worst_ms:.1f} ms "
          f"(target < {LATENCY_TARGET_MS} ms); idle: median {statistics.median(idle_ms):.1f} "
          f"ms, worst {max(idle_ms):.1f} ms")
    ranked = sorted(range(len(latencies)), key=lambda i: -latencies[i])[:5]
    print(f"  p99 {statistics.quantiles(latencies, n=100)[98] * 1000:.1f} ms; "
          f"{sum(x * 1000 >= LATENCY_TARGET_MS for x in latencies)} answers over target; "
          "worst five (ms @ % of the run): " + ", ".join(
              f"{latencies[i] * 1000:.0f} @ {100 * i / len(latencies):.0f}%" for i in ranked))
    failures = []
    if len(set(sizes)) != 1:
        failures.append("the concurrent bodies differ")
    if growth_mb >= RSS_TARGET_MB:
        failures.append(f"RSS grew {growth_mb:.0f} MB")
    if worst_ms >= LATENCY_TARGET_MS:
        failures.append(f"a no-database request took {worst_ms:.0f} ms")
    print("RESULT:", "ok" if not failures else "FAILED: " + "; ".join(failures))
    return 1 if failures else 0


async def _concurrent_load(base: str, history_url: str, headers: dict, pid: int):
    import asyncio

    import httpx

    done = asyncio.Event()
    peak = 0
    latencies: list[float] = []

    async def sample_rss() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_kb(pid))
            await asyncio.sleep(0.01)

    async def ping(client: httpx.AsyncClient) -> None:
        # In its own process: the readers' work in this one must not delay the clock.
        import multiprocessing

        stop = multiprocessing.Event()
        parent, child = multiprocessing.Pipe()
        proc = multiprocessing.Process(target=_ping_process, args=(base, stop, child))
        proc.start()
        await done.wait()
        stop.set()
        latencies.extend(await asyncio.to_thread(parent.recv))
        proc.join(10)

    async def read_all(client: httpx.AsyncClient) -> int:
        size = 0
        async with client.stream("GET", history_url, headers=headers) as r:
            r.raise_for_status()
            async for chunk in r.aiter_raw():
                size += len(chunk)
        return size

    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        pinger = asyncio.create_task(ping(client))
        sampler = asyncio.create_task(sample_rss())
        started = time.perf_counter()
        sizes = await asyncio.gather(*(read_all(client) for _ in range(CONCURRENT_CLIENTS)))
        elapsed = time.perf_counter() - started
        done.set()
        await asyncio.gather(pinger, sampler)
    return peak, latencies, list(sizes), elapsed


def _ping_process(base: str, stop, conn) -> None:
    """Ask a route that touches no database every 20 ms until ``stop``; send the times."""
    import httpx

    times = []
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get(f"{base}/demo/static/demo.css").raise_for_status()
            times.append(time.perf_counter() - started)
            time.sleep(0.02)
    conn.send(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--concurrent", action="store_true",
        help="4 concurrent 50,000-message histories: RSS and event-loop latency targets",
    )
    parser.add_argument("--url", help="MongoDB/FerretDB server URL (default: a throwaway FerretDB)")
    parser.add_argument(
        "--reps", type=int, default=7, help="timed runs of ours (reference: a third, at least 2)"
    )
    parser.add_argument(
        "--messages", type=int, default=CONCURRENT_MESSAGES,
        help="session size for --concurrent (default %(default)s)",
    )
    args = parser.parse_args()
    if args.concurrent:
        def mode(url: str) -> int:
            return run_concurrent(url, args.messages)
    else:
        def mode(url: str) -> int:
            return run(url, args.reps)
    if args.url:
        return mode(args.url)
    from mongrate.testing.server import FerretDBServer

    with FerretDBServer() as server:
        return mode(server.url)


if __name__ == "__main__":
    sys.exit(main())
