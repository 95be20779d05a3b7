"""The async MongoDB driver under the service, chosen once at import.

pymongo's own async API (``AsyncMongoClient``, ``AsyncGridFSBucket``) where the installed
pymongo has it as a stable API (4.13+); otherwise Motor, the driver the original service pins
next to pymongo 4.6 (``AsyncIOMotorClient``, ``AsyncIOMotorGridFSBucket``). Collections and
cursors behave alike in both (awaitable ``find_one``/``insert_many``/``to_list``...); the few
calls that differ go through here and nowhere else:

- closing a client (a coroutine in pymongo, a plain call in Motor);
- ``aggregate`` (pymongo: a coroutine that gives the cursor; Motor: the cursor itself);
- GridFS downloads, whose ``seek`` and ``close`` are coroutines in pymongo and plain calls in
  Motor: :class:`MotorDriver` hands out grid outs with pymongo's signatures.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any, Protocol

import pymongo

STABLE_ASYNC_PYMONGO = (4, 13)


class GridOut(Protocol):
    """What the service uses of an opened GridFS file (either driver's)."""

    _id: Any
    length: int
    chunk_size: int
    upload_date: Any
    md5: str | None
    metadata: dict[str, Any] | None

    async def read(self, size: int = -1) -> bytes: ...
    async def readchunk(self) -> bytes: ...
    async def seek(self, pos: int, whence: int = 0) -> int: ...
    async def close(self) -> None: ...


class PymongoDriver:
    """pymongo's async API (4.13+)."""

    name = "pymongo"

    def __init__(self) -> None:
        from gridfs import AsyncGridFSBucket
        from pymongo import AsyncMongoClient

        self._client, self._bucket = AsyncMongoClient, AsyncGridFSBucket

    def connect(self, url: str, **kwargs: Any) -> Any:
        return self._client(url, **kwargs)

    async def close(self, client: Any) -> None:
        await client.close()

    def bucket(self, db: Any, bucket_name: str = "fs") -> Any:
        return self._bucket(db, bucket_name=bucket_name)

    async def aggregate(self, collection: Any, pipeline: list[dict[str, Any]]) -> Any:
        return await collection.aggregate(pipeline)


class MotorDriver:
    """Motor (3.3+), for pymongo versions without a stable async API."""

    name = "motor"

    def __init__(self) -> None:
        from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorGridFSBucket

        self._client, self._bucket = AsyncIOMotorClient, AsyncIOMotorGridFSBucket

    def connect(self, url: str, **kwargs: Any) -> Any:
        return self._client(url, **kwargs)

    async def close(self, client: Any) -> None:
        client.close()

    def bucket(self, db: Any, bucket_name: str = "fs") -> Any:
        return _MotorBucket(self._bucket(db, bucket_name=bucket_name))

    async def aggregate(self, collection: Any, pipeline: list[dict[str, Any]]) -> Any:
        return collection.aggregate(pipeline)


class _MotorBucket:
    """A Motor bucket whose downloads are :class:`_MotorGridOut`; the rest passes through."""

    def __init__(self, bucket: Any) -> None:
        self._bucket = bucket

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bucket, name)

    async def open_download_stream(self, file_id: Any) -> _MotorGridOut:
        return _MotorGridOut(await self._bucket.open_download_stream(file_id))

    async def open_download_stream_by_name(self, filename: str, revision: int = -1) -> Any:
        out = await self._bucket.open_download_stream_by_name(filename, revision=revision)
        return _MotorGridOut(out)


class _MotorGridOut:
    """Motor's grid out with pymongo's async ``seek`` and ``close``.

    Motor exposes both as plain calls of the synchronous grid out, and either can close a live
    chunks cursor (a ``killCursors`` round trip): they run in a worker thread, as Motor runs
    its reads, so the event loop never waits on the network.
    """

    def __init__(self, out: Any) -> None:
        self._out = out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)

    @property
    def md5(self) -> str | None:
        # Set by old uploaders only; newer pymongo warns on the sync property Motor wraps.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._out.md5

    async def seek(self, pos: int, whence: int = 0) -> int:
        return await asyncio.to_thread(self._out.seek, pos, whence)

    async def close(self) -> None:
        await asyncio.to_thread(self._out.close)


AsyncDriver = PymongoDriver | MotorDriver


def _choose() -> AsyncDriver:
    if pymongo.version_tuple[:2] >= STABLE_ASYNC_PYMONGO:
        return PymongoDriver()
    try:
        return MotorDriver()
    except ImportError:
        raise ImportError(
            f"pymongo {pymongo.version} has no stable async API and Motor is not installed: "
            "pip install 'motor>=3.3' (or pymongo>=4.13)"
        ) from None


#: The driver this process uses.
DRIVER = _choose()
