"""Real file bytes for seeding and tests: every format the chat service meets, made by Pillow.

Each kind has a few variants (different sizes and pictures). The bytes of a (kind, variant)
pair are generated once per process and cached, so seeding tens of thousands of uploads
costs a few dozen encodes. Output depends only on (kind, variant), never on the caller's
random state, so two seeds with the same ``--seed`` store identical bytes.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, ImageDraw

#: Variants per kind; make_sample picks one with the caller's rng.
VARIANTS = 3

#: Every kind make_sample knows, in a stable order.
KINDS: tuple[str, ...] = (
    "jpeg",
    "jpeg_cmyk",
    "jpeg_exif_rotated",
    "png",
    "png_palette_transparent",
    "png_16bit",
    "gif_animated",
    "webp",
    "webp_animated",
    "tiff",
    "bmp",
    "ico",
    "pdf",
    "text",
    "truncated_jpeg",
    "truncated_png",
    "large_dims_png",
    "zero_byte",
)

#: Kinds that are well-formed images Pillow decodes fully.
IMAGE_KINDS: frozenset[str] = frozenset(KINDS[:12])

#: How often each kind is uploaded in seeded data (relative weights; images dominate).
KIND_WEIGHTS: dict[str, float] = {
    "jpeg": 30, "jpeg_cmyk": 2, "jpeg_exif_rotated": 6, "png": 20,
    "png_palette_transparent": 3, "png_16bit": 2, "gif_animated": 3, "webp": 5,
    "webp_animated": 2, "tiff": 2, "bmp": 2, "ico": 1, "pdf": 8, "text": 6,
    "truncated_jpeg": 1.5, "truncated_png": 1.5, "large_dims_png": 1, "zero_byte": 0.5,
}


@dataclass(frozen=True)
class SampleFile:
    """One file's bytes and what is really in them (whatever a client later claims).

    ``width``/``height`` are the pixel dimensions stored in the file (what
    ``PIL.Image.open(...).size`` reports, before any EXIF rotation; for truncated files
    and ``large_dims_png`` the dimensions the header claims). ``is_image`` is true for
    anything whose bytes are an image format, corrupt or not; ``decodable`` says whether
    Pillow loads all the pixels without passing ``Image.MAX_IMAGE_PIXELS`` (every
    ``large_dims_png`` passes it: two variants raise DecompressionBombError on open, one
    only warns, and would then allocate ~100 MB).
    ``orientation`` is the EXIF orientation tag when one is present.
    """

    kind: str
    data: bytes
    true_mime: str
    is_image: bool
    width: int | None
    height: int | None
    variant: int = 0
    decodable: bool = False
    orientation: int | None = None

    @property
    def ext(self) -> str:
        """The file-name extension a user's file of this kind usually has."""
        return _EXT[self.kind]

    @property
    def display_size(self) -> tuple[int, int] | None:
        """(width, height) as a viewer shows it, after EXIF rotation."""
        if self.width is None or self.height is None:
            return None
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def make_sample(kind: str, rng: random.Random) -> SampleFile:
    """A sample of ``kind``, one of its variants chosen with ``rng`` (bytes are cached)."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown sample kind {kind!r}; choose one of: {', '.join(KINDS)}")
    return sample_variant(kind, rng.randrange(VARIANTS))


@functools.cache
def sample_variant(kind: str, variant: int) -> SampleFile:
    """The sample for ``(kind, variant)``; generated once per process."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown sample kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if not 0 <= variant < VARIANTS:
        raise ValueError(f"variant must be in 0..{VARIANTS - 1}, got {variant}")
    return _MAKERS[kind](variant)


def random_kind(rng: random.Random) -> str:
    """A kind drawn with :data:`KIND_WEIGHTS`."""
    return rng.choices(KINDS, weights=[KIND_WEIGHTS[k] for k in KINDS])[0]


_EXT = {
    "jpeg": "jpg", "jpeg_cmyk": "jpg", "jpeg_exif_rotated": "jpeg", "png": "png",
    "png_palette_transparent": "png", "png_16bit": "png", "gif_animated": "gif", "webp": "webp",
    "webp_animated": "webp", "tiff": "tif", "bmp": "bmp", "ico": "ico", "pdf": "pdf",
    "text": "txt", "truncated_jpeg": "jpg", "truncated_png": "png", "large_dims_png": "png",
    "zero_byte": "bin",
}

