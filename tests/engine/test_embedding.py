"""README "Embedding": the FastAPI lifespan that runs ``upgrade head`` under the lock, run as
written (the code block is taken from the README) through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from mongrate.progress import Reporter
from mongrate.runtime.lock import Leases, Lock

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_app(project, monkeypatch, lock_timeout: float) -> dict:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Embedding"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.setenv("MONGRATE_CONFIG", str(project.ini))
    namespace: dict = {"__name__": "readme_embedding"}
    exec(compile(code, "README.md", "exec"), namespace)
    namespace["LOCK_TIMEOUT"] = lock_timeout  # the README waits 10 s; the test need not
    return namespace


async def start_and_ask(app) -> dict:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.get("/health")
            response.raise_for_status()
            return response.json()


def test_the_app_upgrades_its_database_when_it_starts(project, mongo_db, monkeypatch):
    mongo_db.items.insert_many([{"n": i} for i in range(5)])
    project.add("aaaa1111", None, body_up='op.update_many("items", {}, {"$set": {"v": 1}})')
    project.add("bbbb2222", "aaaa1111", body_up='op.create_index("items", [("v", 1)], name="by_v")')
    ns = readme_app(project, monkeypatch, lock_timeout=5)
    assert asyncio.run(start_and_ask(ns["app"])) == {"migrations": "at bbbb2222"}
    assert mongo_db.mongrate_version.distinct("_id") == ["bbbb2222"]
    assert mongo_db.items.count_documents({"v": 1}) == 5
    # a second start (another replica, later): nothing to do, same answer
    assert asyncio.run(start_and_ask(ns["app"])) == {"migrations": "at bbbb2222"}


def test_the_app_skips_the_upgrade_while_another_replica_holds_the_lock(project, mongo_db,
                                                                         monkeypatch):
    project.add("aaaa1111", None, body_up='op.create_index("items", [("v", 1)], name="by_v")')
    ns = readme_app(project, monkeypatch, lock_timeout=0.3)
    leases = Leases(mongo_db, "mongrate_lock")
    with Lock(leases, lease=30, timeout=1, command="replica 2", reporter=Reporter(quiet=True)):
        assert asyncio.run(start_and_ask(ns["app"])) == {"migrations": "skipped"}
    assert mongo_db.mongrate_version.count_documents({}) == 0  # the holder's job, not ours
