"""Each app owns its decode pool: two apps in one process keep their own limits."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from app_patch.service import thumbnails
from app_patch.service.app import create_app
from app_patch.service.settings import Settings
from app_patch.testdata.samples import sample_variant
from tests.app.conftest import ALICE, SECRET, bearer, put_file

PHOTO = sample_variant("jpeg", 2).data  # 640x400: the small lane


def test_two_apps_in_one_process_keep_their_own_decode_limits(mongo_db, mongo_url, monkeypatch):
    """One worker for the first app, three for the second (started after it): the first
    still decodes one image at a time, and the second three at once."""
    one = create_app(Settings(mongodb_url=mongo_url, jwt_secret=SECRET, thumbnail_concurrency=1))
    three = create_app(
        Settings(mongodb_url=mongo_url, jwt_secret=SECRET, thumbnail_concurrency=3)
    )
    fids = [put_file(mongo_db, PHOTO, name=f"{i}.jpg") for i in range(6)]
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    all_three = threading.Barrier(3)
    real = thumbnails.make_thumbnail

    def counted(data, size, **kw):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            waiting_for_three = state["phase"] == "three"
        try:
            if waiting_for_three:  # all three at once, or the test fails at the timeout
                all_three.wait(60)
            else:  # long enough for a second decode to start, were it allowed
                time.sleep(0.4)
            return real(data, size, **kw)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(thumbnails, "make_thumbnail", counted)

    async def thumbs(app, files):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            replies = await asyncio.gather(
                *(c.get(f"/api/v1/chat/files/{f}/thumbnail", headers=bearer(ALICE)) for f in files)
            )
        return [r.status_code for r in replies]

    async def main():
        try:
            await one.state.chat_holder.get()
            await three.state.chat_holder.get()  # its settings must not reach the first app
            state["phase"] = "one"
            first = await thumbs(one, fids[:3])
            most_in_one, state["most"] = state["most"], 0
            state["phase"] = "three"
            second = await thumbs(three, fids[3:])
            return first, most_in_one, second, state["most"]
        finally:
            await one.state.chat_holder.aclose()
            await three.state.chat_holder.aclose()

    first, most_in_one, second, most_in_three = asyncio.run(main())
    assert first == second == [200, 200, 200]
    assert most_in_one == 1
    assert most_in_three == 3
