"""What a file really is, decided from its first bytes (pure: no I/O, no Pillow).

Clients label uploads however they like (a PNG as ``image/jpeg``, a PDF as ``image/png``,
anything as ``application/octet-stream``), so the service never trusts the label: it sniffs.
Rules, in order:

1. Binary magic at offset 0 decides (JPEG, PNG, GIF, WebP, TIFF, BMP, ICO, ISO-BMFF
   AVIF/HEIC/HEIF, PDF, PostScript, ZIP). A polyglot is what its leading magic says: PNG
   bytes followed by HTML are a PNG.
2. ``%PDF-`` within the first 1024 bytes is a PDF (Acrobat accepts that much leading junk).
3. Markup, after an optional BOM, whitespace, ``<?xml ...?>``, comments and a doctype: a root
   ``<svg>`` is SVG, an HTML tag (the WHATWG sniffing list plus a few) is HTML, any other root
   after an XML declaration is XML.
4. Valid UTF-8 with none of the WHATWG "binary data" control bytes is ``text/plain``.
5. Everything else, including empty input, is ``application/octet-stream``.
"""

from __future__ import annotations

import codecs
import re

JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
WEBP = "image/webp"
TIFF = "image/tiff"
BMP = "image/bmp"
ICO = "image/x-icon"
AVIF = "image/avif"
HEIC = "image/heic"
HEIF = "image/heif"  # a HEIF container whose brands name no codec we know (mif1/msf1 only)
PDF = "application/pdf"
POSTSCRIPT = "application/postscript"
SVG = "image/svg+xml"
HTML = "text/html"
XML = "application/xml"
ZIP = "application/zip"
TEXT = "text/plain"
OCTET = "application/octet-stream"

#: Raster types the thumbnailer accepts (HEIC/HEIF need pillow-heif at run time).
IMAGE_MIMES: frozenset[str] = frozenset({JPEG, PNG, GIF, WEBP, TIFF, BMP, ICO, AVIF, HEIC, HEIF})

#: Types that may be served ``Content-Disposition: inline`` (always with the sniffed type and
#: ``X-Content-Type-Options: nosniff``). Only raster formats every current browser renders in
#: ``<img>``; none of them can carry script. TIFF, HEIC and HEIF are left out: Chrome and
#: Firefox do not render them (they would download anyway) and they are large, exploit-prone
#: parser surfaces, so they go out as attachments and are shown through their thumbnails.
#: SVG, HTML and XML can run script in the service's origin and are never inline.
INLINE_SAFE_MIMES: frozenset[str] = frozenset({JPEG, PNG, GIF, WEBP, BMP, ICO, AVIF})

_ALIASES = {
    "image/jpg": JPEG,
    "image/pjpeg": JPEG,
    "image/x-png": PNG,
    "image/vnd.microsoft.icon": ICO,
    "image/ico": ICO,
    "image/icon": ICO,
    "image/x-ms-bmp": BMP,
    "image/x-bmp": BMP,
    "image/heic-sequence": HEIC,
    "image/heif-sequence": HEIF,
    "image/tif": TIFF,
    "text/xml": XML,
    "application/x-zip-compressed": ZIP,
    "application/x-pdf": PDF,
}

_EXTENSIONS = {
    JPEG: ".jpg",
    PNG: ".png",
    GIF: ".gif",
    WEBP: ".webp",
    TIFF: ".tiff",
    BMP: ".bmp",
    ICO: ".ico",
    AVIF: ".avif",
    HEIC: ".heic",
    HEIF: ".heif",
    PDF: ".pdf",
    POSTSCRIPT: ".ps",
    SVG: ".svg",
    HTML: ".html",
    XML: ".xml",
    ZIP: ".zip",
    TEXT: ".txt",
}

_SCAN = 8192  # bytes examined; callers pass >= 4096 when the file is that long

_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

# WHATWG "binary data byte": control characters that never occur in text.
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")
# Tags that make a document HTML: the WHATWG sniffing list plus other script-capable roots.
_HTML_TAGS = frozenset(
    b"html head script iframe h1 div font table a style title b body br p "
    b"meta link img form object embed base frameset".split()
)
_TAG = re.compile(rb"<([a-z][a-z0-9:._-]*)(?=[\s/>]|$)")
_WS = b" \t\r\n\f"


