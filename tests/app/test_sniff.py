"""MIME sniffing: real files of every type, brand and markup edge cases, polyglots, labels."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest
from PIL import Image

from app_patch import sniff
from app_patch.sniff import (
    IMAGE_MIMES,
    INLINE_SAFE_MIMES,
    extension_for,
    is_image_mime,
    normalise_mime,
    sniff_mime,
)
from app_patch.testdata.hostile import hostile_corpus


def _pillow(fmt: str, mode: str = "RGB", size: tuple[int, int] = (40, 30), **params) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 90).save(buf, fmt, **params)
    return buf.getvalue()


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x08meta"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_pillow("JPEG"), sniff.JPEG),
        (_pillow("PNG"), sniff.PNG),
        (_pillow("GIF", "P"), sniff.GIF),
        (_pillow("WEBP"), sniff.WEBP),
        (_pillow("TIFF"), sniff.TIFF),
        (_pillow("TIFF", big_tiff=True), sniff.TIFF),
        (_pillow("BMP"), sniff.BMP),
        (_pillow("ICO", "RGBA", (32, 32)), sniff.ICO),
        (_pillow("AVIF"), sniff.AVIF),
        (_pillow("PDF"), sniff.PDF),
    ],
    ids=["jpeg", "png", "gif", "webp", "tiff", "bigtiff", "bmp", "ico", "avif", "pdf"],
)
def test_files_written_by_pillow_are_recognised_from_their_first_4096_bytes(data, expected):
    assert sniff_mime(data[:4096]) == expected
    assert sniff_mime(bytearray(data[:4096])) == expected  # callers may pass any buffer
    assert sniff_mime(memoryview(data)) == expected


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        (_ftyp(b"avif", b"avif", b"mif1", b"miaf"), sniff.AVIF),
        (_ftyp(b"mif1", b"miaf", b"avif"), sniff.AVIF),  # generic major, AVIF compatible
        (_ftyp(b"avis", b"avis", b"msf1"), sniff.AVIF),  # AVIF image sequence
        (_ftyp(b"heic", b"mif1", b"heic"), sniff.HEIC),
        (_ftyp(b"mif1", b"mif1", b"heic"), sniff.HEIC),
        (_ftyp(b"hevc", b"msf1", b"hevc"), sniff.HEIC),
        (_ftyp(b"mif1", b"mif1", b"miaf"), sniff.HEIF),  # HEIF of no codec we know
        (_ftyp(b"isom", b"isom", b"mp42"), sniff.OCTET),  # an MP4 video
        (_ftyp(b"qt  "), sniff.OCTET),
    ],
)
def test_isobmff_brands_tell_avif_from_heic_and_from_video(box, expected):
    assert sniff_mime(box) == expected


def test_heic_written_by_pillow_heif_is_heic():
    pytest.importorskip("pillow_heif")
    from app_patch.service import thumbnails  # registers the HEIF plugin

    assert thumbnails.HEIF_AVAILABLE
    assert sniff_mime(_pillow("HEIF")) == sniff.HEIC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', sniff.SVG),
        (
            b"\xef\xbb\xbf \n<?xml version='1.0'?>\n<!-- made by hand -->\n"
            b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd">\n<svg>',
            sniff.SVG,
        ),
        (b"<?xml version='1.0'?><svg:svg xmlns:svg='http://www.w3.org/2000/svg'>", sniff.SVG),
        (b"  <SVG WIDTH='1'>", sniff.SVG),
        (b"<?xml version='1.0'?><rss version='2.0'><channel/></rss>", sniff.XML),
        (b"<?xml version='1.0'?><html xmlns='http://www.w3.org/1999/xhtml'>", sniff.HTML),
        (b"<!doctype html><title>x</title>", sniff.HTML),
        (b"\r\n<HTML><BODY>", sniff.HTML),
        (b"<script>alert(1)</script>", sniff.HTML),
        (b"<!-- a comment --><p>hi</p>", sniff.HTML),
        (b"<b>bold</b> claims", sniff.HTML),
        (b"<?xml version='1.0'", sniff.XML),  # declaration cut off by the head
        (b"<3 you", sniff.TEXT),
        (b"<bogus>no declaration, no html tag</bogus>", sniff.TEXT),
        (b"<br/>", sniff.HTML),
        (b"<brand>", sniff.TEXT),  # a tag name must end where a known tag ends
    ],
)
def test_markup_is_classified_by_its_root_element(text, expected):
    assert sniff_mime(text) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("plain words, ünïcödé and emoji 🙂\n".encode(), sniff.TEXT),
        ("cut mid-character: é".encode()[:-1], sniff.TEXT),  # head ends inside a sequence
        (b"tab\tand\r\nnewlines\x0c form feed", sniff.TEXT),
        (b"NUL\x00inside", sniff.OCTET),
        (b"\x01\x02 control bytes", sniff.OCTET),
        (b"caf\xe9 au lait", sniff.OCTET),  # Latin-1, not UTF-8
        (b"", sniff.OCTET),
        (b"BMW owners club minutes, 14 pages" * 2, sniff.TEXT),  # 'BM' alone is not a bitmap
        (b"\x00\x00\x02\x00\x01\x00" + b"\x10" * 30, sniff.OCTET),  # CUR is not rendered
        (b"\x00\x00\x01\x00\x00\x00" + b"\x00" * 30, sniff.OCTET),  # ICO magic, no entries
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", sniff.POSTSCRIPT),
        (b"\xc5\xd0\xd3\xc6" + b"\x00" * 28, sniff.POSTSCRIPT),
        (b"8BPS\x00\x01" + b"\x00" * 30, sniff.OCTET),  # Photoshop: never decoded
        (b"junk before the header\n" * 10 + b"%PDF-1.7\n", sniff.PDF),  # Acrobat's 1 KB rule
        (b"x" * 1100 + b"%PDF-1.7\n", sniff.TEXT),
    ],
)
def test_text_and_binary_edge_cases(data, expected):
    assert sniff_mime(data) == expected


def test_zip_is_zip_even_when_it_contains_images():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("photo.png", _pillow("PNG"))
    assert sniff_mime(buf.getvalue()) == sniff.ZIP


def test_polyglots_are_what_their_leading_magic_says():
    png, gif = _pillow("PNG"), _pillow("GIF", "P")
    html = b"<html><script>alert(document.cookie)</script></html>"
    assert sniff_mime(png + html) == sniff.PNG
    assert sniff_mime(gif + b"PK\x03\x04" + b"\x00" * 40) == sniff.GIF  # GIFAR
    assert sniff_mime(html + png) == sniff.HTML
    assert sniff_mime(b"\xef\xbb\xbf" + html) == sniff.HTML


def test_every_corpus_entry_sniffs_consistently_with_its_expected_outcome():
    for name, (data, outcome) in hostile_corpus().items():
        mime = sniff_mime(data[:4096])
        # Broken images and bombs still carry a valid magic; only non-images are refused here.
        assert (mime in IMAGE_MIMES) == (outcome != "not_image"), (name, mime)


@pytest.mark.parametrize(
    ("label", "normal"),
    [
        ("image/vnd.microsoft.icon", sniff.ICO),
        ("IMAGE/JPEG; charset=binary", sniff.JPEG),
        ("image/jpg", sniff.JPEG),
        ("image/pjpeg", sniff.JPEG),
        ("image/x-ms-bmp", sniff.BMP),
        ("text/xml", sniff.XML),
        ("application/x-custom", "application/x-custom"),
        ("", sniff.OCTET),
        (None, sniff.OCTET),
    ],
)
def test_labels_are_normalised(label, normal):
    assert normalise_mime(label) == normal


def test_image_and_inline_sets_and_extensions():
    assert is_image_mime("image/vnd.microsoft.icon")
    assert is_image_mime("image/heic")
    assert not is_image_mime(sniff.SVG)
    assert not is_image_mime("application/pdf")
    assert INLINE_SAFE_MIMES <= IMAGE_MIMES
    for scriptable in (sniff.SVG, sniff.HTML, sniff.XML, sniff.PDF, sniff.TEXT):
        assert scriptable not in INLINE_SAFE_MIMES
    # Not rendered by Chrome/Firefox: shown via thumbnails, downloaded as attachments.
    assert {sniff.TIFF, sniff.HEIC, sniff.HEIF}.isdisjoint(INLINE_SAFE_MIMES)
    assert extension_for(sniff.JPEG) == ".jpg"
    assert extension_for("image/vnd.microsoft.icon") == ".ico"
    assert extension_for(sniff.SVG) == ".svg"
    assert extension_for("application/x-unknown") == ".bin"
    assert all(extension_for(m).startswith(".") and extension_for(m) != ".bin" for m in IMAGE_MIMES)
