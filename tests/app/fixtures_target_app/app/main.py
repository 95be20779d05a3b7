"""A small stand-in for the flowise-proxy service's main module (deploy tests patch a copy)."""

from fastapi import FastAPI

from app.api import chat

app = FastAPI(
    title="flowise-proxy",
    version="0.9.0",
)

app.include_router(chat.router, prefix="/api/v1/chat")


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}