#: Hostile or unusual original names, by untidy case (``{n}`` number, ``{e}`` extension).
UNTIDY_NAMES: dict[str, tuple[str, ...]] = {
    "name_non_ascii": ("фото_{n}.{e}", "写真 {n}.{e}", "café-menü {n}.{e}", "😀 party {n}.{e}",
                       "naïve résumé {n}.{e}"),
    "name_quotes": ('my "best" photo {n}.{e}', "it's mine {n}.{e}", "`tick` & 'quote' {n}.{e}"),
    "name_path_traversal": ("../../etc/passwd{n}.{e}", "..\\..\\windows\\win{n}.{e}",
                            "../secret {n}.{e}"),
    "name_line_break": ("evil\r\nContent-Type: text/html {n}.{e}", "two\nlines {n}.{e}"),
}


def sample_name(kind: str, rng: random.Random, untidy: str | None = None) -> str:
    """A file name a user might give a ``kind`` file; ``untidy`` is a key of UNTIDY_NAMES.

    Ordinary names are plain ASCII without quotes, slashes or line breaks.
    """
    n, ext = rng.randrange(10_000), _EXT[kind]
    if untidy:
        return rng.choice(UNTIDY_NAMES[untidy]).format(n=n, e=ext)
    stem = rng.choice(("IMG_{n:04d}", "Screenshot 2025-06-{d:02d} at 10.{n:04d}", "scan{n}",
                       "photo {n}", "document-{n}", "image ({d})"))
    return f"{stem.format(n=n, d=rng.randrange(1, 29))}.{ext}"


def sample_files(rng: random.Random) -> list[SampleFile]:
    """One sample of every kind (variants chosen with ``rng``), in :data:`KINDS` order."""
    return [make_sample(kind, rng) for kind in KINDS]


# --- pictures -------------------------------------------------------------------------

_SIZES = ((64, 48), (320, 240), (640, 400))


