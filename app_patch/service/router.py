"""The FastAPI routes of the image-rendering change (prefix ``/api/v1/chat``), kept thin.

An existing service adds them with one line::

    from app_patch.service.router import router
    app.include_router(router)

Settings come from the environment (:class:`app_patch.service.settings.Settings`) when the router is
first used; :func:`build_router` takes explicit settings instead. The router's lifespan
(merged into the including app's) owns one pymongo ``AsyncMongoClient`` per app.
"""

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from pymongo import AsyncMongoClient

from app_patch.service import pregen, thumbnails
from app_patch.service.auth import AuthError, Principal, principal_from_token
from app_patch.service.fairness import FairBudget
from app_patch.service.files import ThumbnailService, file_response
from app_patch.service.history import (
    API_PREFIX,
    BadCursor,
    SessionNotFound,
    file_urls,
    load_history,
)
from app_patch.service.pregen import Pregenerator
from app_patch.service.settings import Settings
from app_patch.service.storage import ChatStore, normal_id
from app_patch.service.uploads import parse_request, receive_request, store_upload
from app_patch.sniff import is_image_mime

ThumbSize = IntEnum("ThumbSize", {f"px{s}": s for s in thumbnails.THUMB_SIZES})
DEFAULT_THUMB = ThumbSize(200)


@dataclass
class Services:
    """What the routes need, created once per app (and per event loop)."""

    settings: Settings
    client: AsyncMongoClient
    store: ChatStore
    thumbs: ThumbnailService
    loop: asyncio.AbstractEventLoop
    upload_slots: FairBudget  # uploads parsed and stored at once; one user never holds all
    upload_users: FairBudget  # uploads in flight per user
    pregen: Pregenerator  # thumbnails of new uploads, in the background


class ServiceHolder:
    """Creates :class:`Services` lazily inside the running loop and closes them at shutdown.

    Lazy creation keeps the router usable by apps whose lifespan did not run (some test
    clients); a pymongo async client belongs to one event loop, so a new loop gets a new one.
    """

    def __init__(self, settings: Settings | None, client_kwargs: dict[str, Any] | None) -> None:
        self._settings = settings
        self._client_kwargs = dict(client_kwargs or {})
        self._services: Services | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    async def get(self) -> Services:
        loop = asyncio.get_running_loop()
        if self._services is not None and self._services.loop is loop:
            return self._services
        settings = self.settings
        client: AsyncMongoClient = AsyncMongoClient(
            settings.mongodb_url, tz_aware=False, **self._client_kwargs
        )
        store = ChatStore(client[settings.effective_database])
        thumbnails.configure(
            max_concurrency=settings.thumbnail_concurrency,
            max_pixels=settings.thumbnail_max_pixels,
            decode_budget=settings.thumbnail_decode_budget,
        )
        thumbs = ThumbnailService(
            settings.thumbnail_max_pixels,
            settings.thumbnail_max_source_bytes,
            settings.thumbnail_concurrency,
        )
        slots = FairBudget(
            max_grants=settings.upload_concurrency,
            per_owner=max(1, settings.upload_concurrency - 1),
        )
        users = FairBudget(per_owner=settings.uploads_per_user)
        background = Pregenerator(thumbs, store, settings.thumbnail_pregen_queue)
        services = self._services = Services(
            settings, client, store, thumbs, loop, slots, users, background
        )
        # Set before the first await, so concurrent first requests share one client.
        await store.ensure_indexes()
        return services

    async def aclose(self) -> None:
        services, self._services = self._services, None
        if services is not None and services.loop is asyncio.get_running_loop():
            await services.pregen.aclose()
            await services.client.close()

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):  # noqa: ANN201 - FastAPI's lifespan protocol
        await self.get()  # fail at startup, not at the first request, on bad settings
        try:
            yield
        finally:
            await self.aclose()


class UploadOut(BaseModel):
    file_id: str
    name: str
    mime: str
    size: int | None
    is_image: bool
    url: str
    download_url: str
    thumbnail_url: str
    thumbnail_small: str
    thumbnail_medium: str


class MessageOut(BaseModel):
    id: str
    session_id: str
    role: str | None
    content: str | None
    created_at: str | None
    file_ids: list[str]
    has_files: bool
    uploads: list[UploadOut]


class HistoryOut(BaseModel):
    session_id: str
    history: list[MessageOut]
    count: int
    has_more: bool
    next_before: str | None


class FileInfoOut(BaseModel):
    file_id: str
    original_name: str
    mime_type: str
    file_size: int | None
    is_image: bool
    upload_type: str | None
    uploaded_at: str | None
    processed: bool | None
    message_id: str | None
    metadata: dict[str, Any] | None
    url: str
    download_url: str
    thumbnail_url: str


class FileListOut(BaseModel):
    files: list[FileInfoOut]
    count: int
    session_id: str | None = None
    message_id: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, expired or invalid bearer token"},
    404: {"description": "Not found, or not the caller's (indistinguishable)"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    403: {"description": "The token may only read (the demo login's scope=read)"},
}
_BINARY = {"content": {"application/octet-stream": {}, "image/*": {}}}


