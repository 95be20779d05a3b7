"""A corpus of hostile and awkward image inputs, built in memory in well under a second.

``hostile_corpus()`` maps a name to ``(bytes, expected outcome)``, the outcome being what
:func:`app_patch.service.thumbnails.make_thumbnail` must do with them:

- ``thumbnail``: produce a thumbnail (awkward but legitimate: CMYK, 16-bit, EXIF-rotated...)
- ``not_image``: refuse with NotAnImage (HTTP 415): HTML, SVG with script, PDF, EPS, empty...
- ``bad_image``: refuse with BadImage (422): truncated or corrupt data behind a valid magic
- ``too_large``: refuse with ImageTooLarge (422) before decoding: decompression bombs

Outcomes hold for any pixel limit from ``LIMIT_RANGE[0]`` to ``LIMIT_RANGE[1]``: the largest
legitimate entry has 10,000 pixels and the smallest bomb declares 64 million.
Everything is deterministic (fixed seeds), so the same name always gives the same bytes.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zipfile
import zlib

from PIL import Image, ImageDraw

try:
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF = True
except Exception:  # optional dependency
    _HEIF = False

OUTCOMES = ("thumbnail", "not_image", "bad_image", "too_large")
LIMIT_RANGE = (100_000, 64_000_000 - 1)


def hostile_corpus() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected outcome); a fresh dict each call (the bytes are shared)."""
    return dict(_build())


@functools.lru_cache(maxsize=1)
def _build() -> tuple[tuple[str, tuple[bytes, str]], ...]:
    entries = {}
    entries.update(_legitimate())
    entries.update(_not_images())
    entries.update(_broken())
    entries.update(_bombs())
    return tuple(entries.items())


# --- helpers -----------------------------------------------------------------------------


