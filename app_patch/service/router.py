"""The FastAPI routes of the image-rendering change (prefix ``/api/v1/chat``), kept thin.

An existing service adds them with one line::

    from app_patch.service.router import router
    app.include_router(router)

Settings come from the environment (:class:`app_patch.service.settings.Settings`) when the router is
first used; :func:`build_router` takes explicit settings instead. The router's lifespan
(merged into the including app's where FastAPI does that) owns one client of
:data:`app_patch.service.driver.DRIVER` per app.
"""

import asyncio
import datetime as dt
import gc
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from app_patch.service import pregen, thumbnails
from app_patch.service.auth import AuthError, Principal, principal_from_token
from app_patch.service.decodepool import DecodePool
from app_patch.service.driver import DRIVER, AsyncDriver
from app_patch.service.fairness import FairBudget
from app_patch.service.files import file_response
from app_patch.service.history import (
    API_PREFIX,
    BadCursor,
    SessionNotFound,
    file_urls,
    load_history,
    open_history_stream,
    row_is_image,
)
from app_patch.service.pregen import Pregenerator
from app_patch.service.settings import Settings
from app_patch.service.storage import Busy, ChatStore, normal_id
from app_patch.service.thumbservice import ThumbnailService
from app_patch.service.uploads import parse_request, receive_request, store_upload

log = logging.getLogger(__name__)
DEFAULT_THUMB = 200  # the original's default
#: Requests up to this many pixels are served (from the supported sizes); beyond is a 422.
MAX_THUMB_REQUEST = 10_000


def served_thumb_size(requested: int) -> int:
    """The supported size served for ``size=requested``: the smallest one at least as large,
    at most the largest (the original accepted any integer; a fixed set keeps the cache
    bounded). Raises a 422 outside 1..MAX_THUMB_REQUEST."""
    if not 1 <= requested <= MAX_THUMB_REQUEST:
        # Never str() the number itself: past 4300 digits that raises (a 500).
        got = str(requested) if -(10**9) < requested < 10**9 else "a number that long"
        raise HTTPException(
            422,
            f"size must be a whole number of pixels from 1 to {MAX_THUMB_REQUEST}, got "
            f"{got}; thumbnails are served at {', '.join(map(str, thumbnails.THUMB_SIZES))}",
        )
    return next((s for s in thumbnails.THUMB_SIZES if s >= requested), thumbnails.THUMB_SIZES[-1])


def _whole_number(raw: str, name: str) -> int:
    """An integer query parameter, read here rather than by FastAPI, whose 422 echoes the
    input (and cannot read past 4300 digits): a number too long to matter is kept as one
    just past the allowed range."""
    text = raw.strip()
    digits = text.removeprefix("-").removeprefix("+")
    if not (digits.isascii() and digits.isdigit()):
        raise HTTPException(422, f"{name} must be a whole number")
    if len(digits.lstrip("0")) > 18:
        return -(10**18) if text.startswith("-") else 10**18
    return int(text)


def _page_size(raw: str) -> int:
    """``limit`` as a positive int, else a 422 that does not echo it (it may be 5000 digits,
    which ``int()`` refuses anyway)."""
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and int(text) >= 1):
        raise HTTPException(422, "limit must be a whole number of messages, 1 or more")
    return int(text)


@dataclass
class Services:
    """What the routes need, created once per app (and per event loop)."""

    settings: Settings
    client: Any  # the driver's async client
    store: ChatStore
    thumbs: ThumbnailService
    loop: asyncio.AbstractEventLoop
    decoder: DecodePool  # this app's decode workers and budget (shared by its event loops)
    upload_slots: FairBudget  # uploads parsed and stored at once; one user never holds all
    upload_users: FairBudget  # uploads in flight per user
    pregen: Pregenerator  # thumbnails of new uploads, in the background


