"""Thumbnails from untrusted image bytes: a pure image pipeline, no HTTP, no database, no
threads. Limits come in as arguments (``max_pixels``; None is :data:`DEFAULT_MAX_PIXELS`).

The pipeline, cheapest first, so hostile input is refused before it costs anything:

1. Sniff the leading bytes (:mod:`app_patch.sniff`); anything that is not a raster image we
   render is :class:`NotAnImage`. Pillow is then opened with *only* the matching plugin, so
   EPS, PDF, SVG, PSD and friends never reach a decoder and a polyglot is what its magic says.
2. Read the pixel count from the header (``Image.open`` is lazy) and refuse more than
   ``max_pixels`` with :class:`ImageTooLarge` before a single pixel is decoded. ICO and WebP
   headers are parsed here first, since Pillow decodes/allocates those inside ``open``.
3. JPEG: ask libjpeg for a DCT-scaled decode (``draft``) of at least twice the target, so a
   12 MP photo decodes at 1/8 scale. Other formats decode their first frame only.
4. Normalise the mode (palette, 1-bit, 16-bit and float, tRNS transparency), resize with
   LANCZOS after integer box reduction (``reducing_gap``), convert an embedded ICC profile
   (or CMYK) to sRGB on the small image, then apply the EXIF/TIFF/XMP orientation.
5. Encode without any metadata: PNG when the thumbnail has real transparency (alpha < 255
   somewhere; PNG rather than WebP because every client and image tool reads it losslessly),
   otherwise baseline JPEG at quality 85.

Every failure is a :class:`ThumbnailError`; no decoder exception escapes. A decode that
alone would allocate more than :data:`MAX_DECODE_BYTES` is refused before it starts
(:func:`_check_decode`; the app shows its placeholder). Where decodes run, and how many at
once, is :mod:`app_patch.service.decodepool`; caching and HTTP are
:mod:`app_patch.service.thumbservice`.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from PIL import ExifTags, Image, ImageCms

from app_patch import sniff
from app_patch.service.compat import LCMS_NOCACHE, has_transparency_data
from app_patch.service.settings import DEFAULT_MAX_PIXELS

try:  # HEIC/HEIF decode is optional; without it such files are BadImage("unsupported")
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except Exception:  # ImportError, or a wheel whose native library will not load
    HEIF_AVAILABLE = False

THUMB_SIZES = (100, 200, 300)
DEFAULT_SIZE = 200  # what history's thumbnail_url shows: made first
#: Bump whenever the bytes produced for the same input change; thumbnail caches key on it.
PIPELINE_VERSION = 1
MAX_THUMB_SIZE = 2048
JPEG_QUALITY = 85
# Decode/box-reduce down to >= this factor times the target, then LANCZOS the rest of the
# way; 2.0 is indistinguishable from a full LANCZOS in practice (Pillow's own default).
REDUCING_GAP = 2.0
# Rows converted at a time by _shrink (counted at 4 bytes a pixel).
_STRIP_BYTES = 4 * 1024 * 1024
_PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}

_FORMAT_FOR_MIME = {
    sniff.JPEG: "JPEG",
    sniff.PNG: "PNG",
    sniff.GIF: "GIF",
    sniff.WEBP: "WEBP",
    sniff.TIFF: "TIFF",
    sniff.BMP: "BMP",
    sniff.ICO: "ICO",
    sniff.AVIF: "AVIF",
    sniff.HEIC: "HEIF",
    sniff.HEIF: "HEIF",
}
_JPEG_FORMATS = ("JPEG", "MPO")  # Pillow opens multi-picture camera JPEGs as MPO
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


class ThumbnailError(Exception):
    """Base of every failure; ``reason`` is one line fit to show a user."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(str(reason).split())[:300]
        super().__init__(reason)
        self.reason = reason


class NotAnImage(ThumbnailError):
    """The bytes are not a raster image we render (PDF, SVG, HTML, text, empty...)."""


class BadImage(ThumbnailError):
    """An image type we render, but corrupt, truncated or using an unsupported feature."""


class ImageTooLarge(ThumbnailError):
    """More pixels than allowed (a decompression bomb, or just a huge image)."""


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    mime: str
    width: int
    height: int


