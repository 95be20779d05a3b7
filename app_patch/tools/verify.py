"""Check a running deployment of the image-rendering change end to end, over HTTP.

``python -m app_patch.tools.verify --base-url URL (--token T | --jwt-secret S --user U)
[--session-id SID] [--image FILE] [--keep] [--timeout SECONDS]``

Uploads an image (``POST /api/v1/chat/files``, multipart) into a session the user owns, reads
the session's history and checks the upload's entry has exactly the original service's keys
and right values, fetches the file inline and as a download, each thumbnail size (pixel dimensions
checked with Pillow), the caching headers and the ``304`` answers to ``If-None-Match``, then
deletes the file again (``--keep`` leaves it; the message that carried it stays either way).
Prints ``PASS name: detail`` or ``FAIL name: detail`` per check and exits 1 on any failure.

``python -m app_patch.tools.verify --orphans [--remove-orphans] [--mongodb-url URL]
[--grace SECONDS]`` looks in the database instead: GridFS chunks without a files document
(what a failed upload used to leave) and uploads a killed process never finished; exit 1 when
there are some, unless ``--remove-orphans`` removed them.

Without ``--session-id`` the user's first session is taken from ``GET /api/v1/chat/sessions``
(the service's own endpoint; the standalone app has none, so pass ``--session-id`` there).
:func:`run_checks` takes any ``httpx.Client`` (a Starlette ``TestClient`` too).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import io
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pymongo.errors
from PIL import Image, ImageDraw

from app_patch.service.auth import issue_token
from app_patch.service.driver import DRIVER
from app_patch.service.settings import DEFAULT_DATABASE, DEFAULT_URL
from app_patch.service.storage import ORPHAN_GRACE, PENDING, THUMB_BUCKET, ChatStore, utcnow

API = "/api/v1/chat"
#: The keys of an image's upload entry in the original service's history (chat.py).
UPLOAD_KEYS = frozenset(
    {
        "file_id", "name", "mime", "size", "type", "url", "download_url", "is_image",
        "uploaded_at", "thumbnail_url", "thumbnail_small", "thumbnail_medium",
    }
)
THUMB_SIZES = (100, 200, 300)
FILE_MAX_AGE = 3600  # the guide: full images cached for 1 hour
THUMB_MAX_AGE = 86400  # thumbnails for 24 hours
TOKEN_TTL = 900


@dataclass(frozen=True)
class Check:
    """One verdict: ``name`` passed or not, and why."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


class CheckFailed(Exception):
    """Raised inside a check; the message is the FAIL detail."""


def sample_image() -> tuple[bytes, str]:
    """A 640x400 PNG with shapes (so a wrong resize or crop would change the pixels)."""
    image = Image.new("RGB", (640, 400), (240, 240, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, 300, 360), fill=(200, 40, 40))
    draw.ellipse((320, 60, 600, 340), fill=(30, 90, 200))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue(), "deploy_check.png"