class ServiceHolder:
    """Creates :class:`Services` lazily inside the running loop and closes them at shutdown.

    Lazy creation keeps the router usable by apps whose lifespan did not run (some test
    clients; FastAPI 0.104, which the original service pins, ignores an included router's
    lifespan); an async client belongs to one event loop, so a new loop gets a new one. The
    decode pool is thread-based: one per app, kept across loops, closed at shutdown.
    """

    def __init__(
        self,
        settings: Settings | None,
        client_kwargs: dict[str, Any] | None,
        driver: AsyncDriver | None = None,
    ) -> None:
        self._settings = settings
        self._driver = driver or DRIVER
        self._client_kwargs = dict(client_kwargs or {})
        self._services: Services | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._decoder: DecodePool | None = None

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
        client = self._driver.connect(settings.mongodb_url, tz_aware=False, **self._client_kwargs)
        store = ChatStore(client[settings.effective_database], self._driver)
        if self._decoder is None:
            self._decoder = DecodePool(
                settings.thumbnail_concurrency, settings.thumbnail_decode_budget
            )
        decoder = self._decoder
        thumbs = ThumbnailService(
            settings.thumbnail_max_pixels, settings.thumbnail_max_source_bytes, decoder
        )
        slots = FairBudget(
            max_grants=settings.upload_concurrency,
            per_owner=max(1, settings.upload_concurrency - 1),
        )
        users = FairBudget(per_owner=settings.uploads_per_user)
        background = Pregenerator(thumbs, store, settings.thumbnail_pregen_queue)
        services = self._services = Services(
            settings, client, store, thumbs, loop, decoder, slots, users, background
        )
        # Set before the first await, so concurrent first requests share one client.
        self._sweeper = loop.create_task(_sweep_forever(store, settings.upload_orphan_grace))
        await store.ensure_indexes()
        _freeze_startup_objects()
        return services

    async def aclose(self) -> None:
        services, self._services = self._services, None
        sweeper, self._sweeper = self._sweeper, None
        decoder, self._decoder = self._decoder, None
        if sweeper is not None and not sweeper.done():
            sweeper.cancel()
        if services is not None and services.loop is asyncio.get_running_loop():
            await services.pregen.aclose()
            await services.store.driver.close(services.client)
        if decoder is not None:
            decoder.close()  # decodes already running finish on their threads

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):  # noqa: ANN201 - FastAPI's lifespan protocol
        await self.get()  # fail at startup, not at the first request, on bad settings
        try:
            yield
        finally:
            await self.aclose()


_startup_frozen = False


def _freeze_startup_objects() -> None:
    """Once per process, after the first services exist: collect, then move every object alive
    (modules, the app, the client) out of the collector's sight with :func:`gc.freeze`.

    A full collection otherwise walks all of them: under four streamed whole-session
    histories it held the event loop for up to 80 ms at a time (measured with gc callbacks),
    the biggest share of a no-database request's worst wait. Freezing halves what a full
    collection walks; the collect first keeps garbage of the startup out of the frozen set.
    """
    global _startup_frozen
    if not _startup_frozen:
        _startup_frozen = True
        gc.collect()
        gc.freeze()


async def _sweep_forever(store: ChatStore, grace_seconds: int) -> None:
    """Undo uploads a killed process left half-written: at start, then every grace period
    (one query on a small journal when there is nothing to do)."""
    grace = dt.timedelta(seconds=grace_seconds)
    while True:
        try:
            undone = await store.sweep_abandoned(grace)
            if undone:
                log.warning("removed %d upload(s) left half-written by a stopped process", undone)
        except Exception as exc:  # noqa: BLE001 - retried next period; one line, no traceback
            log.warning("orphan sweep failed: %s", " ".join(str(exc).split())[:200])
        await asyncio.sleep(max(60, grace_seconds))


class UploadOut(BaseModel):
    file_id: str
    name: str
    mime: str
    size: int | None
    type: str
    url: str
    download_url: str
    is_image: bool
    uploaded_at: str | None
    thumbnail_url: str | None = Field(None, description="images only: absent otherwise")
    thumbnail_small: str | None = Field(None, description="images only: absent otherwise")
    thumbnail_medium: str | None = Field(None, description="images only: absent otherwise")


