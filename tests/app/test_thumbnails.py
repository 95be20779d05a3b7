"""The thumbnail pipeline against the hostile corpus and against the rules it promises."""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time

import pytest
from PIL import Image, ImageCms, ImageOps, ImageStat, PngImagePlugin

from app_patch import sniff
from app_patch.service import thumbnails
from app_patch.service.decodepool import DecodePool
from app_patch.service.thumbnails import (
    THUMB_SIZES,
    BadImage,
    ImageTooLarge,
    NotAnImage,
    Thumbnail,
    ThumbnailError,
    make_thumbnail,
    open_image,
    probe,
    verify_image,
)
from app_patch.service.thumbservice import http_status
from app_patch.testdata.hostile import LIMIT_RANGE, hostile_corpus
from tests.app.conftest import rss_growth

# The corpus holds a JPEG with deliberately corrupt EXIF; Pillow warns about it, we ignore it.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")

CORPUS = hostile_corpus()
OUTCOME_ERRORS = {"not_image": NotAnImage, "bad_image": BadImage, "too_large": ImageTooLarge}
OUTCOME_STATUS = {"not_image": 415, "bad_image": 422, "too_large": 422}
LEGIT = sorted(name for name, (_, outcome) in CORPUS.items() if outcome == "thumbnail")


def _outcome(call, *args, **kwargs) -> str:
    try:
        call(*args, **kwargs)
    except ThumbnailError as exc:
        for outcome, error in OUTCOME_ERRORS.items():
            if type(exc) is error:
                # One line, and no object reprs such as "<_io.BytesIO object at 0x7f...>".
                assert exc.reason and "\n" not in exc.reason and " at 0x" not in exc.reason
                assert http_status(exc) == OUTCOME_STATUS[outcome]
                return outcome
        raise
    return "thumbnail"