def image_facts(data: bytes) -> tuple[str, int]:
    """(MIME type, longest side) of an image, as Pillow reads it."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return Image.MIME.get(im.format or "", "application/octet-stream"), max(im.size)
    except Exception as exc:  # noqa: BLE001 - any decoder error means "not a usable image"
        raise CheckFailed(f"not a decodable image ({type(exc).__name__}: {exc})") from None


def expect(condition: bool, detail: str) -> None:
    if not condition:
        raise CheckFailed(detail)


def expect_status(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        body = response.text[:160].replace("\n", " ") if response.content else ""
        raise CheckFailed(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}, expected {status}" + (f": {body}" if body else "")
        )


def caching(response: httpx.Response, max_age: int) -> str:
    """Check Cache-Control (private, max-age) and ETag; return the ETag."""
    cache = response.headers.get("cache-control", "")
    directives = {d.strip().lower() for d in cache.split(",")}
    expect("private" in directives, f"Cache-Control {cache!r} is not private")
    expect(f"max-age={max_age}" in directives, f"Cache-Control {cache!r} lacks max-age={max_age}")
    etag = response.headers.get("etag", "")
    expect(bool(etag), "no ETag header")
    return etag


class Verifier:
    """Runs the checks in order against one session, printing each verdict as it comes."""

    def __init__(
        self,
        client: httpx.Client,
        token: str,
        *,
        session_id: str | None,
        image: tuple[bytes, str],
        keep: bool = False,
        echo: Callable[[str], None] | None = print,
    ) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {token}"}
        self.session_id = session_id
        self.data, self.name = image
        self.keep = keep
        self.echo = echo
        self.results: list[Check] = []
        self.upload: dict[str, Any] = {}

    def check(self, name: str, body: Callable[[], str]) -> bool:
        try:
            detail, ok = body(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except httpx.HTTPError as exc:
            detail, ok = f"request failed: {type(exc).__name__}: {exc}", False
        result = Check(name, ok, detail)
        self.results.append(result)
        if self.echo:
            self.echo(result.line())
        return ok

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        return self.client.get(url, headers=headers, **kwargs)

    def run(self) -> list[Check]:
        self.mime, self.longest = image_facts(self.data)
        if self.session_id is None and not self.check("session", self.find_session):
            return self.results
        self.check("auth_required", self.auth_required)
        if not self.check("upload", self.upload_image):
            return self.results
        self.check("history_keys", self.history_keys)
        self.check("history_values", self.history_values)
        self.check("file_inline", lambda: self.file(download=False))
        self.check("file_download", lambda: self.file(download=True))
        url = self.upload["url"]
        self.check("file_cache_headers", lambda: self.cache_headers(url, FILE_MAX_AGE))
        self.check("file_not_modified", lambda: self.not_modified(url))
        for size in THUMB_SIZES:
            self.check(f"thumbnail_{size}", lambda size=size: self.thumbnail(size))
        self.check("thumbnail_default", self.thumbnail_default)
        thumb = self.upload["thumbnail_small"]
        self.check("thumbnail_cache_headers", lambda: self.cache_headers(thumb, THUMB_MAX_AGE))
        self.check("thumbnail_not_modified", lambda: self.not_modified(thumb))
        if not self.keep:
            self.check("cleanup", self.cleanup)
        return self.results

    # -- the checks ------------------------------------------------------------------------
    def find_session(self) -> str:
        response = self.get(f"{API}/sessions")
        expect(
            response.status_code == 200,
            f"no --session-id given and GET {API}/sessions answered {response.status_code}: "
            "pass --session-id of a session the user owns",
        )
        body = response.json()
        rows = body.get("sessions", []) if isinstance(body, dict) else body
        ids = [r.get("session_id") for r in rows if isinstance(r, dict) and r.get("session_id")]
        expect(bool(ids), "the user has no session to upload into; pass --session-id")
        self.session_id = str(ids[0])
        return f"using the user's session {self.session_id} (pass --session-id to choose)"

    def auth_required(self) -> str:
        response = self.client.get(f"{API}/sessions/{self.session_id}/history")
        expect_status(response, 403)  # the original's HTTPBearer() answer
        return "history without a token is refused with 403"

    def upload_image(self) -> str:
        response = self.client.post(
            f"{API}/files",
            headers=self.auth,
            data={"session_id": self.session_id, "content": "image rendering deployment check"},
            files=[("files", (self.name, self.data, self.mime))],
        )
        expect_status(response, 201)
        body = response.json()
        uploads = body.get("uploads") if isinstance(body, dict) else None
        expect(isinstance(uploads, list) and len(uploads) == 1, f"uploads in reply: {uploads!r}")
        self.upload = uploads[0]
        self.message_id = str(body.get("id"))
        expect(self.upload.get("is_image") is True, f"is_image is {self.upload.get('is_image')!r}")
        return f"file {self.upload.get('file_id')} in message {self.message_id}"

    def history_entry(self) -> dict[str, Any]:
        response = self.get(f"{API}/sessions/{self.session_id}/history")
        expect_status(response, 200)
        for message in response.json().get("history", []):
            if message.get("id") == self.message_id:
                for entry in message.get("uploads") or []:
                    if entry.get("file_id") == self.upload["file_id"]:
                        return entry
                raise CheckFailed(f"message {self.message_id} lists no upload of our file")
        raise CheckFailed(f"message {self.message_id} is not in the session's history")

    def history_keys(self) -> str:
        keys = set(self.history_entry())
        extra, missing = sorted(keys - UPLOAD_KEYS), sorted(UPLOAD_KEYS - keys)
        expect(
            not extra and not missing,
            f"not the original service's keys: missing {missing}, extra {extra}",
        )
        return f"the {len(keys)} keys of the original service"

    def history_values(self) -> str:
        entry = self.history_entry()
        fid = self.upload["file_id"]
        base = f"{API}/files/{fid}"
        wanted = {
            "name": self.name, "mime": self.mime, "size": len(self.data), "type": "file",
            "is_image": True,
            "url": base, "download_url": f"{base}?download=true",
            "thumbnail_url": f"{base}/thumbnail", "thumbnail_small": f"{base}/thumbnail?size=100",
            "thumbnail_medium": f"{base}/thumbnail?size=300",
        }
        wrong = [
            f"{k}={entry.get(k)!r} (want {v!r})"
            for k, v in wanted.items()
            if entry.get(k) != v
        ]
        expect(not wrong, "; ".join(wrong))
        return f"{self.mime}, {len(self.data)} bytes, URLs as in the guide"

    def file(self, *, download: bool) -> str:
        response = self.get(self.upload["download_url" if download else "url"])
        expect_status(response, 200)
        digest = hashlib.sha256(response.content).hexdigest()
        expect(digest == hashlib.sha256(self.data).hexdigest(), "bytes differ from the upload")
        ctype = response.headers.get("content-type", "").split(";")[0].strip()
        disposition = response.headers.get("content-disposition", "")
        if download:
            expect(disposition.lower().startswith("attachment"), f"served as {disposition!r}")
            expect("filename" in disposition.lower(), f"no filename in {disposition!r}")
        else:
            expect(ctype == self.mime, f"Content-Type {ctype!r}, want {self.mime!r}")
            expect(not disposition.lower().startswith("attachment"), f"served as {disposition!r}")
        return f"{len(response.content)} bytes, {ctype}, {disposition or 'no Content-Disposition'}"

    def cache_headers(self, url: str, max_age: int) -> str:
        response = self.get(url)
        expect_status(response, 200)
        etag = caching(response, max_age)
        return f"Cache-Control {response.headers['cache-control']!r}, ETag {etag}"

    def not_modified(self, url: str) -> str:
        etag = self.get(url).headers.get("etag")
        expect(bool(etag), "no ETag to revalidate with")
        response = self.get(url, headers={"If-None-Match": etag})
        expect_status(response, 304)
        expect(not response.content, "a 304 with a body")
        return f"If-None-Match {etag} answered 304"

    def thumbnail(self, size: int) -> str:
        response = self.get(f"{self.upload['url']}/thumbnail", params={"size": size})
        expect_status(response, 200)
        ctype = response.headers.get("content-type", "")
        expect(ctype.startswith("image/"), f"Content-Type {ctype!r}")
        _, longest = image_facts(response.content)
        want = min(size, self.longest)
        expect(longest == want, f"longest side {longest}px, want {want}px (size {size})")
        return f"{ctype}, longest side {longest}px"

    def thumbnail_default(self) -> str:
        response = self.get(self.upload["thumbnail_url"])
        expect_status(response, 200)
        _, longest = image_facts(response.content)
        allowed = {min(s, self.longest) for s in THUMB_SIZES}
        expect(longest in allowed, f"longest side {longest}px is none of {sorted(allowed)}")
        return f"longest side {longest}px"

    def cleanup(self) -> str:
        response = self.client.delete(self.upload["url"], headers=self.auth)
        expect_status(response, 200)
        expect(self.get(self.upload["url"]).status_code == 404, "the file is still served")
        return f"deleted file {self.upload['file_id']} (its message stays)"


def run_checks(
    client: httpx.Client,
    token: str,
    *,
    session_id: str | None = None,
    image: tuple[bytes, str] | None = None,
    keep: bool = False,
    echo: Callable[[str], None] | None = print,
) -> list[Check]:
    """Every check against ``client`` (its base URL is the service); verdicts in order."""
    verifier = Verifier(
        client, token, session_id=session_id, image=image or sample_image(), keep=keep, echo=echo
    )
    return verifier.run()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app_patch.tools.verify",
        description="Check a deployment of the image-rendering change over HTTP.",
    )
    p.add_argument("--base-url", help="e.g. http://127.0.0.1:8000 (required unless --orphans)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", help="a bearer token of the user")
    auth.add_argument("--jwt-secret", help="the HS256 access secret (with --user): mint a token")
    p.add_argument("--user", help="user id for the minted token")
    p.add_argument("--session-id", help="a session the user owns (default: their first)")
    p.add_argument("--image", type=Path, help="image to upload (default: a generated PNG)")
    p.add_argument("--keep", action="store_true", help="leave the uploaded file in place")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    store = p.add_argument_group(
        "orphans", "instead of the HTTP checks, look in the database for what failed uploads "
        "left: GridFS chunks with no files document, uploads a killed process never finished"
    )
    store.add_argument("--orphans", action="store_true", help="report orphans (exit 1 if any)")
    store.add_argument("--remove-orphans", action="store_true", help="and remove them")
    store.add_argument("--mongodb-url", help="default: MONGODB_URL (the service's)")
    store.add_argument("--database", help="default: MONGODB_DATABASE_NAME or the URL's")
    store.add_argument(
        "--grace", type=int, default=int(ORPHAN_GRACE.total_seconds()),
        help="seconds an upload may still be in progress (default %(default)s)",
    )
    return p


async def _orphans(url: str, database: str, grace_s: int, remove: bool) -> list[str]:
    """One line per finding (and per removal)."""
    client = DRIVER.connect(url, tz_aware=False, serverSelectionTimeoutMS=10_000)
    try:
        store = ChatStore(client[database], DRIVER)
        grace = dt.timedelta(seconds=grace_s)
        lines = []
        cutoff = utcnow() - grace
        pending = await store.db[PENDING].count_documents({"started_at": {"$lte": cutoff}})
        if pending:
            lines.append(f"ORPHAN uploads: {pending} never finished (a process stopped mid-write)")
            if remove:
                lines.append(f"REMOVED uploads: {await store.sweep_abandoned(grace)} undone")
        for bucket in ("fs", THUMB_BUCKET):
            found = await store.orphan_chunks(grace, bucket)
            if not found:
                continue
            chunks = sum(n for n, _ in found.values())
            size = sum(b for _, b in found.values())
            lines.append(
                f"ORPHAN chunks: {chunks} in {bucket}.chunks ({size} bytes) of {len(found)} "
                f"file(s) with no files document"
            )
            if remove:
                gone = await store.remove_orphan_chunks(list(found), bucket)
                lines.append(f"REMOVED chunks: {gone} from {bucket}.chunks")
        return lines
    finally:
        await DRIVER.close(client)


def orphans_main(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    settings_env = os.environ
    url = args.mongodb_url or settings_env.get("MONGODB_URL") or DEFAULT_URL
    database = args.database or urlsplit(url).path.lstrip("/") or (
        settings_env.get("MONGODB_DATABASE_NAME") or DEFAULT_DATABASE
    )
    if args.grace < 0:
        p.error(f"--grace {args.grace}: must be 0 or more seconds")
    try:
        lines = asyncio.run(_orphans(url, database, args.grace, args.remove_orphans))
    except pymongo.errors.PyMongoError as exc:
        print(f"verify: error: cannot read {database!r}: {' '.join(str(exc).split())[:200]}",
              file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    found = [line for line in lines if line.startswith("ORPHAN")]
    if not found:
        print(f"PASS orphans: none in {database!r}")
        return 0
    return 0 if args.remove_orphans else 1


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.orphans or args.remove_orphans:
        return orphans_main(args, p)
    if not args.base_url:
        p.error("--base-url is required (or --orphans to look in the database)")
    if not (args.token or args.jwt_secret):
        p.error("one of --token or --jwt-secret is required")
    if args.jwt_secret and not args.user:
        p.error("--jwt-secret needs --user (the user id to put in the token)")
    if not re.match(r"^https?://", args.base_url):
        p.error(f"--base-url {args.base_url!r} must start with http:// or https://")
    image = None
    if args.image:
        try:
            image = (args.image.read_bytes(), args.image.name)
        except OSError as exc:
            p.error(f"--image {args.image}: {exc.strerror}")
    token = args.token or issue_token(args.user, args.jwt_secret, ttl_seconds=TOKEN_TTL)
    try:
        with httpx.Client(base_url=args.base_url.rstrip("/"), timeout=args.timeout) as client:
            results = run_checks(
                client, token, session_id=args.session_id, image=image, keep=args.keep
            )
    except CheckFailed as exc:  # the --image file itself is unusable
        print(f"FAIL image: {exc}")
        return 1
    failed = sum(not r.ok for r in results)
    print(f"verify: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
