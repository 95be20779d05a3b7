"""The /demo page in headless Chromium against a real uvicorn: thumbnails, full image, download."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app_patch.service.app import create_app
from app_patch.testdata.samples import sample_variant
from app_patch.testdata.seed import add_session
from tests.app.conftest import ALICE, BOB, apply_contract, at, live_server

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is missing: `make chromium` (apt-get install chromium)",
    ),
]

PHOTO = sample_variant("jpeg", 2)  # 640x400
ICON = sample_variant("png_palette_transparent", 0)
ROTATED = sample_variant("jpeg_exif_rotated", 1)


@pytest.fixture
def site(settings, mongo_db):
    add_session(
        mongo_db,
        user_id=BOB,
        messages=[("user", "not alice's", at(0))],
        uploads=[{"kind": "png", "message": 0}],
    )
    small = add_session(mongo_db, user_id=ALICE, messages=[("user", "nothing here", at(0))])
    rich = add_session(
        mongo_db,
        user_id=ALICE,
        messages=[
            ("user", "Can you describe these images?", at(100)),
            ("assistant", "A photo and an icon.", at(105)),
            ("user", "and this document + a rotated shot", at(110)),
        ],
        uploads=[
            {
                "data": PHOTO.data,
                "name": 'plage été "2025".jpg',
                "mime": "image/jpeg",
                "message": 0,
            },
            {"data": ICON.data, "name": "icône.png", "mime": "image/jpeg", "message": 0},
            {"kind": "pdf", "name": "report.pdf", "message": 2},
            {"data": ROTATED.data, "name": "rotated.jpg", "mime": "image/jpeg", "message": 2},
        ],
    )
    apply_contract(mongo_db)
    with live_server(create_app(settings)) as base:
        yield {"base": base, "rich": rich, "small": small}


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(accept_downloads=True)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        yield tab
        browser.close()
        assert not [e for e in errors if "Content Security Policy" in e], errors


def natural_sizes(page) -> dict[str, tuple[int, int]]:
    return page.eval_on_selector_all(
        "img.thumb",
        "imgs => Object.fromEntries(imgs.map(i => [i.alt, [i.naturalWidth, i.naturalHeight]]))",
    )


def test_demo_shows_thumbnails_opens_the_image_and_downloads(site, page, tmp_path: Path):
    page.goto(site["base"] + "/demo")
    page.wait_for_selector(f"body[data-loaded='{site['rich'].session_id}']", timeout=20_000)
    page.wait_for_function(
        "() => { const t = [...document.querySelectorAll('img.thumb')];"
        " return t.length === 3 && t.every(i => i.complete && i.naturalWidth > 0); }",
        timeout=20_000,
    )
    assert page.locator(".msg").count() == 3
    sizes = natural_sizes(page)
    assert sizes['plage été "2025".jpg'] == [200, 125]  # 640x400 fitted into 200
    icon_w, icon_h = ICON.display_size
    assert max(sizes["icône.png"]) == min(200, max(icon_w, icon_h))
    rw, rh = ROTATED.display_size  # EXIF orientation applied: portrait stays portrait
    tw, th = sizes["rotated.jpg"]
    assert (tw > th) == (rw > rh) and max(tw, th) == min(200, max(rw, rh))
    # The PDF is listed with a download link and no thumbnail.
    assert page.locator(".upload", has_text="report.pdf").locator("img").count() == 0

    page.click("img.thumb[alt='plage été \"2025\".jpg']")
    page.wait_for_function(
        "() => document.getElementById('viewer').open"
        " && document.getElementById('full').complete"
        " && document.getElementById('full').naturalWidth > 0",
        timeout=10_000,
    )
    full = page.eval_on_selector("#full", "i => [i.naturalWidth, i.naturalHeight]")
    assert full == [PHOTO.width, PHOTO.height]

    with page.expect_download() as info:
        page.click("#full-download")
    download = info.value
    # Chromium keeps the Unicode name and swaps the quotes, illegal on some file systems.
    assert download.suggested_filename == "plage été _2025_.jpg"
    saved = tmp_path / "saved.jpg"
    download.save_as(saved)
    assert saved.read_bytes() == PHOTO.data


def test_demo_lists_only_the_demo_users_sessions(site, page):
    page.goto(site["base"] + "/demo")
    page.wait_for_selector(f"body[data-loaded='{site['rich'].session_id}']", timeout=20_000)
    options = page.eval_on_selector_all("#sessions option", "os => os.map(o => o.value)")
    assert options == [site["rich"].session_id, site["small"].session_id]
    page.select_option("#sessions", site["small"].session_id)
    page.wait_for_selector(f"body[data-loaded='{site['small'].session_id}']", timeout=10_000)
    assert page.locator(".msg").count() == 1 and page.locator("img.thumb").count() == 0
