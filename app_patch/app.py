"""A standalone app around the router, for the demo and the tests.

``uvicorn app_patch.app:app`` serves the API from ``MONGODB_URL``, ``MONGODB_DATABASE_NAME``
and ``JWT_ACCESS_SECRET`` (see :mod:`app_patch.settings`), plus ``GET /demo``: a small page
that logs in with a demo token (``POST /demo/login``, only when ``DEMO_USER_ID`` is set),
shows a session's history with thumbnails, opens the full image on click and offers the
download. The page fetches everything with the bearer token (``<img>`` cannot send one) and
shows the bytes through ``blob:`` URLs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from app_patch.auth import issue_token
from app_patch.router import build_router
from app_patch.settings import Settings

STATIC = Path(__file__).with_name("static")
DEMO_ASSETS = {"demo.js": "text/javascript", "demo.css": "text/css"}
DEMO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DEMO_TOKEN_TTL = 3600


def create_app(
    settings: Settings | None = None, *, client_kwargs: dict[str, Any] | None = None
) -> FastAPI:
    """The API router plus the demo page; ``settings`` None reads the environment at startup."""
    app = FastAPI(
        title="flowise-proxy image rendering",
        version="1.0",
        description="Chat history with attachments, file serving and thumbnails.",
    )
    router = build_router(settings, client_kwargs=client_kwargs)
    app.include_router(router)
    holder = router.holder  # type: ignore[attr-defined]
    app.state.chat_holder = holder  # the app's database client, for tools built on the app

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/demo")

    @app.get("/demo", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(
            STATIC / "demo.html",
            media_type="text/html",
            headers={"Content-Security-Policy": DEMO_CSP, "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/demo/static/{name}", include_in_schema=False)
    async def demo_asset(name: str) -> FileResponse:
        if name not in DEMO_ASSETS:
            raise HTTPException(404, "Not found")
        return FileResponse(
            STATIC / name,
            media_type=DEMO_ASSETS[name],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )

    @app.post("/demo/login", include_in_schema=False)
    async def demo_login() -> JSONResponse:
        """A token for the configured demo user and that user's sessions, most files first."""
        svc = await holder.get()
        user_id = svc.settings.demo_user_id
        if not user_id:
            raise HTTPException(404, "Demo login is off: set DEMO_USER_ID, or paste a token")
        token = issue_token(user_id, svc.settings.jwt_secret, ttl_seconds=DEMO_TOKEN_TTL)
        return JSONResponse(
            {"token": token, "user_id": user_id, "sessions": await _demo_sessions(svc, user_id)}
        )

    return app


async def _demo_sessions(svc: Any, user_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The user's sessions with their file count, the richest first (two queries)."""
    store = svc.store
    counts: dict[str, int] = {}
    pipeline = [
        {"$match": {"user_id": user_id}},
        {"$group": {"_id": "$session_id", "n": {"$sum": 1}}},
    ]
    async for row in await store.uploads.aggregate(pipeline):
        counts[str(row["_id"])] = int(row["n"])
    cursor = store.sessions.find({"user_id": user_id}, {"session_id": 1, "topic": 1})
    sessions = [
        {
            "session_id": str(s.get("session_id")),
            "topic": s.get("topic") or "",
            "files": counts.get(str(s.get("session_id")), 0),
        }
        for s in await cursor.to_list(None)
    ]
    sessions.sort(key=lambda s: (-s["files"], s["session_id"]))
    return sessions[:limit]


app = create_app()
