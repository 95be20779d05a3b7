"""Concurrent deletes and downloads of the same files on FerretDB, whose SQLite backend
answers concurrent writes with "database is locked": every request answers 200 or 404 (201
for uploads), a delete removes row, link and file together or none of them, and the log
holds no traceback."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
from bson import ObjectId
from pymongo.errors import OperationFailure

from app_patch.service.auth import issue_token
from app_patch.service.storage import is_transient
from app_patch.testdata.seed import add_session
from mongrate.config import with_database
from tests.app.conftest import ALICE, SECRET, at
from tests.app.test_operator_tools import ROOT, clean_env, uvicorn

API = "/api/v1/chat"
PAIRS = 30


def _consistent(db: Any) -> list[str]:
    """What is out of step between rows, message links and GridFS files."""
    problems = []
    rows = {r["file_id"] for r in db.file_uploads.find({}, {"file_id": 1})}
    files = {str(d["_id"]) for d in db["fs.files"].find({}, {"_id": 1})}
    chunked = {str(c) for c in db["fs.chunks"].distinct("files_id")}
    linked = {f for m in db.chat_messages.find({}, {"file_ids": 1}) for f in m.get("file_ids") or []}
    for name, got in (("files", files), ("chunks", chunked), ("links", linked)):
        if got != rows:
            problems.append(f"rows {sorted(rows)} vs {name} {sorted(got)}")
    return problems


async def _scenario(base: str, session_id: str, message_id: str) -> dict[str, list[int]]:
    headers = {"Authorization": f"Bearer {issue_token(ALICE, SECRET)}"}
    limits = httpx.Limits(max_connections=64)
    statuses: dict[str, list[int]] = {"upload": [], "delete": [], "download": []}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as c:

        async def upload_then_delete(i: int) -> None:
            r = await c.post(
                f"{API}/files",
                data={"session_id": session_id, "message_id": message_id},
                files=[("files", (f"f{i}.bin", os.urandom(300_000), "application/octet-stream"))],
            )
            statuses["upload"].append(r.status_code)
            if r.status_code != 201:
                return
            file_id = r.json()["uploads"][0]["file_id"]
            # the same file deleted twice and read twice, all at once
            results = await asyncio.gather(
                c.delete(f"{API}/files/{file_id}"),
                c.get(f"{API}/files/{file_id}"),
                c.delete(f"{API}/files/{file_id}"),
                c.get(f"{API}/files/{file_id}", headers={"Range": "bytes=0-0"}),
            )
            for kind, res in zip(("delete", "download") * 2, results, strict=True):
                statuses[kind].append(res.status_code)

        await asyncio.gather(*(upload_then_delete(i) for i in range(PAIRS)))
    return statuses


def test_concurrent_uploads_deletes_and_downloads(mongo_server_url, mongo_client, tmp_path: Path):
    name = f"t_conc_{uuid.uuid4().hex[:12]}"
    db = mongo_client[name]
    session = add_session(db, user_id=ALICE, messages=[("user", "hello", at(0))])
    env = clean_env(MONGODB_URL=with_database(mongo_server_url, name), JWT_ACCESS_SECRET=SECRET,
                    FILE_UPLOAD_CONCURRENCY="8", FILE_UPLOADS_PER_USER="64")
    log = tmp_path / "server.log"
    try:
        with uvicorn("app_patch.service.app:app", ROOT, env, log) as base:
            statuses = asyncio.run(_scenario(base, session.session_id, session.message_ids[0]))
        text = log.read_text()
        assert statuses["upload"] == [201] * PAIRS, (statuses, text[-3000:])
        assert set(statuses["delete"]) <= {200, 404} and 200 in statuses["delete"], statuses
        assert set(statuses["download"]) <= {200, 206, 404}, statuses
        # each file deleted exactly once successfully or found already gone; never half
        assert statuses["delete"].count(200) >= PAIRS, statuses
        assert _consistent(db) == []
        assert db.file_uploads.count_documents({}) == 0
        msg = db.chat_messages.find_one({"_id": ObjectId(session.message_ids[0])})
        assert msg["file_ids"] == [] and msg["has_files"] is False
        assert "Traceback" not in text and "Exception in ASGI" not in text, text[-3000:]
    finally:
        mongo_client.drop_database(name)


def test_what_counts_as_transient():
    locked = OperationFailure("SQLITE_BUSY: database is locked", code=1)
    assert is_transient(locked)
    labelled = OperationFailure("write conflict", code=112)
    labelled._add_error_label("TransientTransactionError")
    assert is_transient(labelled)
    assert not is_transient(OperationFailure("unknown operator: $foo", code=2))
    assert not is_transient(ValueError("database is locked"))