#: The most one decode may allocate (decoded pixels plus decoder buffers, see
#: :func:`decode_cost`). Past it the image is refused as too large (a placeholder where a
#: thumbnail was promised), so the process stays within a 300 MB budget: a 7071x7071 RGB
#: TIFF in one deflate strip needs 200 MB of pixels plus a 150 MB strip buffer, and libtiff
#: cannot read part of a strip.
MAX_DECODE_BYTES = 224 * 1024 * 1024
# Bytes read to estimate a decode: JPEG markers (EXIF with its preview, ICC) come first.
ESTIMATE_HEAD = 256 * 1024


def bytes_per_pixel(mode: str) -> int:
    """What Pillow stores per pixel in ``mode`` (RGB is padded to 4, 16-bit grey is 2)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def decode_cost(img: Image.Image, *, rendering: bool = True) -> int:
    """Bytes that decoding the (opened, possibly drafted) ``img`` allocates at its peak.

    The image in the mode Pillow decodes to, plus the copies some decoders go through
    (libwebp's canvas and frame, the AVIF/HEIF codec's buffer, libtiff's strip buffer),
    plus, when ``rendering``, _shrink's strips.
    """
    width, height = img.size
    nbytes = width * height * bytes_per_pixel(img.mode)
    extra = min(nbytes, 3 * _STRIP_BYTES) if rendering else 0
    if img.format == "WEBP":
        return 4 * nbytes + extra
    if img.format in ("AVIF", "HEIF"):
        return 2 * nbytes + extra
    if img.format == "TIFF" and img.tile and img.tile[0][0] == "libtiff":
        tags = getattr(img, "tag_v2", {})
        bits = tags.get(258, (8,))
        row_bytes = -(-width * sum(bits if isinstance(bits, tuple) else (bits,)) // 8)
        if 322 in tags and 323 in tags:  # tiled: one tile at a time
            extra += int(tags[323]) * row_bytes * int(tags[322]) // width
        else:
            extra += min(height, int(tags.get(278, height))) * row_bytes
    return nbytes + extra


def estimate_cost(
    head: bytes,
    size: int | None = None,
    *,
    source_bytes: int | None = None,
    max_pixels: int | None = None,
    rendering: bool | None = None,
) -> int:
    """Bytes a thumbnail of ``size`` (None: :func:`verify_image`) of these bytes will hold:
    the source plus :func:`decode_cost`, read from the headers in ``head`` without decoding.
    ``rendering`` (default: whether a size is given) counts the shrink's strips too.

    ``head`` is the whole file or its first ESTIMATE_HEAD bytes; ``source_bytes`` the whole
    length when ``head`` is shorter. Headers that cannot be read count as the largest image
    allowed; what will be refused before any decode (not an image, too many pixels) as none.
    """
    limit = _limit(max_pixels)
    total = len(head) if source_bytes is None else source_bytes
    mime = sniff.sniff_mime(head[:8192])
    try:
        if mime == sniff.ICO:  # Pillow decodes ICO frames inside open: parse it ourselves
            width, height = _ico_largest_frame(io.BytesIO(head))
            return total + (width * height * 4 if 0 < width * height <= limit else 0)
        if mime == sniff.WEBP:  # and libwebp allocates its canvas inside open
            webp = _webp_size(head)
            if webp is None or webp[0] * webp[1] > limit:
                return total + (0 if webp else limit * 16)
            return total + webp[0] * webp[1] * 16
        with open_image(head, size, max_pixels=limit) as img:
            if size is None and img.format in _JPEG_FORMATS:
                img.draft(None, (1, 1))  # as verify_image decodes
            rendering = size is not None if rendering is None else rendering
            return total + decode_cost(img, rendering=rendering)
    except (NotAnImage, ImageTooLarge):
        return total
    except Exception:  # noqa: BLE001 - headers beyond the head, or broken: assume the worst
        if len(head) >= total:  # the whole file: it will fail to open, cheaply
            return total
        return total + limit * 4


# --- public API --------------------------------------------------------------------------


def make_thumbnail(
    data: bytes | BinaryIO, size: int, *, max_pixels: int | None = None
) -> Thumbnail:
    """A thumbnail whose longest side is ``min(size, original longest side)``.

    ``max_pixels`` None is :data:`DEFAULT_MAX_PIXELS` (50 million). Raises :class:`NotAnImage`, :class:`BadImage` or :class:`ImageTooLarge`;
    ``ValueError`` only for a ``size`` outside 1..2048 (a caller bug, not an image problem).
    """
    _check_size(size)
    limit, (fp, head) = _limit(max_pixels), _stream(data)
    with _mapped_errors():
        img, full_size = _open_checked(fp, head, limit)
        with img:
            target = _fit(full_size, size)
            _draft(img, target)
            _check_decode(img)
            img.load()
            return _render(img, target)


def _check_decode(img: Image.Image, *, rendering: bool = True) -> None:
    """Refuse a decode that alone would pass :data:`MAX_DECODE_BYTES` (before it starts)."""
    cost = decode_cost(img, rendering=rendering)
    if cost > MAX_DECODE_BYTES:
        raise ImageTooLarge(
            f"{img.format or 'image'} {img.size[0]}x{img.size[1]} needs {cost // 2**20} MiB to "
            f"decode, over the {MAX_DECODE_BYTES // 2**20} MiB a decode may take"
        )


def make_thumbnails(
    data: bytes, sizes: Iterable[int], *, max_pixels: int | None = None
) -> dict[int, Thumbnail]:
    """``{size: make_thumbnail(data, size)}``, decoding once per distinct decode: once for
    all sizes of most formats, once per DCT scale for JPEG. Raises as make_thumbnail."""
    sizes = list(dict.fromkeys(sizes))
    for size in sizes:
        _check_size(size)
    limit = _limit(max_pixels)
    decoded: dict[tuple[tuple[int, int], str], Image.Image] = {}
    out = {}
    try:
        with _mapped_errors():
            for size in sizes:
                img, full_size = _open_checked(*_stream(data), limit)
                target = _fit(full_size, size)
                _draft(img, target)
                shared = decoded.get((img.size, img.mode))
                if shared is None:
                    _check_decode(img)
                    img.load()
                    decoded[(img.size, img.mode)] = shared = img
                else:
                    img.close()
                out[size] = _render(shared, target)
    finally:
        for img in decoded.values():
            img.close()
    return out


def verify_and_render(
    data: bytes, sizes: Iterable[int], *, max_pixels: int | None = None
) -> tuple[str, int, int, dict[int, Thumbnail]]:
    """:func:`verify_image`, plus the thumbnails its decode allows.

    Every size for most formats. A JPEG is decoded at the DCT scale of the first size
    (rather than verify_image's 1/8: the whole entropy stream is read either way, so
    corruption is caught the same), and renders the sizes that share that scale. Each
    thumbnail equals make_thumbnail's; one that fails to render is left out (it never fails
    the verification).
    """
    sizes = list(sizes)
    limit, (fp, head) = _limit(max_pixels), _stream(data)
    with _mapped_errors():
        img, full_size = _open_checked(fp, head, limit)
        with img:
            if img.format in _JPEG_FORMATS:
                if sizes:
                    _draft(img, _fit(full_size, sizes[0]))
                else:
                    img.draft(None, (1, 1))
            _check_decode(img, rendering=bool(sizes))
            img.load()
            width, height = full_size
            if _orientation(img) >= 5:
                width, height = height, width
            mime, thumbs = _mime_of(img), {}
            for size in sizes:
                try:
                    if img.format in _JPEG_FORMATS:
                        with open_image(data, size, max_pixels=limit) as alone:
                            if (alone.size, alone.mode) != (img.size, img.mode):
                                continue
                    thumbs[size] = _render(img, _fit(full_size, size))
                except Exception:  # noqa: BLE001, S112 - a thumbnail later, not a refusal now
                    continue
            return mime, width, height, thumbs


def verify_image(data: bytes | BinaryIO, *, max_pixels: int | None = None) -> tuple[str, int, int]:
    """``(mime, width, height)`` once the first frame has decoded; raises like make_thumbnail.

    JPEG decodes at 1/8 scale (the whole entropy stream is still read, so truncation and
    corruption are caught at a fraction of the cost). Width and height are as displayed,
    i.e. swapped for EXIF orientations 5-8.
    """
    limit, (fp, head) = _limit(max_pixels), _stream(data)
    with _mapped_errors():
        img, (width, height) = _open_checked(fp, head, limit)
        with img:
            if img.format in _JPEG_FORMATS:
                img.draft(None, (1, 1))
            _check_decode(img, rendering=False)
            img.load()
            if _orientation(img) >= 5:
                width, height = height, width
            return _mime_of(img), width, height


def probe(data: bytes | BinaryIO, *, max_pixels: int | None = None) -> dict:
    """Header facts without decoding: mime, format, width, height (as displayed), mode, animated."""
    limit, (fp, head) = _limit(max_pixels), _stream(data)
    with _mapped_errors():
        img, (width, height) = _open_checked(fp, head, limit)
        with img:
            # The base-class getexif never triggers a decode (PNG's override would). Pillow
            # already reports an oriented TIFF's size as displayed (it rotates on load).
            if img.format != "TIFF" and _orientation(img, Image.Image.getexif) >= 5:
                width, height = height, width
            return {
                "mime": _mime_of(img),
                "format": img.format,
                "width": width,
                "height": height,
                "mode": img.mode,
                "animated": bool(getattr(img, "is_animated", False)),
            }


def open_image(
    data: bytes | BinaryIO, size: int | None = None, *, max_pixels: int | None = None
) -> Image.Image:
    """The lazily opened, bomb-checked image, drafted for a ``size`` thumbnail if given.

    Nothing is decoded yet; ``.size`` shows what decoding will allocate (a 4000x3000 JPEG
    drafted for 200 px reports 500x375). This is exactly the image make_thumbnail decodes.
    """
    if size is not None:
        _check_size(size)
    limit, (fp, head) = _limit(max_pixels), _stream(data)
    with _mapped_errors():
        img, full_size = _open_checked(fp, head, limit)
        if size is not None:
            _draft(img, _fit(full_size, size))
        return img


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Turn whatever a decoder raises into the matching ThumbnailError."""
    try:
        yield
    except ThumbnailError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image refused as a decompression bomb: {exc}") from exc
    except MemoryError as exc:
        raise ImageTooLarge("not enough memory to decode this image") from exc
    except Exception as exc:
        raise BadImage(f"cannot decode the image ({type(exc).__name__}: {exc})") from exc


