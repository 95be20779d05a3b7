"""Thumbnails under memory pressure: the strip-wise shrink, the decode cost estimate, the
small and large lanes, one decode for several sizes, and the worst cases' real peaks."""

from __future__ import annotations

import asyncio
import io
import threading

import pytest
from PIL import Image

from app_patch import sniff
from app_patch.service import thumbnails
from app_patch.service.decodepool import DecodePool
from app_patch.service.thumbnails import (
    BadImage,
    Thumbnail,
    estimate_cost,
    make_thumbnail,
    make_thumbnails,
    verify_and_render,
)
from app_patch.testdata.hostile import (
    MEMORY_WORST_CASES,
    flat_png,
    flat_tiff16,
    memory_worst_cases,
)
from tests.app.conftest import rss_growth, status_kb

MiB = 1024 * 1024


def _encoded(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _image(mode: str, size: tuple[int, int]) -> Image.Image:
    """Noise and gradients in ``mode``, with real transparency where the mode has alpha."""
    noise, ramp = Image.effect_noise(size, 60), Image.linear_gradient("L").resize(size)
    rgb = Image.merge("RGB", (ramp, noise, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    alpha = noise.point(lambda v: v if v > 110 else 0)
    made = {
        "RGBA": lambda: Image.merge("RGBA", (*rgb.split(), alpha)),
        "LA": lambda: Image.merge("LA", (ramp, alpha)),
        "P": lambda: rgb.quantize(64),
        "I;16": lambda: ramp.convert("I").point(lambda v: v * 250).convert("I;16"),
        "I": lambda: ramp.convert("I").point(lambda v: v * 300_000 - 7),
        "F": lambda: ramp.convert("F").point(lambda v: v / 255),
        "1": lambda: noise.convert("1"),
    }
    return made[mode]() if mode in made else rgb.convert(mode)


# --- the shrink ------------------------------------------------------------------------------


def _whole_image_shrink(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    """What _shrink does, on the whole image at once (Pillow 13's reducing_gap resize)."""
    out = thumbnails._normalise_mode(img)
    alpha = thumbnails._PREMULTIPLIED.get(out.mode)
    if alpha:
        out = out.convert(alpha)
    fx = int(img.width / target[0] / thumbnails.REDUCING_GAP) or 1
    fy = int(img.height / target[1] / thumbnails.REDUCING_GAP) or 1
    out = out.reduce((fx, fy)).resize(
        target, Image.Resampling.LANCZOS, box=(0, 0, img.width / fx, img.height / fy)
    )
    return out.convert(alpha[:-1] + "A") if alpha else out


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "I;16", "I", "F", "1", "CMYK"])
def test_shrinking_strip_by_strip_gives_the_whole_image_pixels(mode, monkeypatch):
    """Strips join exactly: the bytes of converting and reducing the whole image at once."""
    monkeypatch.setattr(thumbnails, "_STRIP_BYTES", 6000)  # dozens of strips
    img = _image(mode, (997, 613))
    if mode == "P":
        img.info["transparency"] = 3
    for size in (37, 100, 300):
        target = thumbnails._fit(img.size, size)
        whole = _whole_image_shrink(img, target)
        ours = thumbnails._shrink(img, target)
        assert (ours.mode, ours.size) == (whole.mode, whole.size)
        assert ours.tobytes() == whole.tobytes(), (mode, size)


# --- cost estimates --------------------------------------------------------------------------


def test_costs_count_the_bytes_of_the_decoded_mode_not_pixels():
    gray16 = flat_png(3000, 2000, bit_depth=16, color_type=0)
    rgba = flat_png(3000, 2000, bit_depth=8, color_type=6)
    # Verification decodes only: the source plus pixels x bytes per pixel of the mode.
    assert estimate_cost(gray16) == len(gray16) + 3000 * 2000 * 2
    assert estimate_cost(rgba) == len(rgba) + 3000 * 2000 * 4
    # A thumbnail adds the shrink's strips (bounded).
    assert estimate_cost(rgba, 200) - estimate_cost(rgba) == 3 * thumbnails._STRIP_BYTES
    # libtiff decodes the single 2000-row strip into a buffer of its own first.
    tiff = flat_tiff16(3000, 2000)
    assert estimate_cost(tiff) == len(tiff) + 2 * 3000 * 2000 * 2


def test_jpeg_costs_follow_the_dct_scale_and_unknowns_assume_the_worst():
    jpeg = _encoded(Image.new("RGB", (4000, 3000), (90, 30, 200)), "JPEG")
    # 500x375 decoded (and at most as much again for the shrink), then 1000x750.
    assert estimate_cost(jpeg, 200) - len(jpeg) == 2 * 500 * 375 * 4
    assert estimate_cost(jpeg, 300) - len(jpeg) == 2 * 1000 * 750 * 4
    # Not an image, or too many pixels: refused before any decode, so only the bytes count.
    assert estimate_cost(b"%PDF-1.4 hello") == len(b"%PDF-1.4 hello")
    bomb = flat_png(3000, 2000, bit_depth=8, color_type=6)
    assert estimate_cost(bomb, max_pixels=1000) == len(bomb)
    # Headers past the bytes read: counted as the largest image allowed.
    cut = jpeg[:2] + b"\xff\xe1" + b"\xff\xff" + b"\0" * 200  # a 64 KB APP1 segment begins
    assert estimate_cost(cut, source_bytes=10 * MiB, max_pixels=1_000_000) == 10 * MiB + 4_000_000


# --- one decode, several sizes -----------------------------------------------------------------


def test_make_thumbnails_equals_make_thumbnail_for_every_size():
    for data in (
        _encoded(_image("RGB", (1200, 900)), "JPEG", quality=85),  # 1/4 for 100, 1/2 for both others
        _encoded(_image("RGBA", (900, 700)), "PNG"),
        _encoded(_image("P", (640, 480)), "GIF"),
    ):
        many = make_thumbnails(data, [200, 100, 300])
        assert list(many) == [200, 100, 300]
        for size, thumb in many.items():
            assert thumb == make_thumbnail(data, size)


def test_verification_renders_the_thumbnails_its_decode_allows():
    jpeg = _encoded(_image("RGB", (400, 300)).resize((4000, 3000)), "JPEG", quality=80)
    mime, width, height, thumbs = verify_and_render(jpeg, thumbnails.THUMB_SIZES)
    assert (mime, width, height) == (sniff.JPEG, 4000, 3000)
    assert sorted(thumbs) == [100, 200]  # 300 needs the 1/4 scale, verification decodes 1/8
    for size, thumb in thumbs.items():
        assert thumb == make_thumbnail(jpeg, size)
    # Decoded at the first size's scale: 1/2 for 200 here, which 300 shares, not 100.
    jpeg = _encoded(_image("RGB", (128, 96)).resize((1280, 960)), "JPEG", quality=80)
    _, _, _, thumbs = verify_and_render(jpeg, [200, 100, 300])
    assert sorted(thumbs) == [200, 300]
    assert all(thumb == make_thumbnail(jpeg, size) for size, thumb in thumbs.items())
    png = _encoded(_image("I;16", (1500, 900)), "PNG")
    _, _, _, thumbs = verify_and_render(png, thumbnails.THUMB_SIZES)
    assert {s: t for s, t in thumbs.items()} == {s: make_thumbnail(png, s) for s in (100, 200, 300)}
    with pytest.raises(BadImage):
        verify_and_render(png[: len(png) // 2], thumbnails.THUMB_SIZES)


# --- lanes -----------------------------------------------------------------------------------


@pytest.fixture
def two_workers():
    pool = DecodePool(2)
    yield pool
    pool.close()


def test_small_thumbnails_do_not_wait_behind_a_queue_of_large_ones(two_workers, monkeypatch):
    """One user's large decodes hold the large lane; another's small image goes through."""
    release = threading.Event()
    real = thumbnails.make_thumbnail

    def held_if_large(data, size, **kw):
        if len(data) > 10_000:
            release.wait(120)  # bounded only so a bug fails, not hangs
            return Thumbnail(b"large", sniff.PNG, size, size)
        return real(data, size, **kw)

    monkeypatch.setattr(thumbnails, "make_thumbnail", held_if_large)
    large = flat_png(7071, 7071, bit_depth=16, color_type=0)  # 100 MB decoded
    small = _encoded(_image("RGB", (64, 48)), "PNG")

    async def main() -> tuple[Thumbnail, int, list[Thumbnail]]:
        queue = [
            asyncio.create_task(two_workers.make_thumbnail(large, 100, owner="alice"))
            for _ in range(4)
        ]
        await asyncio.sleep(0.05)
        try:
            mine = await asyncio.wait_for(two_workers.make_thumbnail(small, 32, owner="bob"), 60)
            still_queued = sum(not t.done() for t in queue)
        finally:
            release.set()
        return mine, still_queued, await asyncio.gather(*queue)

    mine, still_queued, done = asyncio.run(main())
    assert (mine.width, mine.height) == (32, 24)
    assert still_queued == 4 and all(t.width == 100 for t in done)


def test_a_cancelled_request_keeps_its_bytes_until_its_decode_ends(two_workers, monkeypatch):
    """The memory is in use until the thread finishes, whoever stopped waiting for it."""
    started, release = threading.Event(), threading.Event()

    def slow(data, size, **kw):
        started.set()
        release.wait(10)
        return Thumbnail(b"x", sniff.PNG, 1, 1)

    monkeypatch.setattr(thumbnails, "make_thumbnail", slow)
    large = flat_png(7071, 7071, bit_depth=16, color_type=0)
    lane = two_workers.lane(estimate_cost(large, 100))

    async def main() -> tuple[int, int]:
        task = asyncio.create_task(two_workers.make_thumbnail(large, 100, owner="alice"))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        during = lane.in_use
        release.set()
        for _ in range(500):
            if lane.in_use == 0:
                break
            await asyncio.sleep(0.01)
        return during, lane.in_use

    during, after = asyncio.run(main())
    assert during >= 7071 * 7071 * 2 and after == 0


# --- the worst cases, measured ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MEMORY_WORST_CASES))
def test_worst_cases_peak_at_their_estimate_and_give_the_memory_back(name, two_workers):
    """Before: 16-bit grey PNG +525 MB, 16-bit TIFF +429 MB, RGBA PNG +374 MB, kept after."""
    data = memory_worst_cases()[name]
    estimate = estimate_cost(data, 300) - len(data)
    before = status_kb("VmRSS") * 1024
    try:
        peak = rss_growth(lambda: asyncio.run(two_workers.make_thumbnail(data, 300)))
    except OSError as exc:
        pytest.skip(f"peak RSS cannot be reset here: {exc}")
    kept = status_kb("VmRSS") * 1024 - before
    print(f"{name}: estimate {estimate / MiB:.0f} MiB, peak +{peak / MiB:.0f} MiB, kept {kept / MiB:.0f} MiB")
    assert peak <= estimate * 1.1 + 8 * MiB
    assert kept < 24 * MiB
