"""The service's routes before the image-rendering change (the history had no uploads)."""

from fastapi import APIRouter

router = APIRouter()


@router.get("/sessions/{session_id}/history")
async def old_history(session_id: str) -> dict:
    return {"session_id": session_id, "history": [], "legacy": True}
