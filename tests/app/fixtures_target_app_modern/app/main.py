"""The sample service on the newest stack (the fast deploy tests overlay fixtures_target_app)."""

from app.api import chat
from fastapi import FastAPI

app = FastAPI(
    title="flowise-proxy",
    version="0.9.0",
)

app.include_router(chat.router, prefix="/api/v1/chat")


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}
