"""Serving stored files over HTTP: headers, conditional and range requests.

Files stream from GridFS chunk by chunk (never read whole). The type sent is the one sniffed
from the file's first bytes; only :data:`app_patch.sniff.INLINE_SAFE_MIMES` may be shown
inline, and active or unknown content (HTML, SVG, XML, octet-stream) always leaves as an
``application/octet-stream`` attachment. Every response forbids MIME sniffing and sandboxes
the document in case a browser navigates to it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import unicodedata
from collections.abc import AsyncIterator
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote

from fastapi import HTTPException
from fastapi.responses import Response, StreamingResponse
from gridfs.errors import CorruptGridFile

from app_patch import sniff
from app_patch.service.driver import GridOut
from app_patch.service.storage import ChatStore, FileRecord

log = logging.getLogger(__name__)
SNIFF_BYTES = 8192
FILE_CACHE_CONTROL = "private, max-age=3600"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    # Responses depend on who asks; a shared cache must never serve one user's file to another.
    "Vary": "Authorization",
}
# Known, script-free types that keep their real Content-Type but only ever as attachments.
ATTACHMENT_TYPES = frozenset(
    {sniff.PDF, sniff.TEXT, sniff.ZIP, sniff.TIFF, sniff.HEIC, sniff.HEIF, sniff.POSTSCRIPT}
)
_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9 ._()+,=@-]")
# C0/C1 controls, line/paragraph separators, and the bidirectional marks, embeddings,
# overrides and isolates: a name like "invoice\u202Egnp.exe" would otherwise *display* as
# "invoiceexe.png" in a download dialog.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_RANGE_SPEC = re.compile(r"\s*([0-9]*)\s*-\s*([0-9]*)\s*", re.ASCII)
# Digits past this many name a byte beyond any file; int() on thousands of them is refused.
_MAX_DIGITS = 30


# -- names and types -----------------------------------------------------------------------


def base_name(name: str) -> str:
    """The last path component, with control and bidi-override characters removed.

    A NUL ends the name, as it does for the C code of many tools and file systems: ``con.png
    \\0.html`` is ``con.png`` to them, and to us.
    """
    name = (name or "").split("\0", 1)[0]
    name = _CONTROL.sub("", name)
    name = re.split(r"[\\/]", name)[-1]
    return name.strip().strip(".").strip()


# The extensions a name may keep when the file is served as each type. ZIP takes the formats
# that are ZIP archives (a .docx is one); text/plain only inert data formats, so a script
# (.js, .bat, .py) never downloads under a name that runs it.
_EXTENSIONS_OF = {
    sniff.JPEG: (".jpg", ".jpeg", ".jpe", ".jfif", ".pjpeg", ".pjp"),
    sniff.PNG: (".png",),
    sniff.GIF: (".gif",),
    sniff.WEBP: (".webp",),
    sniff.TIFF: (".tif", ".tiff"),
    sniff.BMP: (".bmp", ".dib"),
    sniff.ICO: (".ico", ".cur"),
    sniff.AVIF: (".avif",),
    sniff.HEIC: (".heic", ".heics", ".hif"),
    sniff.HEIF: (".heif", ".heifs", ".hif"),
    sniff.PDF: (".pdf",),
    sniff.POSTSCRIPT: (".ps", ".eps", ".ai"),
    sniff.ZIP: (".zip", ".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp", ".epub", ".jar",
                ".apk", ".kmz", ".whl"),
    sniff.TEXT: (".txt", ".text", ".log", ".csv", ".tsv", ".md", ".markdown", ".json",
                 ".yaml", ".yml", ".ini", ".cfg", ".conf", ".toml", ".rst", ".srt", ".vtt"),
}
# Types a browser or desktop renders or runs; the sniffer serves those bytes as octet-stream.
_ACTIVE_EXTENSIONS = frozenset(
    {".html", ".htm", ".xhtml", ".shtml", ".mht", ".mhtml", ".svg", ".svgz", ".xml", ".xsl",
     ".xslt", ".js", ".mjs", ".hta"}
)
_KNOWN_EXTENSIONS = frozenset(e for exts in _EXTENSIONS_OF.values() for e in exts)
_KNOWN_EXTENSIONS |= _ACTIVE_EXTENSIONS
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}$")
# Windows device names: "con.png" cannot be saved there under that name.
_DEVICE = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)


def download_name(name: str, served: str) -> tuple[str, str]:
    """(stem, extension) of the name to send with a file served as ``served``.

    The extension always agrees with the served type, since it is what a desktop uses to open
    the saved file. An extension of a type the sniffer knows, but not the served one, is
    *replaced*: a PNG+HTML polyglot named ``report.html`` and served as ``image/png`` saves as
    ``report.png``, not ``report.html.png``: double extensions are the classic disguise (with
    known extensions hidden, that one displays as ``report.html``), and the name lied about
    the type anyway. An extension the sniffer cannot judge (``.exe``, ``.psd``, none) is kept
    and the served type's appended, except for ``application/octet-stream``, which has no
    extension to agree with (``.bin`` replaces a known type's there).
    """
    served = served.split(";", 1)[0].strip().lower()
    base = base_name(name)
    match = _SUFFIX.search(base)
    ext = match.group(0).lower() if match else ""
    stem = base[: match.start()] if match else base
    if ext and ext in _EXTENSIONS_OF.get(served, ()):
        result = stem, base[len(stem):]
    elif ext in _KNOWN_EXTENSIONS:
        result = stem, sniff.extension_for(served)
    elif served == sniff.OCTET:
        result = base, ""
    else:
        result = base, sniff.extension_for(served)
    return _not_a_device(result[0]), result[1]


def _not_a_device(stem: str) -> str:
    return "_" + stem if _DEVICE.fullmatch(stem) else stem


def ascii_filename(name: str, mime: str) -> str:
    """A plain-ASCII, quote-free file name for the legacy ``filename=`` parameter."""
    stem, ext = download_name(name, mime)
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = _UNSAFE_ASCII.sub("_", stem).strip(" ._")[:150]
    if not stem or set(stem) <= {"_"}:
        stem = "file"
    return _not_a_device(stem) + ext


def content_disposition(kind: str, name: str, mime: str) -> str:
    """``inline``/``attachment`` with an ASCII ``filename`` and an RFC 6266 ``filename*``,
    both with an extension that agrees with ``mime``, the type served (:func:`download_name`)."""
    fallback = ascii_filename(name, mime)
    stem, ext = download_name(name, mime)
    full = stem[: 255 - len(ext)] + ext if stem else fallback
    encoded = quote(full, safe="!#$&+-.^_`|~")  # RFC 5987 attr-char, everything else %XX
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def served_type(sniffed: str) -> tuple[str, bool]:
    """(Content-Type, may be inline) for a sniffed MIME type."""
    if sniffed in sniff.INLINE_SAFE_MIMES:
        return sniffed, True
    if sniffed in ATTACHMENT_TYPES:
        return (sniffed + "; charset=utf-8" if sniffed == sniff.TEXT else sniffed), False
    return sniff.OCTET, False


# -- validators ------------------------------------------------------------------------------


def file_etag(grid_out: GridOut) -> str:
    """A strong ETag from the GridFS id, length and upload time (or md5 when stored)."""
    md5 = grid_out.md5
    if md5:
        return f'"{grid_out._id}-{md5}"'
    uploaded = grid_out.upload_date
    stamp = int(uploaded.timestamp() * 1000) if isinstance(uploaded, dt.datetime) else 0
    return f'"{grid_out._id}-{grid_out.length}-{stamp}"'


def etag_matches(header: str | None, etag: str, *, star: bool = True) -> bool:
    """Weak comparison of ``If-None-Match`` against our ETag (RFC 9110 13.1.2).

    ``*`` matches any current representation; callers that have not yet established that
    one exists pass ``star=False``.
    """
    if not header:
        return False
    if header.strip() == "*":
        return star
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in header.split(","))


def _http_date(when: dt.datetime | None) -> str | None:
    if not isinstance(when, dt.datetime):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return format_datetime(when.astimezone(dt.UTC), usegmt=True)


def _not_modified_since(header: str | None, when: dt.datetime | None) -> bool:
    if not header or not isinstance(when, dt.datetime):
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.replace(microsecond=0) <= since


# -- ranges ------------------------------------------------------------------------------


class Unsatisfiable(Exception):
    """The Range header names no byte of the file (416)."""


def parse_range(header: str | None, length: int) -> tuple[int, int] | None:
    """The single byte range ``(first, last)`` asked for, None to send the whole file.

    Malformed and multi-range headers are ignored (RFC 9110 allows that: a full 200 reply);
    a well-formed range that starts past the end raises :class:`Unsatisfiable`.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    # str.isdigit() accepts "²" and other digits int() refuses: match ASCII digits only.
    match = _RANGE_SPEC.fullmatch(spec)
    if match is None:
        return None
    first_s, last_s = match.groups()
    if first_s == "":
        if last_s == "":
            return None
        suffix = _byte_pos(last_s)
        if suffix == 0 or length == 0:
            raise Unsatisfiable
        return max(0, length - suffix), length - 1
    first = _byte_pos(first_s)
    if last_s and _byte_pos(last_s) < first:
        return None  # syntactically invalid: ignored
    if first >= length:
        raise Unsatisfiable
    last = _byte_pos(last_s) if last_s else length - 1
    return first, min(last, length - 1)


def _byte_pos(digits: str) -> int:
    """An ASCII digit string as an int; absurdly long ones clamp past any file's end."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


# -- streaming ---------------------------------------------------------------------------


async def _stream(
    grid_out: GridOut, head: bytes, first: int, last: int, offset: int = 0
) -> AsyncIterator[bytes]:
    """Yield bytes ``first..last`` (inclusive); ``head`` holds the file's bytes from
    ``offset`` on, already read, and the grid out stands just past them."""
    remaining = last - first + 1
    try:
        if offset <= first < offset + len(head):
            piece = head[first - offset : first - offset + remaining]
            remaining -= len(piece)
            if piece:
                yield piece
        if remaining > 0:
            await grid_out.seek(max(first, offset + len(head)))
            while remaining > 0:
                try:
                    chunk = await grid_out.readchunk()
                except CorruptGridFile:
                    # Headers are out: all that is left is to end the body short.
                    log.warning("file %s: a chunk is missing past byte %d; body cut short",
                                grid_out._id, last - remaining + 1)
                    return
                if not chunk:
                    break
                piece = chunk[:remaining]
                remaining -= len(piece)
                yield piece
    finally:
        await grid_out.close()


def _file_headers(etag: str, grid_out: GridOut) -> dict[str, str]:
    headers = {"ETag": etag, "Cache-Control": FILE_CACHE_CONTROL, **SECURITY_HEADERS}
    modified = _http_date(grid_out.upload_date)
    if modified:
        headers["Last-Modified"] = modified
    return headers


async def file_response(
    store: ChatStore,
    record: FileRecord,
    *,
    download: bool,
    if_none_match: str | None,
    if_modified_since: str | None,
    range_header: str | None,
    if_range: str | None,
    head_only: bool = False,
) -> Response:
    """The response for ``GET /files/{file_id}``: 200, 206, 304, 416, or 404 when the bytes
    are gone and 422 when chunks are missing. ``head_only`` gives the same headers, no body.

    Reads the files document and the requested chunks, nothing else (no count of
    ``fs.chunks``: on FerretDB every chunks query reads the whole collection). The first
    requested chunk is read before any header, so a file whose bytes were deleted meanwhile
    is a 404 and one whose first requested chunk is missing a 422; a gap further on cuts the
    body short (the client sees fewer bytes than Content-Length) with one log line.
    """
    grid_out = await store.open_file(record.oid)
    if grid_out is None:
        raise HTTPException(404, "File not found")
    streaming = False
    try:
        etag = file_etag(grid_out)
        headers = _file_headers(etag, grid_out)
        if etag_matches(if_none_match, etag) or (
            if_none_match is None and _not_modified_since(if_modified_since, grid_out.upload_date)
        ):
            return Response(status_code=304, headers=headers)
        length = int(grid_out.length)
        try:
            head = await grid_out.read(SNIFF_BYTES)
        except CorruptGridFile:
            raise await _gone_or_incomplete(store, record) from None
        content_type, inline_ok = served_type(sniff.sniff_mime(head))
        kind = "inline" if inline_ok and not download else "attachment"
        headers["Content-Disposition"] = content_disposition(kind, record.name, content_type)
        headers["Accept-Ranges"] = "bytes"
        if if_range is not None and if_range.strip() != etag:
            range_header = None  # the client's copy is stale: send the whole file
        try:
            wanted = parse_range(range_header, length)
        except Unsatisfiable:
            headers["Content-Range"] = f"bytes */{length}"
            return Response(status_code=416, headers=headers)
        if wanted is None:
            first, last, status = 0, length - 1, 200
        else:
            (first, last), status = wanted, 206
            headers["Content-Range"] = f"bytes {first}-{last}/{length}"
        headers["Content-Length"] = str(max(0, last - first + 1))
        if length == 0 or head_only:
            return Response(status_code=status, media_type=content_type, headers=headers)
        if first >= len(head):  # the first requested chunk, read before any header
            try:
                await grid_out.seek(first)
                head, offset = await grid_out.readchunk(), first
            except CorruptGridFile:
                raise await _gone_or_incomplete(store, record) from None
        else:
            offset = 0
        response = StreamingResponse(
            _stream(grid_out, head, first, last, offset),
            status_code=status,
            media_type=content_type,
            headers=headers,
        )
        streaming = True  # from here the body iterator closes the stream
        return response
    finally:
        if not streaming:
            await grid_out.close()


async def _gone_or_incomplete(store: ChatStore, record: FileRecord) -> HTTPException:
    """404 when the file was deleted while being read (a concurrent DELETE), else 422."""
    if not await store.file_exists(record.oid):
        return HTTPException(404, "File not found")
    return _incomplete()


#: The detail of the 422 for a file whose GridFS chunks are missing.
INCOMPLETE = "The stored file is incomplete (GridFS chunks missing)"


def _incomplete() -> HTTPException:
    return HTTPException(422, INCOMPLETE)