class MessageOut(BaseModel):
    id: str
    role: str | None
    content: str | None
    created_at: str | None
    session_id: str
    file_ids: list[str]
    has_files: bool
    uploads: list[UploadOut]


class HistoryOut(BaseModel):
    history: list[MessageOut]
    count: int
    session_id: str
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
    thumbnail_url: str | None = Field(None, description="images only: absent otherwise")


class FileListOut(BaseModel):
    files: list[FileInfoOut]
    count: int
    session_id: str | None = None
    message_id: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Expired or invalid bearer token"},
    403: {"description": "No bearer token (as the original service answers)"},
    404: {"description": "Not found, or not the caller's (indistinguishable)"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    403: {"description": "No bearer token, or one that may only read (scope=read)"},
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
    is_image = row_is_image(row)
    size = row.get("file_size")
    urls = file_urls(str(row["file_id"]))
    uploaded = row.get("uploaded_at")
    metadata = row.get("metadata")
    info = {
        "file_id": str(row["file_id"]),
        "original_name": str(row.get("original_name") or ""),
        "mime_type": mime,
        "file_size": size if isinstance(size, int) and not isinstance(size, bool) else None,
        "is_image": is_image,
        "upload_type": row.get("upload_type"),
        "uploaded_at": uploaded.isoformat() if hasattr(uploaded, "isoformat") else None,
        "processed": row.get("processed") if isinstance(row.get("processed"), bool) else None,
        "message_id": str(row["message_id"]) if row.get("message_id") is not None else None,
        "metadata": _plain(metadata) if isinstance(metadata, dict) else None,
        "url": urls["url"],
        "download_url": urls["download_url"],
    }
    if is_image:  # as in history: no thumbnail is advertised for a non-image
        info["thumbnail_url"] = urls["thumbnail_url"]
    return info


def build_router(
    settings: Settings | None = None,
    *,
    client_kwargs: dict[str, Any] | None = None,
    driver: AsyncDriver | None = None,
) -> APIRouter:
    """A router with its own settings (None: read the environment on first use).

    ``client_kwargs`` go to the driver's client (tests pass ``event_listeners``); ``driver``
    None takes :data:`app_patch.service.driver.DRIVER` (tests pass the other one).
    """
    holder = ServiceHolder(settings, client_kwargs, driver)
    router = APIRouter(prefix=API_PREFIX, tags=["chat files"], lifespan=holder.lifespan)
    router.holder = holder  # type: ignore[attr-defined]  # for apps that need the same client
    bearer = HTTPBearer(auto_error=False, description="HS256 access token")

    async def services() -> Services:
        return await holder.get()

    async def current_principal(
        svc: Annotated[Services, Depends(services)],
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            # The original's HTTPBearer() answers 403 here (FastAPI 0.104), not 401.
            raise HTTPException(403, "Not authenticated")
        try:
            return principal_from_token(creds.credentials, svc.settings.jwt_secret)
        except AuthError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None

    async def current_user(principal: Annotated[Principal, Depends(current_principal)]) -> str:
        return principal.user_id

    async def writing_user(principal: Annotated[Principal, Depends(current_principal)]) -> str:
        if principal.read_only:
            raise HTTPException(403, "This token may only read (scope=read): sign in to change")
        return principal.user_id

    # Query and Header parameters are declared as defaults, not inside Annotated: FastAPI
    # 0.104 (the original service's pin) fails on Annotated ones with pydantic 2.12+.
    Svc = Annotated[Services, Depends(services)]
    User = Annotated[str, Depends(current_user)]
    Writer = Annotated[str, Depends(writing_user)]

    @router.get("/sessions/{session_id}/history", response_model=HistoryOut, responses=ERRORS)
    async def get_history(
        session_id: str,
        svc: Svc,
        user_id: User,
        limit: str | None = Query(
            None, description="page size, a whole number from 1 (capped at the configured "
            "maximum); absent: every message", json_schema_extra={"pattern": "^[0-9]{1,18}$"}),
        before: str | None = Query(None, description="next_before of the later page"),
    ) -> Response:
        """The session's messages in time order, each with its ``uploads``.

        Without ``limit`` the whole session, as the original service answered.
        """
        size = None if limit is None else min(_page_size(limit), svc.settings.history_max_limit)
        try:
            if size is None:  # the whole session: streamed as it is read, same bytes
                chunks = await open_history_stream(svc.store, user_id, session_id, before=before)
                return StreamingResponse(chunks, media_type="application/json")
            body = await load_history(svc.store, user_id, session_id, limit=size, before=before)
        except SessionNotFound:
            raise HTTPException(404, "Chat session not found") from None
        except BadCursor as exc:
            raise HTTPException(422, str(exc)) from None
        return JSONResponse(body)  # already JSON-safe: skip re-validating thousands of rows

    # The two file lists answer as the original did: 200 with the caller's files, oldest
    # first, and an empty list for a session or message that is unknown or someone else's
    # (the query itself is scoped to the caller, so the list reveals nothing either way).
    @router.get("/files/session/{session_id}", response_model=FileListOut, responses=ERRORS)
    async def list_session_files(session_id: str, svc: Svc, user_id: User) -> Response:
        """The caller's files in a session, oldest first (``files: []`` for none)."""
        rows = await svc.store.uploads_for_session(session_id, user_id)
        files = [file_info(r) for r in rows if r.get("file_id")]
        return JSONResponse({"session_id": session_id, "files": files, "count": len(files)})

    @router.get("/files/message/{message_id}", response_model=FileListOut, responses=ERRORS)
    async def list_message_files(message_id: str, svc: Svc, user_id: User) -> Response:
        """The caller's files attached to a message, oldest first (``files: []`` for none)."""
        message = await svc.store.user_message(message_id, user_id)
        ids: list[str] = []
        if message is not None:
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
            400: {"description": "Not an image (history advertises no thumbnail for it)"},
            422: {"description": "size out of range"},
        },
    )
    async def get_thumbnail(
        file_id: str,
        request: Request,
        svc: Svc,
        user_id: User,
        size: str = Query(str(DEFAULT_THUMB), description="longest side in px, a whole "
                          "number; served as 100, 200 or 300 (the smallest at least as large, "
                          "at most 300)", json_schema_extra={"pattern": "^-?[0-9]+$"}),
        if_none_match: str | None = Header(None),
    ) -> Response:
        """A JPEG/PNG thumbnail, generated once and cached.

        An image that cannot be rendered (truncated, corrupt, over the pixel limit) gets a
        generic placeholder picture, marked by ``X-Thumbnail-Placeholder``.
        """
        served = served_thumb_size(_whole_number(size, "size"))
        record = await svc.store.find_file(file_id, user_id)
        if record is None:
            raise HTTPException(404, "File not found")
        return await svc.thumbs.response(
            svc.store,
            record,
            served,
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
        if_none_match: str | None = Header(None),
        if_modified_since: str | None = Header(None),
        range_: str | None = Header(None, alias="Range"),
        if_range: str | None = Header(None),
    ) -> Response:
        """The file's bytes, streamed; inline only for safe raster types."""
        try:
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
        except Busy as exc:
            log.warning("download of %s: %s", file_id, exc)
            raise HTTPException(503, f"{exc}; try again") from None

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
                        svc.store,
                        settings,
                        user_id,
                        fields,
                        files,
                        decoder=svc.decoder,
                        thumbnail_sizes=sizes,
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
        try:
            record = await svc.store.find_file(file_id, user_id)
            if record is None:
                raise HTTPException(404, "File not found")
            removed = await svc.store.delete_file(record, user_id)
        except Busy as exc:  # journaled: the sweep finishes it
            log.warning("delete of %s left to the sweep: %s", file_id, exc)
            raise HTTPException(503, f"{exc}; the delete will complete shortly") from None
        return {
            "message": "File deleted successfully",
            "file_id": record.file_id,
            "removed": removed,
        }

    return router


#: The router an existing service includes; configured from the environment on first use.
router = build_router()
