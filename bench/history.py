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


def build_session(db, n_messages: int, n_uploads: int, seed: int) -> str:
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
            "content": f"message {i} " + "x" * 80,
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
    db.chat_messages.insert_many(messages)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="MongoDB/FerretDB server URL (default: a throwaway FerretDB)")
    parser.add_argument(
        "--reps", type=int, default=7, help="timed runs of ours (reference: a third, at least 2)"
    )
    args = parser.parse_args()
    if args.url:
        return run(args.url, args.reps)
    from mongrate.testing.server import FerretDBServer

    with FerretDBServer() as server:
        return run(server.url, args.reps)


if __name__ == "__main__":
    sys.exit(main())