def _picture(variant: int, size: tuple[int, int] | None = None) -> Image.Image:
    """A deterministic RGB picture: gradient plus shapes, so encoders have real work."""
    w, h = size or _SIZES[variant]
    r = random.Random(f"picture:{variant}:{w}x{h}")
    # Gradient built from two 1-D ramps: cheap even at 640 px.
    xs = Image.linear_gradient("L").resize((w, h))
    ys = Image.linear_gradient("L").rotate(90).resize((w, h))
    im = Image.merge("RGB", (xs, ys, Image.new("L", (w, h), r.randrange(256))))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = r.randrange(w), r.randrange(h)
        x1, y1 = min(w - 1, x0 + r.randrange(4, max(5, w // 2))), min(h - 1, y0 + r.randrange(4, max(5, h // 2)))
        fill = (r.randrange(256), r.randrange(256), r.randrange(256))
        (draw.ellipse if r.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return im


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _image(kind: str, variant: int, mime: str, im: Image.Image, fmt: str, **params: object) -> SampleFile:
    return SampleFile(kind, _save(im, fmt, **params), mime, True, im.width, im.height,
                      variant=variant, decodable=True)


def _jpeg(v: int) -> SampleFile:
    return _image("jpeg", v, "image/jpeg", _picture(v), "JPEG", quality=85)


def _jpeg_cmyk(v: int) -> SampleFile:
    return _image("jpeg_cmyk", v, "image/jpeg", _picture(v).convert("CMYK"), "JPEG", quality=85)


def _jpeg_exif_rotated(v: int) -> SampleFile:
    w, h = _SIZES[v]
    im = _picture(v, (w, h))  # landscape pixels, displayed portrait
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    data = _save(im, "JPEG", quality=85, exif=exif.tobytes())
    return SampleFile("jpeg_exif_rotated", data, "image/jpeg", True, w, h, variant=v,
                      decodable=True, orientation=6)


def _png(v: int) -> SampleFile:
    return _image("png", v, "image/png", _picture(v), "PNG")


def _png_palette_transparent(v: int) -> SampleFile:
    im = _picture(v).quantize(colors=16)
    return _image("png_palette_transparent", v, "image/png", im, "PNG", transparency=0)


def _png_16bit(v: int) -> SampleFile:
    # Pillow writes mode I;16 as a 16-bit grayscale PNG; scale 8-bit values to 0..65535.
    im = _picture(v).convert("L").convert("I").point(lambda p: p * 257).convert("I;16")
    return _image("png_16bit", v, "image/png", im, "PNG")


def _gif_animated(v: int) -> SampleFile:
    base = _picture(v)
    frames = [base.rotate(30 * i).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
              for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=120, loop=0)
    return SampleFile("gif_animated", buf.getvalue(), "image/gif", True, base.width,
                      base.height, variant=v, decodable=True)


def _webp(v: int) -> SampleFile:
    return _image("webp", v, "image/webp", _picture(v), "WEBP", quality=80)


def _webp_animated(v: int) -> SampleFile:
    base = _picture(v)
    frames = [base.rotate(45 * i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100,
                   loop=0, quality=70)
    return SampleFile("webp_animated", buf.getvalue(), "image/webp", True, base.width,
                      base.height, variant=v, decodable=True)


def _tiff(v: int) -> SampleFile:
    return _image("tiff", v, "image/tiff", _picture(v), "TIFF", compression="tiff_deflate")


def _bmp(v: int) -> SampleFile:
    # Uncompressed: the largest variant (~360 KB) spans two GridFS chunks.
    size = ((64, 48), (200, 150), (400, 300))[v]
    return _image("bmp", v, "image/bmp", _picture(v, size), "BMP")


def _ico(v: int) -> SampleFile:
    side = (16, 32, 48)[v]
    im = _picture(v, (side, side))
    data = _save(im, "ICO", sizes=[(side, side)])
    return SampleFile("ico", data, "image/x-icon", True, side, side, variant=v,
                      decodable=True)


def _pdf(v: int) -> SampleFile:
    """A minimal valid one-page PDF with a correct xref table."""
    text = f"Quarterly report {v + 1}".encode()
    stream = b"BT /F1 18 Tf 36 740 Td (" + text + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return SampleFile("pdf", bytes(out), "application/pdf", False, None, None, variant=v)


def _text(v: int) -> SampleFile:
    lines = [
        "Meeting notes — décisions prises, 次のステップ",
        "1. Ship the image rendering change.",
        f"2. Re-run the report (variant {v}).",
    ]
    data = ("\n".join(lines * (1 + 20 * v)) + "\n").encode()
    return SampleFile("text", data, "text/plain", False, None, None, variant=v)


def _truncated_jpeg(v: int) -> SampleFile:
    full = _jpeg(v)
    # Keep the headers (SOF says the size) but cut the scan data short.
    data = full.data[: max(len(full.data) // 2, 700)]
    return SampleFile("truncated_jpeg", data, "image/jpeg", True, full.width, full.height,
                      variant=v)


def _truncated_png(v: int) -> SampleFile:
    full = _png(v)
    data = full.data[: max(len(full.data) // 2, 120)]  # IHDR intact, IDAT cut, no IEND
    return SampleFile("truncated_png", data, "image/png", True, full.width, full.height,
                      variant=v)


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _large_dims_png(v: int) -> SampleFile:
    """A valid 1-bit grayscale PNG claiming huge dimensions; a few KB of compressed zeros."""
    w, h = ((20000, 20000), (30000, 16000), (12000, 9000))[v]
    row = b"\x00" * (1 + (w + 7) // 8)  # filter byte + packed 1-bit pixels
    comp = zlib.compressobj(9)
    rows_per_piece = max(1, (1 << 20) // len(row))
    piece = row * rows_per_piece
    parts = []
    done = 0
    while done < h:
        n = min(rows_per_piece, h - done)
        parts.append(comp.compress(piece if n == rows_per_piece else row * n))
        done += n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))
    return SampleFile("large_dims_png", data, "image/png", True, w, h, variant=v)


def _zero_byte(v: int) -> SampleFile:
    return SampleFile("zero_byte", b"", "application/octet-stream", False, None, None, variant=v)


_MAKERS = {
    "jpeg": _jpeg, "jpeg_cmyk": _jpeg_cmyk, "jpeg_exif_rotated": _jpeg_exif_rotated,
    "png": _png, "png_palette_transparent": _png_palette_transparent, "png_16bit": _png_16bit,
    "gif_animated": _gif_animated, "webp": _webp, "webp_animated": _webp_animated,
    "tiff": _tiff, "bmp": _bmp, "ico": _ico, "pdf": _pdf, "text": _text,
    "truncated_jpeg": _truncated_jpeg, "truncated_png": _truncated_png,
    "large_dims_png": _large_dims_png, "zero_byte": _zero_byte,
}
assert set(_MAKERS) == set(KINDS)