def _plain(value: Any) -> Any:
    """BSON values as JSON values (ObjectId and datetimes as strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def file_info(row: dict[str, Any]) -> dict[str, Any]:
    """A ``file_uploads`` row in the original service's file-list format, plus URLs."""
    mime = str(row.get("mime_type") or "application/octet-stream")
    is_image = row.get("is_image")
    if not isinstance(is_image, bool):
        is_image = is_image_mime(mime)
    size = row.get("file_size")
    urls = file_urls(str(row["file_id"]))
    uploaded = row.get("uploaded_at")
    metadata = row.get("metadata")
    return {
        "file_id": str(row["file_id"]),
        "original_name": str(row.get("original_name") or ""),
        "mime_type": mime,
        "file_size": size if isinstance(size, int) and not isinstance(size, bool) else None,
        "is_image": is_image and row.get("file_missing") is not True,
        "upload_type": row.get("upload_type"),
        "uploaded_at": uploaded.isoformat() if hasattr(uploaded, "isoformat") else None,
        "processed": row.get("processed") if isinstance(row.get("processed"), bool) else None,
        "message_id": str(row["message_id"]) if row.get("message_id") is not None else None,
        "metadata": _plain(metadata) if isinstance(metadata, dict) else None,
        "url": urls["url"],
        "download_url": urls["download_url"],
        "thumbnail_url": urls["thumbnail_url"],
    }