def _encoded(fmt: str, img: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _photo(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A gradient with noise (compresses like a photo), made in C so it is fast."""
    noise = Image.effect_noise(size, 40)
    grad = Image.linear_gradient("L").resize(size)
    bands = {"RGB": (grad, noise, grad.transpose(Image.Transpose.FLIP_LEFT_RIGHT))}
    img = Image.merge("RGB", bands["RGB"])
    return img if mode == "RGB" else img.convert(mode)


def _display_size(data: bytes) -> tuple[int, int]:
    """Independent of the code under test: Pillow's own decode + exif_transpose."""
    with Image.open(io.BytesIO(data)) as img:
        return ImageOps.exif_transpose(img).size


def _decoded(thumb: Thumbnail) -> Image.Image:
    img = Image.open(io.BytesIO(thumb.data))
    assert Image.MIME[img.format] == thumb.mime
    assert img.size == (thumb.width, thumb.height)
    img.load()
    return img


def _close(color, expected, tolerance: int = 30) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(color, expected, strict=False))


# --- the corpus ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_entry_has_its_expected_outcome(name):
    data, expected = CORPUS[name]
    assert _outcome(make_thumbnail, data, 100) == expected
    # The upload check agrees with the thumbnailer, and so do the pixel-limit extremes.
    assert _outcome(verify_image, data) == expected
    for limit in LIMIT_RANGE:
        assert _outcome(make_thumbnail, data, 100, max_pixels=limit) == expected


@pytest.mark.parametrize("size", THUMB_SIZES)
def test_corpus_thumbnails_obey_the_size_rule(size):
    for name in LEGIT:
        data = CORPUS[name][0]
        _check_size_rule(make_thumbnail(data, size), _display_size(data), size, name)


def _check_size_rule(thumb: Thumbnail, original: tuple[int, int], size: int, label: str):
    width, height = original
    longest = max(width, height)
    assert max(thumb.width, thumb.height) == min(size, longest), label
    assert thumb.width >= 1 and thumb.height >= 1, label
    # Aspect kept to within a pixel on the short side.
    scale = max(thumb.width, thumb.height) / longest
    assert abs(thumb.width - width * scale) <= 1 and abs(thumb.height - height * scale) <= 1
    assert (thumb.width >= thumb.height) == (width >= height) or width == height, label
    _decoded(thumb)


@pytest.mark.parametrize(
    ("fmt", "size", "mode"),
    [
        ("JPEG", (1200, 900), "RGB"),
        ("JPEG", (601, 1999), "RGB"),  # portrait, odd sizes, DCT scale 1/4
        ("JPEG", (333, 250), "L"),
        ("PNG", (800, 301), "RGBA"),
        ("WEBP", (640, 480), "RGB"),
        ("TIFF", (500, 700), "RGB"),
        ("GIF", (450, 200), "P"),
        ("BMP", (310, 310), "RGB"),
    ],
)
def test_downscaled_images_obey_the_size_rule(fmt, size, mode):
    data = _encoded(fmt, _photo(size, mode))
    for thumb_size in THUMB_SIZES:
        _check_size_rule(make_thumbnail(data, thumb_size), size, thumb_size, fmt)


# --- what the pixels must look like ---------------------------------------------------------


def test_exif_orientation_is_applied():
    thumb = make_thumbnail(CORPUS["jpeg_exif_rotated"][0], 300)  # 80x40, orientation 6
    img = _decoded(thumb).convert("RGB")
    assert (thumb.width, thumb.height) == (40, 80)
    assert _close(img.getpixel((20, 5)), (220, 0, 0))  # left half went to the top
    assert _close(img.getpixel((20, 75)), (0, 0, 220))
    # Width and height are swapped when downscaling too, and by the header-only probes.
    big = Image.new("RGB", (1600, 800), (220, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encoded("JPEG", big, exif=exif.tobytes())
    assert (make_thumbnail(data, 200).width, make_thumbnail(data, 200).height) == (100, 200)
    assert verify_image(data) == (sniff.JPEG, 800, 1600)
    assert (probe(data)["width"], probe(data)["height"]) == (800, 1600)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "AVIF", "HEIF"])
def test_exif_orientation_is_applied_once_in_other_formats(fmt):
    if fmt == "HEIF" and not thumbnails.HEIF_AVAILABLE:
        pytest.skip("pillow-heif is not installed")
    img = Image.new("RGB", (80, 40), (220, 0, 0))
    img.paste((0, 0, 220), (40, 0, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encoded(fmt, img, exif=exif.tobytes())  # pillow-heif rotates on open: not twice
    thumb = _decoded(make_thumbnail(data, 300)).convert("RGB")
    assert thumb.size == (40, 80)
    assert _close(thumb.getpixel((20, 5)), (220, 0, 0), 40)
    assert verify_image(data)[1:] == (40, 80)
    assert (probe(data)["width"], probe(data)["height"]) == (40, 80)


def test_tiff_orientation_tag_is_applied():
    data = CORPUS["tiff_deflate_rotated"][0]
    img = _decoded(make_thumbnail(data, 300)).convert("RGB")
    assert img.size == (40, 80)  # orientation 8: 90 degrees counter-clockwise
    assert verify_image(data) == (sniff.TIFF, 40, 80)
    assert (probe(data)["width"], probe(data)["height"]) == (40, 80)
    assert _close(img.getpixel((20, 75)), (220, 0, 0))
    assert _close(img.getpixel((20, 5)), (0, 0, 220))


@pytest.mark.parametrize(
    "name",
    [
        "png_rgba_transparent",
        "png_palette_transparent",
        "png_la_transparent",
        "png_rgb_color_key",
        "gif_transparent",
        "ico_multi_size",
    ],
)
def test_real_transparency_gives_png_with_alpha(name):
    thumb = make_thumbnail(CORPUS[name][0], 200)
    img = _decoded(thumb)
    assert thumb.mime == sniff.PNG
    assert img.mode in ("RGBA", "LA")
    assert img.getchannel("A").getextrema() == (0, 255)


@pytest.mark.parametrize(
    "name", ["png_rgba_opaque", "jpeg_cmyk", "png_16bit_gray", "webp_animated", "avif", "bmp_rgb"]
)
def test_opaque_images_give_jpeg(name):
    thumb = make_thumbnail(CORPUS[name][0], 200)
    assert thumb.mime == sniff.JPEG
    assert _decoded(thumb).mode in ("RGB", "L")


def test_no_metadata_survives():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS
    photo = _photo((640, 480))
    jpeg = _encoded("JPEG", photo, exif=exif.tobytes(), icc_profile=srgb, comment=b"secret")
    rgba = photo.convert("RGBA")
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "secret")
    png = _encoded("PNG", rgba, exif=exif.tobytes(), icc_profile=srgb, pnginfo=info)
    for data, mime in ((jpeg, sniff.JPEG), (png, sniff.PNG)):
        for size in (200, 1000):  # downscaled, and passed through at full size
            thumb = make_thumbnail(data, size)
            assert thumb.mime == mime
            for marker in (b"Exif", b"ICC_PROFILE", b"secret", b"SecretCam", b"iCCP", b"eXIf"):
                assert marker not in thumb.data, (mime, size, marker)
            img = _decoded(thumb)
            assert not img.getexif() and "icc_profile" not in img.info


def test_colour_conversions_keep_colours():
    cyan = Image.new("CMYK", (64, 64), (255, 0, 0, 0))
    thumb = make_thumbnail(_encoded("JPEG", cyan, quality=95), 32)
    assert _close(_decoded(thumb).getpixel((16, 16)), (0, 255, 255))
    # An embedded sRGB profile goes through the ICC transform; a broken one is ignored.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    orange = Image.new("RGB", (64, 64), (250, 140, 20))
    for icc in (srgb, b"not a profile at all"):
        thumb = make_thumbnail(_encoded("PNG", orange, icc_profile=icc), 32)
        assert _close(_decoded(thumb).getpixel((16, 16)), (250, 140, 20), 8)


def test_16bit_grey_is_scaled_not_clipped():
    img = _decoded(make_thumbnail(CORPUS["png_16bit_gray"][0], 100)).convert("L")
    # Source rows ramp 0..64512 (x * 1024); scaled to 8 bits the mean is about 125.
    mean = ImageStat.Stat(img).mean[0]
    assert 110 < mean < 140


def test_first_frame_of_animations_is_used():
    gif = _decoded(make_thumbnail(CORPUS["gif_zero_delay_150_frames"][0], 100)).convert("RGB")
    assert _close(gif.getpixel((5, 5)), (0, 50, 100))  # frame 0's palette colour
    webp = _decoded(make_thumbnail(CORPUS["webp_animated"][0], 100)).convert("RGB")
    assert _close(webp.getpixel((5, 5)), (0, 0, 255))


def test_polyglot_is_rendered_as_the_image_it_starts_with():
    thumb = make_thumbnail(CORPUS["polyglot_png_html"][0], 300)
    assert (thumb.width, thumb.height) == (96, 64) and b"<script" not in thumb.data


# --- JPEG draft decoding -------------------------------------------------------------------


@pytest.fixture(scope="module")
def jpeg_12mp() -> bytes:
    return _encoded("JPEG", _photo((4000, 3000)), quality=85)


def test_jpeg_is_decoded_at_dct_scale(jpeg_12mp):
    assert open_image(jpeg_12mp, 200).size == (500, 375)  # 1/8: still >= 2x of 200x150
    assert open_image(jpeg_12mp, 300).size == (1000, 750)  # 1/4: 1/8 would be < 600x450
    assert open_image(jpeg_12mp).size == (4000, 3000)
    thumb = make_thumbnail(jpeg_12mp, 200)
    assert (thumb.width, thumb.height) == (200, 150)


def test_12mp_jpeg_thumbnail_never_allocates_the_full_image(jpeg_12mp):
    try:
        ours = rss_growth(lambda: make_thumbnail(jpeg_12mp, 200))
        full = rss_growth(lambda: Image.open(io.BytesIO(jpeg_12mp)).load())
    except OSError as exc:
        pytest.skip(f"peak RSS cannot be reset here: {exc}")
    assert full >= 30_000_000  # 4000x3000 x 4 bytes: the measurement sees a full decode
    print(f"peak RSS growth: make_thumbnail {ours / 1e6:.1f} MB, full decode {full / 1e6:.1f} MB")
    assert ours < full / 6, (ours, full)


# --- inputs and limits ---------------------------------------------------------------------


def test_streams_are_accepted():
    data = CORPUS["jpeg_rgb"][0]

    class Unseekable(io.RawIOBase):
        def __init__(self):
            self.inner = io.BytesIO(data)

        def readable(self):
            return True

        def seekable(self):
            return False

        def seek(self, *args):
            raise io.UnsupportedOperation("no seeking")

        def readinto(self, buf):
            chunk = self.inner.read(len(buf))
            buf[: len(chunk)] = chunk
            return len(chunk)

    positioned = io.BytesIO(data)
    positioned.seek(100)  # the whole stream is the image, wherever it was left
    for source in (io.BytesIO(data), positioned, Unseekable(), bytearray(data), memoryview(data)):
        assert make_thumbnail(source, 50).width == 50


@pytest.mark.parametrize("size", [0, -1, 2049, 100.0, True, "100"])
def test_bad_sizes_are_caller_errors(size):
    with pytest.raises(ValueError, match="thumbnail size"):
        make_thumbnail(CORPUS["png_1x1"][0], size)


def test_the_pixel_limit_is_an_argument():
    data = _encoded("PNG", Image.new("RGB", (400, 300)))  # 120,000 pixels
    with pytest.raises(ImageTooLarge, match="120,000 pixels"):
        make_thumbnail(data, 100, max_pixels=100_000)
    with pytest.raises(ImageTooLarge):
        verify_image(data, max_pixels=100_000)
    assert make_thumbnail(data, 100, max_pixels=120_000).width == 100
    assert verify_image(data) == (sniff.PNG, 400, 300)  # None: the default, 50 million
    with pytest.raises(ValueError, match="max_pixels"):
        verify_image(data, max_pixels=0)
    with pytest.raises(ValueError, match="workers"):
        DecodePool(-2)


def test_probe_reads_headers_without_decoding():
    # The PNG's pixel data is garbage, but its header is fine: probe must not decode it.
    facts = probe(CORPUS["png_garbage_idat"][0])
    assert facts["mime"] == sniff.PNG and (facts["width"], facts["height"]) == (64, 64)
    assert probe(CORPUS["gif_zero_delay_150_frames"][0])["animated"] is True
    with pytest.raises(ImageTooLarge):
        probe(CORPUS["png_bomb_8000x8000"][0])
    with pytest.raises(NotAnImage):
        probe(CORPUS["svg_with_script"][0])


def test_mutated_images_only_ever_raise_thumbnail_errors():
    """Seeded byte flips and truncations: a thumbnail or a ThumbnailError, nothing else."""
    rng = random.Random(20261124)
    seeds = ["jpeg_rgb", "png_rgba_transparent", "gif_transparent", "webp_lossy", "tiff_rgb"]
    seeds += ["bmp_rgb", "ico_multi_size", "png_palette_transparent"]
    outcomes = set()
    for name in seeds:
        original = CORPUS[name][0]
        for _ in range(40):
            data = bytearray(original)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if rng.random() < 0.3:
                data = data[: rng.randrange(8, len(data))]
            outcomes.add(_outcome(make_thumbnail, bytes(data), 100, max_pixels=1_000_000))
    assert {"thumbnail", "bad_image"} <= outcomes


# --- the async worker pool -----------------------------------------------------------------


def test_async_thumbnails_never_exceed_the_concurrency_limit(monkeypatch):
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def slow_thumbnail(data, size, *, max_pixels=None):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return Thumbnail(data, sniff.PNG, size, size)

    monkeypatch.setattr(thumbnails, "make_thumbnail", slow_thumbnail)
    pool = DecodePool(3)

    async def burst(pool, n):
        return await asyncio.gather(*(pool.make_thumbnail(b"x%d" % i, 100) for i in range(n)))

    try:
        results = asyncio.run(burst(pool, 15))
        assert [r.data for r in results] == [b"x%d" % i for i in range(15)]
        assert state["max"] == 3
        # A second event loop shares the same pool and the same cap.
        state["max"] = 0
        asyncio.run(burst(pool, 15))
        assert state["max"] == 3
    finally:
        pool.close()
    # Another pool has its own cap.
    state["max"], other = 0, DecodePool(2)
    try:
        asyncio.run(burst(other, 8))
    finally:
        other.close()
    assert state["max"] == 2


def test_async_calls_are_the_real_thing_and_map_errors():
    pool = DecodePool(2)

    async def run():
        thumb = await pool.make_thumbnail(CORPUS["jpeg_rgb"][0], 50)
        with pytest.raises(ImageTooLarge):
            await pool.make_thumbnail(CORPUS["png_bomb_8000x8000"][0], 50)
        with pytest.raises(BadImage):
            await pool.verify_image(CORPUS["png_truncated"][0])
        return thumb, await pool.verify_image(CORPUS["jpeg_exif_rotated"][0])

    try:
        thumb, verified = asyncio.run(run())
    finally:
        pool.close()
    assert (thumb.width, thumb.height) == (50, 33) and thumb.mime == sniff.JPEG
    assert verified == (sniff.JPEG, 40, 80)
