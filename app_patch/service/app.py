"""A standalone app around the router, for the demo and the tests.

``uvicorn app_patch.service.app:app`` serves the API from ``MONGODB_URL``, ``MONGODB_DATABASE_NAME``
and ``JWT_ACCESS_SECRET`` (see :mod:`app_patch.service.settings`), plus ``GET /demo``: a small page
that shows a session's history with thumbnails, opens the full image on click and offers the
download. The page fetches everything with the bearer token (``<img>`` cannot send one) and
shows the bytes through ``blob:`` URLs.

The page signs in with a pasted token, or with ``POST /demo/login`` when both
``DEMO_MODE=1`` and ``DEMO_USER_ID`` are set. That login asks for no credentials: it gives
anyone who can reach the server a token for the demo user. The token is read-only
(``scope: read``; uploads and deletes answer 403) and lasts an hour. Demo mode is for a
local demonstration only and must never be enabled in production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from app_patch.service.auth import READ_SCOPE, issue_token
from app_patch.service.driver import AsyncDriver
from app_patch.service.router import build_router
from app_patch.service.settings import Settings

STATIC = Path(__file__).with_name("static")
DEMO_ASSETS = {"demo.js": "text/javascript", "demo.css": "text/css"}
DEMO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DEMO_TOKEN_TTL = 3600


def create_app(
    settings: Settings | None = None,
    *,
    client_kwargs: dict[str, Any] | None = None,
    driver: AsyncDriver | None = None,
) -> FastAPI:
    """The API router plus the demo page; ``settings`` None reads the environment at startup,
    ``driver`` None takes :data:`app_patch.service.driver.DRIVER`."""
    app = FastAPI(
        title="flowise-proxy image rendering",
        version="1.0",
        description="Chat history with attachments, file serving and thumbnails.",
    )
    router = build_router(settings, client_kwargs=client_kwargs, driver=driver)
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
        """A read-only token for the demo user and that user's sessions, most files first.

        Off unless DEMO_MODE and DEMO_USER_ID are both set: never in production.
        """
        svc = await holder.get()
        user_id = svc.settings.demo_user_id
        if not (svc.settings.demo_mode and user_id):
            raise HTTPException(
                404, "Demo login is off: set DEMO_MODE=1 and DEMO_USER_ID, or paste a token"
            )
        token = issue_token(
            user_id, svc.settings.jwt_secret, ttl_seconds=DEMO_TOKEN_TTL, scope=READ_SCOPE
        )
        return JSONResponse(
            {"token": token, "user_id": user_id, "sessions": await _demo_sessions(svc, user_id)}
        )

    return app


async def _demo_sessions(svc: Any, user_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The user's sessions with their file count, the richest first (two queries)."""
    counts = await svc.store.upload_counts(user_id)
    sessions = [
        {
            "session_id": str(s.get("session_id")),
            "topic": s.get("topic") or "",
            "files": counts.get(str(s.get("session_id")), 0),
        }
        for s in await svc.store.sessions_of(user_id)
    ]
    sessions.sort(key=lambda s: (-s["files"], s["session_id"]))
    return sessions[:limit]


app = create_app()
