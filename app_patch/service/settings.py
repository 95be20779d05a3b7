"""Configuration of the image-rendering web layer, read from the service's own variables.

The names are the ones the original flowise-proxy service already uses, so the patch drops
into an existing deployment without new configuration:

- ``MONGODB_URL`` (default ``mongodb://localhost:27017``)
- ``MONGODB_DATABASE_NAME`` (default ``flowise_proxy``); a database named in the URL path wins
- ``JWT_ACCESS_SECRET``, falling back to ``JWT_SECRET_KEY`` (HS256 only)

A few knobs are new and optional: ``FILE_MAX_UPLOAD_BYTES`` (per file),
``FILE_MAX_FILES_PER_UPLOAD``, ``FILE_MAX_REQUEST_BYTES`` (a whole upload request body;
default 32 MiB, or more if one file at the per-file limit needs it as base64),
``FILE_UPLOAD_CONCURRENCY`` (uploads parsed and stored at once per process, default 2; one
user holds at most all but one), ``FILE_UPLOADS_PER_USER`` (uploads one user has in flight,
default 4; more wait), ``FILE_UPLOAD_BODY_TIMEOUT`` and ``FILE_UPLOAD_MIN_RATE`` (a body must
arrive within 20 s plus one second per 1024 bytes, else 408), ``THUMBNAIL_MAX_PIXELS``,
``THUMBNAIL_MAX_SOURCE_BYTES``, ``THUMBNAIL_CONCURRENCY``, ``THUMBNAIL_DECODE_BUDGET`` (bytes
of large decodes in flight, default 128 MiB; a larger one runs alone),
``THUMBNAIL_PREGEN_QUEUE`` (images queued for background thumbnails, default 64; 0 turns
that off), and ``HISTORY_MAX_LIMIT`` (the largest page a ``limit`` may ask for; without
``limit`` history returns the whole session, as the original service did).

Text an upload carries is bounded too, in UTF-8 bytes, and checked before anything is stored
(413 past a limit): ``MESSAGE_MAX_CONTENT_BYTES`` (the message text, default 4 MiB; at most
16 MiB less 64 KiB, so the message always fits a 16 MiB BSON document),
``FILE_MAX_NAME_BYTES`` (a file name, default 1024; at most 1 MiB, since GridFS keeps it
twice and the upload row once more) and ``FILE_MAX_FIELD_BYTES`` (``session_id``,
``message_id`` and a claimed MIME type, default 1024). An upload that never finished (its
process was killed half-way) is removed by the next process after ``UPLOAD_ORPHAN_GRACE``
seconds (default 900), and ``python -m app_patch.tools.verify --orphans`` reports (and with
``--remove-orphans`` removes) GridFS chunks that have no files document.

``DEMO_MODE=1`` together with ``DEMO_USER_ID`` turns on the standalone demo's login, which
hands anyone who can reach the server a read-only token for that user. It is for a local
demo only; never set DEMO_MODE in production.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_URL = "mongodb://localhost:27017"
DEFAULT_DATABASE = "flowise_proxy"
JWT_ALGORITHM = "HS256"  # the only algorithm accepted; never taken from the token header
#: Largest image (width x height) thumbnails will decode; thumbnails.py uses the same default.
DEFAULT_MAX_PIXELS = 50_000_000
#: MongoDB's (and FerretDB's) largest document.
BSON_LIMIT = 16 * 1024 * 1024
#: Room left in a message document for everything but its content.
_DOCUMENT_MARGIN = 64 * 1024
MAX_CONTENT_CEILING = BSON_LIMIT - _DOCUMENT_MARGIN
MAX_NAME_CEILING = 1024 * 1024


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Everything the router needs; build with :meth:`from_env` or directly in tests."""

    mongodb_url: str = DEFAULT_URL
    database_name: str = DEFAULT_DATABASE
    jwt_secret: str = ""
    max_upload_bytes: int = 20 * 1024 * 1024
    max_files_per_upload: int = 10
    thumbnail_max_pixels: int = DEFAULT_MAX_PIXELS  # one limit for the app and thumbnails.py
    thumbnail_max_source_bytes: int = 64 * 1024 * 1024
    thumbnail_concurrency: int = 2
    history_max_limit: int = 1000
    max_request_bytes: int | None = None  # None: see request_limit in app_patch.service.uploads
    upload_concurrency: int = 2
    uploads_per_user: int = 4  # in flight (being received or stored) per user; more wait
    upload_body_timeout: int = 20  # seconds for a body, plus one per upload_min_rate bytes
    upload_min_rate: int = 1024  # bytes per second
    thumbnail_decode_budget: int = 128 * 1024 * 1024  # bytes of large decodes in flight
    thumbnail_pregen_queue: int = 64  # uploads waiting for background thumbnails; 0: off
    max_content_bytes: int = 4 * 1024 * 1024  # a message's text, UTF-8
    max_name_bytes: int = 1024  # a file name, UTF-8
    max_field_bytes: int = 1024  # session_id, message_id, a claimed MIME type
    upload_orphan_grace: int = 900  # seconds before an unfinished upload is swept away
    demo_user_id: str | None = None
    demo_mode: bool = False

    def __post_init__(self) -> None:
        if not self.jwt_secret:
            raise SettingsError(
                "no JWT secret: set JWT_ACCESS_SECRET (or JWT_SECRET_KEY) to the HS256 secret "
                "the auth service signs access tokens with"
            )
        for name in (
            "max_upload_bytes",
            "max_files_per_upload",
            "thumbnail_max_pixels",
            "thumbnail_max_source_bytes",
            "thumbnail_concurrency",
            "history_max_limit",
            "upload_concurrency",
            "uploads_per_user",
            "upload_body_timeout",
            "upload_min_rate",
            "thumbnail_decode_budget",
            "max_content_bytes",
            "max_name_bytes",
            "max_field_bytes",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name, ceiling in (
            ("max_content_bytes", MAX_CONTENT_CEILING),
            ("max_name_bytes", MAX_NAME_CEILING),
            ("max_field_bytes", MAX_NAME_CEILING),
        ):
            if getattr(self, name) > ceiling:
                raise SettingsError(
                    f"{name} is {getattr(self, name)}; at most {ceiling} fits a 16 MiB document"
                )
        if self.max_request_bytes is not None and self.max_request_bytes <= 0:
            raise SettingsError(
                f"max_request_bytes must be a positive integer, got {self.max_request_bytes}"
            )
        if self.upload_orphan_grace < 0:
            raise SettingsError(
                f"upload_orphan_grace must be 0 or more seconds, got {self.upload_orphan_grace}"
            )
        if self.thumbnail_pregen_queue < 0:
            raise SettingsError(
                f"thumbnail_pregen_queue must be 0 (off) or more, got {self.thumbnail_pregen_queue}"
            )

    @property
    def effective_database(self) -> str:
        """The database to use: the one named in the URL path wins over the setting."""
        path = urlsplit(self.mongodb_url).path.lstrip("/")
        return path or self.database_name

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default ``os.environ``)."""
        env = os.environ if env is None else env

        def integer(key: str, default: int) -> int:
            raw = env.get(key, "").strip()
            if not raw:
                return default
            try:
                return int(raw.replace("_", ""))
            except ValueError:
                raise SettingsError(
                    f"{key}={raw!r} is not an integer; set it to a whole number"
                ) from None

        def flag(key: str) -> bool:
            raw = env.get(key, "").strip().lower()
            if raw in ("", "0", "false", "no", "off"):
                return False
            if raw in ("1", "true", "yes", "on"):
                return True
            raise SettingsError(f"{key}={raw!r} is not a yes/no value; set it to 1 or 0")

        request_bytes = env.get("FILE_MAX_REQUEST_BYTES", "").strip()
        return cls(
            mongodb_url=env.get("MONGODB_URL", "").strip() or DEFAULT_URL,
            database_name=env.get("MONGODB_DATABASE_NAME", "").strip() or DEFAULT_DATABASE,
            jwt_secret=env.get("JWT_ACCESS_SECRET", "") or env.get("JWT_SECRET_KEY", ""),
            max_upload_bytes=integer("FILE_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_files_per_upload=integer("FILE_MAX_FILES_PER_UPLOAD", cls.max_files_per_upload),
            thumbnail_max_pixels=integer("THUMBNAIL_MAX_PIXELS", cls.thumbnail_max_pixels),
            thumbnail_max_source_bytes=integer(
                "THUMBNAIL_MAX_SOURCE_BYTES", cls.thumbnail_max_source_bytes
            ),
            thumbnail_concurrency=integer("THUMBNAIL_CONCURRENCY", cls.thumbnail_concurrency),
            history_max_limit=integer("HISTORY_MAX_LIMIT", cls.history_max_limit),
            max_request_bytes=integer("FILE_MAX_REQUEST_BYTES", 0) if request_bytes else None,
            upload_concurrency=integer("FILE_UPLOAD_CONCURRENCY", cls.upload_concurrency),
            uploads_per_user=integer("FILE_UPLOADS_PER_USER", cls.uploads_per_user),
            upload_body_timeout=integer("FILE_UPLOAD_BODY_TIMEOUT", cls.upload_body_timeout),
            upload_min_rate=integer("FILE_UPLOAD_MIN_RATE", cls.upload_min_rate),
            thumbnail_decode_budget=integer(
                "THUMBNAIL_DECODE_BUDGET", cls.thumbnail_decode_budget
            ),
            thumbnail_pregen_queue=integer("THUMBNAIL_PREGEN_QUEUE", cls.thumbnail_pregen_queue),
            max_content_bytes=integer("MESSAGE_MAX_CONTENT_BYTES", cls.max_content_bytes),
            max_name_bytes=integer("FILE_MAX_NAME_BYTES", cls.max_name_bytes),
            max_field_bytes=integer("FILE_MAX_FIELD_BYTES", cls.max_field_bytes),
            upload_orphan_grace=integer("UPLOAD_ORPHAN_GRACE", cls.upload_orphan_grace),
            demo_user_id=env.get("DEMO_USER_ID", "").strip() or None,
            demo_mode=flag("DEMO_MODE"),
        )