def _check_size(size: int) -> None:
    if type(size) is not int or not 1 <= size <= MAX_THUMB_SIZE:
        raise ValueError(
            f"thumbnail size must be an integer from 1 to {MAX_THUMB_SIZE}, got {size!r}"
        )


def _limit(max_pixels: int | None) -> int:
    if max_pixels is None:
        return DEFAULT_MAX_PIXELS
    if type(max_pixels) is not int or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    return max_pixels


def _stream(data: bytes | BinaryIO) -> tuple[BinaryIO, bytes]:
    """A seekable stream over the whole image and its first bytes for sniffing.

    Storage errors while reading (e.g. a GridFS file with missing chunks) propagate as they
    are: they are not image problems and the web layer answers them differently.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        fp: BinaryIO = io.BytesIO(data)
    elif hasattr(data, "read"):
        fp = data
        try:
            fp.seek(0)
        except (AttributeError, OSError, ValueError):  # not seekable: Pillow needs to seek
            fp = io.BytesIO(data.read())
    else:
        raise TypeError(f"image data must be bytes or a binary file, not {type(data).__name__}")
    head = fp.read(8192)
    fp.seek(0)
    return fp, head


def _open_checked(
    fp: BinaryIO, head: bytes, max_pixels: int
) -> tuple[Image.Image, tuple[int, int]]:
    """Sniff, open with the one matching plugin, refuse bombs; returns (image, header size)."""
    mime = sniff.sniff_mime(head)
    if mime not in sniff.IMAGE_MIMES:
        raise NotAnImage("the file is empty" if not head else f"not an image: the bytes are {mime}")
    if mime in (sniff.HEIC, sniff.HEIF) and not HEIF_AVAILABLE:
        raise BadImage(f"{mime} is not supported here: install pillow-heif to render it")
    fmt = _FORMAT_FOR_MIME[mime]
    # Two plugins allocate inside Image.open: ICO decodes its largest frame (whose embedded
    # PNG/DIB declares its own size) and libwebp allocates the canvas. Check those first.
    if mime == sniff.ICO:
        _check_pixels(fmt, _ico_largest_frame(fp), max_pixels)
    elif mime == sniff.WEBP and (webp_size := _webp_size(head)):
        _check_pixels(fmt, webp_size, max_pixels)
    try:
        img = Image.open(fp, formats=[fmt])
    except Image.DecompressionBombError:
        raise
    except Image.UnidentifiedImageError as exc:  # its message names the stream object
        raise BadImage(f"not a readable {fmt} file: the header is corrupt") from exc
    except Exception as exc:
        raise BadImage(f"not a readable {fmt} file ({type(exc).__name__}: {exc})") from exc
    try:
        _check_pixels(fmt, img.size, max_pixels)
    except ThumbnailError:
        img.close()
        raise
    return img, img.size


def _check_pixels(fmt: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise BadImage(f"the {fmt} header declares an empty {width}x{height} image")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} {fmt} has {width * height:,} pixels,"
            f" more than the {max_pixels:,} allowed"
        )


def _ico_largest_frame(fp: BinaryIO) -> tuple[int, int]:
    """The largest size any ICO frame declares (directory, embedded PNG IHDR or DIB header)."""
    fp.seek(0)
    header = fp.read(6)
    count = int.from_bytes(header[4:6], "little")
    if count > 1024:  # Pillow would read them all; real icons have a handful
        raise BadImage(f"implausible ICO directory with {count} entries")
    directory = fp.read(16 * count)
    largest = (0, 0)
    for i in range(0, len(directory) - 15, 16):
        entry = directory[i : i + 16]
        sizes = [(entry[0] or 256, entry[1] or 256)]
        fp.seek(int.from_bytes(entry[12:16], "little"))
        frame = fp.read(24)
        if frame[:8] == b"\x89PNG\r\n\x1a\n" and len(frame) >= 24:
            sizes.append(struct.unpack(">II", frame[16:24]))
        elif frame[:4] == b"\x0c\x00\x00\x00" and len(frame) >= 8:  # OS/2 core header
            width, height = struct.unpack("<HH", frame[4:8])
            sizes.append((width, height // 2))
        elif len(frame) >= 12:  # DIB: the height covers the XOR and AND masks
            width, height = struct.unpack("<ii", frame[4:12])
            sizes.append((abs(width), abs(height) // 2))
        largest = max([largest, *sizes], key=lambda s: s[0] * s[1])
    fp.seek(0)
    return largest


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """Canvas size from a WebP's first chunk header, without decoding."""
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        return width, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        return (
            int.from_bytes(head[26:28], "little") & 0x3FFF,
            int.from_bytes(head[28:30], "little") & 0x3FFF,
        )
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _fit(full: tuple[int, int], size: int) -> tuple[int, int]:
    """Target size: longest side min(size, longest), aspect kept, never below 1 px."""
    width, height = full
    if max(width, height) <= size:
        return width, height
    if width >= height:
        return size, max(1, int(height * size / width + 0.5))
    return max(1, int(width * size / height + 0.5)), size


