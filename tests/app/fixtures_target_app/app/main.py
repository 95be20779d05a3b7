"""A stand-in for the flowise-proxy service's main module, on its pinned stack.

It does what the original's ``app/main.py`` does that a deploy can break: a lifespan that
connects Motor, CORS middleware whose options it reads back through
``app.user_middleware[-1].options`` (Starlette 0.27; newer Starlette has no ``options``), and
an older history route on the path the image-rendering router takes over.
"""

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import chat
from app.config import settings
from app.database import close, connect, database

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app_instance: FastAPI):  # noqa: ANN201
    await connect()
    try:
        yield
    finally:
        await close()


app = FastAPI(
    title="flowise-proxy",
    version="0.9.0",
    lifespan=lifespan,
)

app.add_middleware(
    CORSMiddleware,
    allow_origins=settings.CORS_ALLOW_ORIGINS,
    allow_credentials=True,
    allow_methods=["*"],
    allow_headers=["*"],
)
logger.info("CORS origins: %s", app.user_middleware[-1].options["allow_origins"])

app.include_router(chat.router, prefix="/api/v1/chat")


@app.get("/health")
async def health() -> dict:
    await database().command("ping")
    return {"status": "ok"}