def build_router(
    settings: Settings | None = None, *, client_kwargs: dict[str, Any] | None = None
) -> APIRouter:
    """A router with its own settings (None: read the environment on first use).

    ``client_kwargs`` go to ``AsyncMongoClient`` (tests pass ``event_listeners``).
    """
    holder = ServiceHolder(settings, client_kwargs)
    router = APIRouter(prefix=API_PREFIX, tags=["chat files"], lifespan=holder.lifespan)
    router.holder = holder  # type: ignore[attr-defined]  # for apps that need the same client
    bearer = HTTPBearer(auto_error=False, description="HS256 access token")

    async def services() -> Services:
        return await holder.get()

    async def current_principal(
        svc: Annotated[Services, Depends(services)],
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        try:
            if creds is None or creds.scheme.lower() != "bearer":
                raise AuthError("missing Authorization: Bearer token")
            return principal_from_token(creds.credentials, svc.settings.jwt_secret)
        except AuthError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None

    async def current_user(principal: Annotated[Principal, Depends(current_principal)]) -> str:
        return principal.user_id

    async def writing_user(principal: Annotated[Principal, Depends(current_principal)]) -> str:
        if principal.read_only:
            raise HTTPException(403, "This token may only read (scope=read): sign in to change")
        return principal.user_id

    Svc = Annotated[Services, Depends(services)]
    User = Annotated[str, Depends(current_user)]
    Writer = Annotated[str, Depends(writing_user)]

    @router.get("/sessions/{session_id}/history", response_model=HistoryOut, responses=ERRORS)
    async def get_history(
        session_id: str,
        svc: Svc,
        user_id: User,
        limit: Annotated[int | None, Query(ge=1, description="page size (capped)")] = None,
        before: Annotated[str | None, Query(description="next_before of the later page")] = None,
    ) -> Response:
        """The session's messages in time order, each with its ``uploads``."""
        size = min(limit or svc.settings.history_default_limit, svc.settings.history_max_limit)
        try:
            body = await load_history(svc.store, user_id, session_id, limit=size, before=before)
        except SessionNotFound:
            raise HTTPException(404, "Chat session not found") from None
        except BadCursor as exc:
            raise HTTPException(422, str(exc)) from None
        return JSONResponse(body)  # already JSON-safe: skip re-validating thousands of rows

    @router.get("/files/session/{session_id}", response_model=FileListOut, responses=ERRORS)
    async def list_session_files(session_id: str, svc: Svc, user_id: User) -> Response:
        """The caller's files in a session, newest first."""
        if not await svc.store.owns_session(session_id, user_id):
            raise HTTPException(404, "Chat session not found")
        rows = await svc.store.uploads_for_session(session_id, user_id)
        files = [file_info(r) for r in rows if r.get("file_id")]
        return JSONResponse({"session_id": session_id, "files": files, "count": len(files)})

    @router.get("/files/message/{message_id}", response_model=FileListOut, responses=ERRORS)
    async def list_message_files(message_id: str, svc: Svc, user_id: User) -> Response:
        """The caller's files attached to a message."""
        message = await svc.store.user_message(message_id, user_id)
        if message is None:
            raise HTTPException(404, "Message not found")
        message_id = str(message["_id"])  # the stored spelling, whatever case was asked
        ids = message.get("file_ids") if isinstance(message.get("file_ids"), list) else []
        rows = await svc.store.uploads_for_message(message_id, ids, user_id)
        files = [file_info(r) for r in rows if r.get("file_id")]
        return JSONResponse({"message_id": message_id, "files": files, "count": len(files)})

    @router.get(
        "/files/{file_id}/thumbnail",
        response_class=Response,
        responses={
            **ERRORS,
            200: _BINARY,
            304: {"description": "Not modified"},
            415: {"description": "Not an image"},
            422: {"description": "Corrupt, truncated or too large image"},
        },
    )
    async def get_thumbnail(
        file_id: str,
        request: Request,
        svc: Svc,
        user_id: User,
        size: Annotated[ThumbSize, Query(description="longest side in px")] = DEFAULT_THUMB,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        """A JPEG/PNG thumbnail, generated once and cached."""
        record = await svc.store.find_file(file_id, user_id)
        if record is None:
            raise HTTPException(404, "File not found")
        return await svc.thumbs.response(
            svc.store,
            record,
            int(size),
            user_id,
            if_none_match,
            head_only=request.method == "HEAD",
        )

    # HEAD answers what GET would, without the body (FastAPI does not add it on its own).
    router.add_api_route(
        "/files/{file_id}/thumbnail",
        get_thumbnail,
        methods=["HEAD"],
        response_class=Response,
        include_in_schema=False,
    )

    @router.get(
        "/files/{file_id}",
        response_class=Response,
        responses={
            **ERRORS,
            200: _BINARY,
            206: {"description": "Partial content"},
            304: {"description": "Not modified"},
            416: {"description": "Bad range"},
        },
    )
    async def get_file(
        file_id: str,
        request: Request,
        svc: Svc,
        user_id: User,
        download: bool = False,
        if_none_match: Annotated[str | None, Header()] = None,
        if_modified_since: Annotated[str | None, Header()] = None,
        range_: Annotated[str | None, Header(alias="Range")] = None,
        if_range: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The file's bytes, streamed; inline only for safe raster types."""
        record = await svc.store.find_file(file_id, user_id)
        if record is None:
            raise HTTPException(404, "File not found")
        return await file_response(
            svc.store,
            record,
            download=download,
            if_none_match=if_none_match,
            if_modified_since=if_modified_since,
            range_header=range_,
            if_range=if_range,
            head_only=request.method == "HEAD",
        )

    router.add_api_route(
        "/files/{file_id}",
        get_file,
        methods=["HEAD"],
        response_class=Response,
        include_in_schema=False,
    )

    upload_schema = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["session_id", "files"],
                        "properties": {
                            "session_id": {"type": "string"},
                            "content": {"type": "string"},
                            "message_id": {"type": "string"},
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            },
                        },
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["session_id", "uploads"],
                        "properties": {
                            "session_id": {"type": "string"},
                            "content": {"type": "string"},
                            "message_id": {"type": "string"},
                            "uploads": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["data"],
                                    "properties": {
                                        "data": {"type": "string", "description": "base64"},
                                        "type": {"type": "string", "enum": ["file"]},
                                        "name": {"type": "string"},
                                        "mime": {"type": "string"},
                                    },
                                },
                            },
                        },
                    }
                },
            },
        }
    }

    @router.post(
        "/files",
        status_code=201,
        response_model=MessageOut,
        openapi_extra=upload_schema,
        responses={
            **WRITE_ERRORS,
            413: {"description": "Too large"},
            415: {"description": "Refused type"},
            422: {"description": "Invalid file"},
        },
    )
    async def upload_files(request: Request, svc: Svc, user_id: Writer) -> Response:
        """Store attachments and the user message that carries them."""
        settings = svc.settings
        # The body arrives outside the processing slots, under a time limit (408), so a slow
        # client holds none; a user's further uploads wait for their own earlier ones.
        async with svc.upload_users.hold(user_id):
            received = await receive_request(request, settings, user_id)
            try:
                async with svc.upload_slots.hold(user_id):
                    fields, files = await parse_request(received, settings)
                    sizes = pregen.ORDER if settings.thumbnail_pregen_queue else ()
                    message = await store_upload(
                        svc.store, settings, user_id, fields, files, thumbnail_sizes=sizes
                    )
            finally:
                await received.aclose()
        svc.pregen.submit(user_id, files)
        return JSONResponse(message, status_code=201)

    @router.delete("/files/{file_id}", responses=WRITE_ERRORS)
    async def delete_file(file_id: str, svc: Svc, user_id: Writer) -> dict[str, Any]:
        """Remove a file: bytes, thumbnails, upload row, and its id from the message."""
        if normal_id(file_id) is None:
            raise HTTPException(404, "File not found")
        record = await svc.store.find_file(file_id, user_id)
        if record is None:
            raise HTTPException(404, "File not found")
        removed = await svc.store.delete_file(record, user_id)
        return {
            "message": "File deleted successfully",
            "file_id": record.file_id,
            "removed": removed,
        }

    return router


#: The router an existing service includes; configured from the environment on first use.
router = build_router()