def _draft(img: Image.Image, target: tuple[int, int]) -> None:
    """For JPEG, decode at the smallest DCT scale still >= REDUCING_GAP x target."""
    if img.format in _JPEG_FORMATS and target != img.size:
        box = (max(1, int(target[0] * REDUCING_GAP)), max(1, int(target[1] * REDUCING_GAP)))
        img.draft("RGB", box)


def _orientation(img: Image.Image, getexif=None) -> int:
    """EXIF orientation 1-8 (from EXIF, the TIFF tag or XMP); 1 if absent or malformed."""
    try:
        exif = getexif(img) if getexif else img.getexif()
        value = exif.get(ExifTags.Base.Orientation)
    except Exception:  # malformed EXIF must not cost the user their thumbnail
        return 1
    return value if type(value) is int and 1 <= value <= 8 else 1


def _mime_of(img: Image.Image) -> str:
    fmt = img.format or ""
    return (
        sniff.JPEG
        if fmt in _JPEG_FORMATS
        else next((m for m, f in _FORMAT_FOR_MIME.items() if f == fmt), sniff.OCTET)
    )


def _render(img: Image.Image, target: tuple[int, int]) -> Thumbnail:
    orientation = _orientation(img)
    icc = img.info.get("icc_profile")
    out = _shrink(img, target)
    out = _to_srgb(out, icc)
    if orientation in _TRANSPOSE:
        out = out.transpose(_TRANSPOSE[orientation])
    return _encode(out)