def _save(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _noise(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """A gradient with noise: compresses like a photo, so truncation lands mid-scan."""
    rng = random.Random(seed)
    bands = len(mode)
    noise = Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * bands))
    gradient = Image.linear_gradient("L").resize(size).convert(mode)
    return Image.blend(gradient, noise, 0.5)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_raw(width: int, height: int, idat: bytes, color_type: int = 2) -> bytes:
    """A PNG built chunk by chunk (valid CRCs), so header and data can lie independently."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


# --- the four groups ---------------------------------------------------------------------


def _legitimate() -> dict[str, tuple[bytes, str]]:
    ok = "thumbnail"
    out: dict[str, tuple[bytes, str]] = {}
    photo = _noise((96, 64), seed=1)
    out["jpeg_rgb"] = (_save(photo, "JPEG", quality=90), ok)
    out["jpeg_grayscale"] = (_save(photo.convert("L"), "JPEG"), ok)
    out["jpeg_1x1"] = (_save(Image.new("RGB", (1, 1), (200, 30, 30)), "JPEG"), ok)
    out["jpeg_cmyk"] = (_save(_noise((80, 60), seed=2, mode="CMYK"), "JPEG"), ok)

    # 80x40, red left half, blue right half, tagged "rotate 90 degrees clockwise to display":
    # the thumbnail must be portrait with red on top.
    rotated = Image.new("RGB", (80, 40), (220, 0, 0))
    ImageDraw.Draw(rotated).rectangle((40, 0, 79, 39), fill=(0, 0, 220))
    exif = Image.Exif()
    exif[0x0112] = 6
    out["jpeg_exif_rotated"] = (_save(rotated, "JPEG", exif=exif.tobytes()), ok)
    out["jpeg_bad_exif"] = (_save(photo, "JPEG", exif=b"Exif\x00\x00MM\x00*garbage"), ok)

    rgba = Image.new("RGBA", (60, 40), (0, 120, 0, 0))
    ImageDraw.Draw(rgba).ellipse((5, 5, 55, 35), fill=(0, 160, 0, 255))
    out["png_rgba_transparent"] = (_save(rgba, "PNG"), ok)
    out["png_rgba_opaque"] = (_save(photo.convert("RGBA"), "PNG"), ok)
    out["png_1x1"] = (_save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), ok)
    sixteen = Image.frombytes(
        "I;16", (64, 48), b"".join(struct.pack("<H", (x * 1024) % 65536) for x in range(64 * 48))
    )
    out["png_16bit_gray"] = (_save(sixteen, "PNG"), ok)
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([255, 255, 255, 200, 0, 0] + [0] * 762)
    ImageDraw.Draw(palette).rectangle((10, 10, 29, 29), fill=1)
    out["png_palette_transparent"] = (_save(palette, "PNG", transparency=0), ok)
    la = Image.new("LA", (30, 30), (128, 0))
    ImageDraw.Draw(la).rectangle((5, 5, 24, 24), fill=(200, 255))
    out["png_la_transparent"] = (_save(la, "PNG"), ok)
    keyed = Image.new("RGB", (30, 30), (0, 0, 255))
    ImageDraw.Draw(keyed).rectangle((5, 5, 24, 24), fill=(255, 255, 0))
    out["png_rgb_color_key"] = (_save(keyed, "PNG", transparency=(0, 0, 255)), ok)
    out["png_wide_10000x1"] = (_save(Image.linear_gradient("L").resize((10000, 1)), "PNG"), ok)
    out["png_tall_1x10000"] = (_save(Image.linear_gradient("L").resize((1, 10000)), "PNG"), ok)
    html = b"<html><body><script>alert(document.cookie)</script></body></html>"
    out["polyglot_png_html"] = (_save(photo, "PNG") + html, ok)

    frames = [Image.new("P", (32, 24), i % 256) for i in range(150)]
    for i, frame in enumerate(frames):
        frame.putpalette([(i * 7 + c * 50) % 256 for _ in range(256) for c in range(3)])
    out["gif_zero_delay_150_frames"] = (
        _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=0, loop=0),
        ok,
    )
    out["gif_1x1"] = (_save(Image.new("P", (1, 1), 0), "GIF"), ok)
    out["gif_transparent"] = (_save(palette, "GIF", transparency=0), ok)
    out["webp_lossy"] = (_save(photo, "WEBP", quality=80), ok)
    animated = [Image.new("RGBA", (48, 32), (i * 60, 0, 255 - i * 60, 255)) for i in range(4)]
    out["webp_animated"] = (
        _save(animated[0], "WEBP", save_all=True, append_images=animated[1:], duration=50),
        ok,
    )
    out["tiff_rgb"] = (_save(photo, "TIFF"), ok)
    out["tiff_deflate_rotated"] = (  # TIFF tag 274 (orientation 8: rotate 90 degrees CCW)
        _save(rotated, "TIFF", compression="tiff_adobe_deflate", tiffinfo={274: 8}),
        ok,
    )
    out["bmp_rgb"] = (_save(photo, "BMP"), ok)
    out["ico_multi_size"] = (_save(rgba.resize((48, 48)), "ICO", sizes=[(16, 16), (48, 48)]), ok)
    out["avif"] = (_save(photo, "AVIF", quality=60, speed=10), ok)
    if _HEIF:
        out["heic"] = (_save(photo, "HEIF", quality=60), ok)
    return out


def _not_images() -> dict[str, tuple[bytes, str]]:
    no = "not_image"
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("image.png", b"not really")
    return {
        "empty": (b"", no),
        "html_named_png": (
            b"<!DOCTYPE html>\n<html><body><img src=x onerror=alert(1)>"
            b"<script>alert(document.cookie)</script></body></html>\n",
            no,
        ),
        "svg_with_script": (
            b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" onload="alert(1)">'
            b"<script>alert(document.domain)</script><rect width='10' height='10'/></svg>\n",
            no,
        ),
        "xml": (b'<?xml version="1.0"?>\n<note><to>you</to></note>\n', no),
        "pdf": (
            b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
            b"trailer << /Root 1 0 R >>\n%%EOF\n",
            no,
        ),
        "eps": (
            b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
            b"newpath 0 0 moveto 10 10 lineto stroke showpage\n%%EOF\n",
            no,
        ),
        "psd_header": (b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03" + b"\x00" * 64, no),
        "zip": (zipped.getvalue(), no),
        "text_plain": ("Just a note, not a picture: ünïcödé.\n".encode(), no),
        "text_starting_bm": (b"BM is short for bookmark, not a bitmap.\n" * 3, no),
        "random_binary": (random.Random(3).randbytes(2048), no),
    }


def _broken() -> dict[str, tuple[bytes, str]]:
    bad = "bad_image"
    rng = random.Random(4)
    jpeg = _save(_noise((256, 192), seed=5), "JPEG", quality=92)
    png = _save(_noise((128, 128), seed=6), "PNG")
    tiff = _save(_noise((128, 96), seed=7), "TIFF")
    webp = _save(_noise((64, 64), seed=8), "WEBP")
    return {
        "jpeg_truncated": (jpeg[: len(jpeg) // 2], bad),
        "jpeg_corrupt_after_magic": (b"\xff\xd8\xff\xe0" + rng.randbytes(1500), bad),
        "png_truncated": (png[: len(png) * 6 // 10], bad),
        "png_corrupt_after_magic": (b"\x89PNG\r\n\x1a\n" + rng.randbytes(1500), bad),
        "png_garbage_idat": (_png_raw(64, 64, rng.randbytes(800)), bad),
        "png_zero_width": (_png_raw(0, 10, zlib.compress(b"\x00" * 10)), bad),
        "gif_garbage_lzw": (  # sane 32x32 screen and frame descriptor, then random LZW data
            b"GIF89a"
            + struct.pack("<HH", 32, 32)
            + b"\x00\x00\x00"
            + b"\x2c"
            + struct.pack("<HHHH", 0, 0, 32, 32)
            + b"\x00\x08"
            + rng.randbytes(300),
            bad,
        ),
        "webp_truncated": (webp[: len(webp) // 2], bad),
        "tiff_truncated": (tiff[: len(tiff) // 3], bad),
        "bmp_truncated": (_save(_noise((64, 64), seed=9), "BMP")[:3000], bad),
    }


def _bombs() -> dict[str, tuple[bytes, str]]:
    big = "too_large"
    zeros = zlib.compress(b"\x00" * 200_000, 9)  # a few hundred bytes that inflate to 200 KB
    # A real JPEG header with its SOF dimensions patched: 10000x8000 = 80 MP.
    jpeg = bytearray(_save(Image.new("RGB", (16, 16), (9, 9, 9)), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 8000, 10000)
    gif = (  # logical screen 65535x65535, one tiny frame
        b"GIF89a"
        + struct.pack("<HH", 65535, 65535)
        + b"\x00\x00\x00"
        + b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b"
    )
    # ICO whose directory says 16x16 but whose PNG frame declares 10000x10000 (100 MP):
    # Pillow decodes ICO frames inside Image.open and only warns below 179 MP.
    inner = _png_raw(10000, 10000, zeros)
    directory = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(inner), 22)
    ico = struct.pack("<HHH", 0, 1, 1) + directory
    webp = bytearray(_save(Image.new("RGB", (16, 16)), "WEBP", lossless=True))
    # VP8L header: 14 bits width-1, 14 bits height-1 -> 12000x12000 (144 MP canvas at open)
    bits = (12000 - 1) | ((12000 - 1) << 14) | (int.from_bytes(webp[21:25], "little") & ~0xFFFFFFF)
    webp[21:25] = bits.to_bytes(4, "little")
    return {
        "png_bomb_30000x30000": (_png_raw(30000, 30000, zeros), big),
        "png_bomb_8000x8000": (_png_raw(8000, 8000, zeros), big),
        "jpeg_header_10000x8000": (bytes(jpeg), big),
        "gif_screen_65535x65535": (gif, big),
        "ico_embedded_png_bomb": (ico + inner, big),
        "webp_lossless_12000x12000": (bytes(webp), big),
    }


# --- memory worst cases --------------------------------------------------------------------

#: name -> what Pillow decodes it to; each is within the default 50-million-pixel limit.
MEMORY_WORST_CASES = {
    "png_16bit_gray_7071x7071": "I;16",  # about 100 KB on disk, 100 MB decoded
    "tiff_16bit_gray_7071x7071": "I;16",  # one deflate strip: libtiff adds a strip buffer
    "png_rgba_7000x7000": "RGBA",  # 49 MP, 196 MB decoded
}


def memory_worst_cases() -> dict[str, bytes]:
    """Small files that decode to hundreds of megabytes (see MEMORY_WORST_CASES).

    Written row by row through a streaming compressor, so building them never holds the
    decoded image (about a second for all three).
    """
    return dict(_memory_worst_cases())


@functools.lru_cache(maxsize=1)
def _memory_worst_cases() -> tuple[tuple[str, bytes], ...]:
    return (
        ("png_16bit_gray_7071x7071", flat_png(7071, 7071, bit_depth=16, color_type=0)),
        ("tiff_16bit_gray_7071x7071", flat_tiff16(7071, 7071)),
        ("png_rgba_7000x7000", flat_png(7000, 7000, bit_depth=8, color_type=6, fill=b"\x80")),
    )


def _deflated_rows(row: bytes, height: int) -> bytes:
    packer = zlib.compressobj(9)
    parts = [packer.compress(row) for _ in range(height)]
    parts.append(packer.flush())
    return b"".join(parts)


def flat_png(
    width: int, height: int, *, bit_depth: int, color_type: int, fill: bytes = b"\0"
) -> bytes:
    """A one-colour PNG of any size, compressed without ever building its pixels."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\x00" + fill * (width * channels * bit_depth // 8)  # filter 0, then the samples
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", _deflated_rows(row, height))
        + _chunk(b"IEND", b"")
    )


