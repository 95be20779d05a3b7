"""The driver seam with both drivers on a real database: pymongo's async API and Motor.

The original service pins pymongo 4.6.1, whose async driver is Motor; this environment has a
newer pymongo, so both run here (``tests/app/test_deploy_pinned.py`` runs Motor on the pinned
stack itself).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pymongo.database import Database

from app_patch.service import driver
from app_patch.service.app import create_app
from app_patch.service.settings import Settings
from app_patch.tools.verify import run_checks
from tests.app.conftest import ALICE, SECRET
from tests.app.test_operator_tools import EXPECTED_CHECKS

DRIVERS = {"pymongo": driver.PymongoDriver, "motor": driver.MotorDriver}


@pytest.fixture(params=sorted(DRIVERS))
def seam(request: pytest.FixtureRequest) -> driver.AsyncDriver:
    return DRIVERS[request.param]()


def test_the_process_driver_follows_the_pymongo_version() -> None:
    import pymongo

    stable = pymongo.version_tuple[:2] >= driver.STABLE_ASYNC_PYMONGO
    assert driver.DRIVER.name == ("pymongo" if stable else "motor")


def test_gridfs_and_aggregate_behave_alike(
    seam: driver.AsyncDriver, mongo_url: str, mongo_db: Database
) -> None:
    data = bytes(range(256)) * 1200  # 300 KiB: two chunks of 255 KiB
    mongo_db.rows.insert_many([{"k": i % 3} for i in range(30)])

    async def scenario() -> dict[str, Any]:
        client = seam.connect(mongo_url, tz_aware=False)
        try:
            db = client[mongo_db.name]
            bucket = seam.bucket(db, bucket_name="things")
            oid = await bucket.upload_from_stream("a.bin", data, metadata={"m": 1})
            out = await bucket.open_download_stream(oid)
            head = await out.read(10)
            await out.seek(len(data) - 5)  # into the second chunk
            tail = await out.readchunk()
            await out.seek(100)
            middle = await out.read(20)
            await out.close()
            named = await bucket.open_download_stream_by_name("a.bin")
            whole = await named.read()
            facts = (named._id, named.length, named.chunk_size, named.metadata)
            await named.close()
            pipeline = [{"$group": {"_id": "$k", "n": {"$sum": 1}}}]
            groups = {row["_id"]: row["n"] async for row in await seam.aggregate(db.rows, pipeline)}
            await bucket.delete(oid)
            return {"head": head, "tail": tail, "middle": middle, "whole": whole,
                    "facts": facts, "groups": groups, "oid": oid}
        finally:
            await seam.close(client)

    got = asyncio.run(scenario())
    assert got["head"] == data[:10] and got["tail"] == data[-5:]
    assert got["middle"] == data[100:120] and got["whole"] == data
    assert got["facts"] == (got["oid"], len(data), 255 * 1024, {"m": 1})
    assert got["groups"] == {0: 10, 1: 10, 2: 10}
    assert mongo_db["things.files"].count_documents({}) == 0


def test_the_app_passes_verify_on_either_driver(
    seam: driver.AsyncDriver, mongo_url: str, mongo_db: Database
) -> None:
    mongo_db.chat_sessions.insert_one({"session_id": "s-drv", "user_id": ALICE, "topic": "t"})
    app = create_app(Settings(mongodb_url=mongo_url, jwt_secret=SECRET), driver=seam)
    from app_patch.service.auth import issue_token

    with TestClient(app) as client:
        results = run_checks(client, issue_token(ALICE, SECRET), session_id="s-drv", echo=None)
        assert app.state.chat_holder._services.store.driver is seam
    assert {r.name: r.ok for r in results} == {n: True for n in [*EXPECTED_CHECKS, "cleanup"]}
    assert mongo_db.fs.files.count_documents({}) == 0  # cleanup deleted through the seam


def test_the_transparency_test_matches_pillows_own() -> None:
    from PIL import Image

    from app_patch.service.compat import _transparency_spelled_out, has_transparency_data

    rgba_palette = Image.new("P", (4, 4))
    rgba_palette.putpalette([0, 0, 0, 0, 255, 255, 255, 255], rawmode="RGBA")
    keyed = Image.new("L", (4, 4))
    keyed.info["transparency"] = 0
    images = [Image.new(m, (4, 4)) for m in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK")]
    images += [rgba_palette, keyed]
    got = [(has_transparency_data(im), _transparency_spelled_out(im)) for im in images]
    assert got == [(im.has_transparency_data,) * 2 for im in images]
    assert [t for t, _ in got] == [False, False, True, False, True, False, True, False, True, True]