def _shrink(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    """``_normalise_mode(img).resize(target, LANCZOS, reducing_gap=REDUCING_GAP)``, the same
    pixels, without ever converting the full-size image.

    Pillow's reducing_gap first box-reduces by integer factors, but a mode conversion (16-bit
    to 8-bit grey, palette to RGB) or alpha premultiplication would run on the whole image
    before it: 4 bytes a pixel more, twice over. Here each strip of rows is converted and
    reduced on its own (box reduction is local, so the strips join exactly), and only the
    small result is resized. Memory: the decoded image plus one strip.
    """
    width, height = img.size
    fx = int(width / target[0] / REDUCING_GAP) or 1
    fy = int(height / target[1] / REDUCING_GAP) or 1
    if fx == 1 and fy == 1:
        out = _normalise_mode(img)
        return out if out.size == target else out.resize(target, Image.Resampling.LANCZOS)
    extrema = img.getextrema() if _is_wide_grey(img.mode) else None
    rows = max(1, _STRIP_BYTES // (width * 4) // fy) * fy  # whole reduction boxes per strip
    reduced = alpha = None
    for top in range(0, height, rows):
        strip = _normalise_mode(img.crop((0, top, width, min(height, top + rows))), extrema)
        if alpha is None:
            alpha = _PREMULTIPLIED.get(strip.mode)
        if alpha:  # Pillow resamples alpha images premultiplied; so must the strips
            strip = strip.convert(alpha)
        part = strip.reduce((fx, fy))
        if reduced is None:
            reduced = Image.new(part.mode, (-(-width // fx), -(-height // fy)))
        reduced.paste(part, (0, top // fy))
    assert reduced is not None
    box = (0.0, 0.0, width / fx, height / fy)
    out = reduced.resize(target, Image.Resampling.LANCZOS, box=box)
    return out.convert(alpha[:-1] + "A") if alpha else out


def _is_wide_grey(mode: str) -> bool:
    return mode.startswith("I") or mode == "F"


def _normalise_mode(img: Image.Image, extrema: tuple | None = None) -> Image.Image:
    """One of L, LA, RGB, RGBA or CMYK (kept for the ICC step), transparency preserved.

    ``extrema`` (16/32-bit and float grey only) are those of the whole image, when ``img``
    is a strip of it: every strip must scale the same way.
    """
    mode = img.mode
    transparent = has_transparency_data(img)
    if mode in ("RGB", "L"):
        return img.convert(mode + "A" if mode == "L" else "RGBA") if transparent else img
    if mode in ("RGBA", "LA", "CMYK"):
        return img
    if mode in ("P", "PA", "RGBa", "RGBX"):
        return img.convert("RGBA" if transparent else "RGB")
    if mode in ("1", "La"):
        return img.convert("LA" if transparent else "L")
    if _is_wide_grey(mode):
        return _to_8bit_gray(img, extrema)
    return img.convert("RGB")  # YCbCr, LAB, HSV


def _to_8bit_gray(img: Image.Image, extrema: tuple | None = None) -> Image.Image:
    """16-bit, 32-bit and float grey to 8 bits by scaling, not clipping (Pillow clips)."""
    low, high = extrema or img.getextrema()
    if img.mode != "F":
        img = img.convert("I")
    if img.mode == "F" and 0 <= low and high <= 1.0:
        scale, offset = 255.0, 0.0  # normalised float data
    elif 0 <= low and high <= 255:
        scale, offset = 1.0, 0.0
    elif 0 <= low and high <= 65535:
        scale, offset = 1 / 257, 0.0  # 16-bit: 65535 -> 255
    else:
        scale = 255.0 / (high - low)
        offset = -low * scale
    return img.point(lambda v: v * scale + offset).convert("L")


@functools.lru_cache(maxsize=16)
def _srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    # NOCACHE: the transform is shared by the worker threads; lcms's 1-pixel cache is not.
    return ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)),
        _SRGB,
        mode,
        "RGBA" if mode == "RGBA" else "RGB",
        flags=LCMS_NOCACHE,
    )


def _to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Embedded ICC profile to sRGB on the small image; CMYK without one converts naively."""
    if icc and img.mode in ("RGB", "RGBA", "CMYK"):
        try:
            return ImageCms.applyTransform(img, _srgb_transform(icc, img.mode))
        except Exception:  # a broken profile or one for another colour space: ignore it
            pass
    return img.convert("RGB") if img.mode == "CMYK" else img


def _encode(img: Image.Image) -> Thumbnail:
    """PNG if any pixel is not fully opaque, else JPEG; never any metadata."""
    if img.mode in ("RGBA", "LA") and img.getchannel("A").getextrema()[0] < 255:
        fmt, mime, params = "PNG", sniff.PNG, {"compress_level": 6}
    else:
        if img.mode in ("RGBA", "LA"):
            img = img.convert(img.mode[:-1])
        fmt, mime = "JPEG", sniff.JPEG
        params = {"quality": JPEG_QUALITY, "optimize": False, "progressive": False}
    if img.info:  # encoders copy comments/ICC/XMP from info: start from a clean copy
        img = img.copy()
        img.info = {}
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return Thumbnail(buf.getvalue(), mime, img.width, img.height)