def flat_tiff_rgb(width: int, height: int) -> bytes:
    """A black 8-bit RGB TIFF in a single deflate strip (little-endian, baseline tags):
    small on disk, pixels plus a whole-image strip buffer when decoded."""
    strip = _deflated_rows(b"\0" * width * 3, height)
    bits_at = 8 + 2 + 12 * 10 + 4  # the three bits-per-sample SHORTs follow the IFD
    data_at = bits_at + 6
    tags = [  # (tag, type, count, value or offset)
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, bits_at), (259, 3, 1, 8),
        (262, 3, 1, 2), (273, 4, 1, data_at), (277, 3, 1, 3), (278, 4, 1, height),
        (279, 4, 1, len(strip)), (284, 3, 1, 1),
    ]  # fmt: skip
    entries = b"".join(
        struct.pack("<HHII", tag, kind, count, value)
        if kind == 4 or count > 1
        else struct.pack("<HHIHH", tag, kind, count, value, 0)
        for tag, kind, count, value in tags
    )
    ifd = struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<HHH", 8, 8, 8) + strip


def flat_tiff16(width: int, height: int) -> bytes:
    """A black 16-bit grey TIFF in a single deflate strip (little-endian, baseline tags)."""
    strip = _deflated_rows(b"\0" * width * 2, height)
    tags = [  # (tag, type, value); type 3 SHORT, 4 LONG
        (256, 4, width),
        (257, 4, height),
        (258, 3, 16),  # bits per sample
        (259, 3, 8),  # deflate
        (262, 3, 1),  # black is zero
        (273, 4, 0),  # strip offset, patched below
        (277, 3, 1),  # samples per pixel
        (278, 4, height),  # rows per strip: the whole image in one strip
        (279, 4, len(strip)),
    ]
    ifd_size = 2 + 12 * len(tags) + 4
    data_at = 8 + ifd_size
    entries = b"".join(
        struct.pack("<HHI", tag, kind, 1)
        + (struct.pack("<I", data_at if tag == 273 else value))
        if kind == 4
        else struct.pack("<HHIHH", tag, kind, 1, value, 0)
        for tag, kind, value in tags
    )
    ifd = struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + strip