def normalise_mime(mime: str | None) -> str:
    """Lower-case ``mime``, drop parameters and map aliases (``vnd.microsoft.icon`` → x-icon)."""
    if not mime:
        return OCTET
    base = mime.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base) or OCTET


def is_image_mime(mime: str | None) -> bool:
    """True for the raster types we thumbnail (aliases accepted, parameters ignored)."""
    return normalise_mime(mime) in IMAGE_MIMES


def extension_for(mime: str | None) -> str:
    """File extension with its dot for ``mime`` (``.jpg``, ``.ico``); ``.bin`` if unknown."""
    return _EXTENSIONS.get(normalise_mime(mime), ".bin")


def sniff_mime(head: bytes) -> str:
    """The true MIME type of a file whose first bytes are ``head`` (see the module rules)."""
    b = bytes(head[:_SCAN])
    if not b:
        return OCTET
    magic = _binary_magic(b)
    if magic:
        return magic
    if b"%PDF-" in b[:1024]:
        return PDF
    markup = _markup(b)
    if markup:
        return markup
    return TEXT if _is_utf8_text(b) else OCTET


def _binary_magic(b: bytes) -> str | None:
    if b.startswith(b"\xff\xd8\xff"):
        return JPEG
    if b.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if b[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
        return WEBP
    if b[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic and BigTIFF
        return TIFF
    if b[:2] == b"BM" and len(b) >= 18 and int.from_bytes(b[14:18], "little") in _BMP_DIB_SIZES:
        return BMP
    if _is_ico(b):
        return ICO
    if b[4:8] == b"ftyp":
        return _isobmff(b)
    if b.startswith(b"%PDF-"):
        return PDF
    if b.startswith(b"%!PS") or b[:4] == b"\xc5\xd0\xd3\xc6":  # PostScript / DOS EPS binary
        return POSTSCRIPT
    if b[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return ZIP
    return None


def _is_ico(b: bytes) -> bool:
    # The 4-byte magic alone is common in binary junk; also require a sane first entry.
    if b[:4] != b"\x00\x00\x01\x00" or len(b) < 22:
        return False
    count = int.from_bytes(b[4:6], "little")
    planes = int.from_bytes(b[10:12], "little")
    return count >= 1 and b[9] == 0 and planes in (0, 1)


def _isobmff(b: bytes) -> str:
    """AVIF vs HEIC vs plain HEIF from the ``ftyp`` box brands (major brand first)."""
    box_end = min(int.from_bytes(b[:4], "big"), len(b))
    brands = [b[8:12]] + [b[i : i + 4] for i in range(16, box_end - 3, 4)]
    for brand in brands:
        if brand in _AVIF_BRANDS:
            return AVIF
        if brand in _HEIC_BRANDS:
            return HEIC
    if any(brand in _HEIF_BRANDS for brand in brands):
        return HEIF
    return OCTET  # MP4, QuickTime, JPEG 2000 part 2 ...: nothing we render


def _markup(b: bytes) -> str | None:
    """SVG / HTML / XML from the prolog and the root tag; None if it does not look like markup."""
    s = b[3:] if b.startswith(codecs.BOM_UTF8) else b
    s = s.lstrip(_WS)[:4096].lower()
    if not s.startswith(b"<"):
        return None
    saw_xml = saw_comment = False
    while True:
        if s.startswith(b"<?xml"):
            saw_xml, end = True, s.find(b"?>")
            skip = 2
        elif s.startswith(b"<!--"):
            saw_comment, end = True, s.find(b"-->", 4)
            skip = 3
        elif s.startswith(b"<!doctype"):
            end, skip = s.find(b">"), 1
            doctype = s[9 : end if end >= 0 else None].strip()
            if b"svg" in doctype:
                return SVG
            if doctype.startswith(b"html"):
                return HTML
        else:
            break
        if end < 0:  # prolog runs past what we can see
            return XML if saw_xml else (HTML if saw_comment else None)
        s = s[end + skip :].lstrip(_WS)
    match = _TAG.match(s)
    if match:
        local = match.group(1).rsplit(b":", 1)[-1]
        if local == b"svg":
            return SVG
        if local in _HTML_TAGS:
            return HTML
    if saw_xml:
        return XML
    return HTML if saw_comment else None


def _is_utf8_text(b: bytes) -> bool:
    if _BINARY_BYTES.search(b):
        return False
    try:
        # final=False: the head may end in the middle of a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(b, final=False)
    except UnicodeDecodeError:
        return False
    return True
