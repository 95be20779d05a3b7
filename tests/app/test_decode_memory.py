"""Decode memory within budget for every format: the worst TIFF (one deflate strip, 7071 x
7071 RGB, about 150 KB on disk) is refused before its decode starts, so the process stays
under 300 MB at upload and at thumbnail time; a placeholder stands in for its thumbnail."""

from __future__ import annotations

import base64
import subprocess
import sys

from app_patch.testdata.hostile import flat_tiff_rgb
from app_patch.testdata.seed import add_session
from tests.app.conftest import ALICE, at, put_file
from tests.app.test_operator_tools import ROOT

PEAK_LIMIT_MB = 300

_MEASURE = """
import sys
from app_patch.service import thumbnails
from app_patch.service.decodepool import give_memory_back
from app_patch.testdata.hostile import flat_tiff16, flat_tiff_rgb
kind = sys.argv[1]
data = flat_tiff_rgb(7071, 7071) if kind == "rgb" else flat_tiff16(7071, 7071)
outcomes = []
for job in (lambda: thumbnails.verify_image(data),
            lambda: thumbnails.verify_and_render(data, [100, 200, 300]),
            lambda: thumbnails.make_thumbnail(data, 200)):
    try:
        job()
        outcomes.append("rendered")
    except thumbnails.ImageTooLarge:
        outcomes.append("refused")
    give_memory_back()
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) // 1024, *outcomes)
"""


def _peak(kind: str) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, kind], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=True)
    peak, *outcomes = proc.stdout.split()
    return int(peak), outcomes


def test_the_worst_tiff_stays_under_the_memory_budget():
    peak, outcomes = _peak("rgb")
    assert outcomes == ["refused", "refused", "refused"]
    assert peak < PEAK_LIMIT_MB, f"{peak} MB"


def test_a_single_strip_tiff_that_fits_still_renders_within_budget():
    peak, outcomes = _peak("gray16")  # 100 MB of pixels plus a 100 MB strip
    assert outcomes == ["rendered", "rendered", "rendered"]
    assert peak < PEAK_LIMIT_MB, f"{peak} MB"


def test_the_api_refuses_its_upload_and_gives_its_thumbnail_a_placeholder(
    client, mongo_db, alice
):
    tiff = flat_tiff_rgb(7071, 7071)
    session = add_session(mongo_db, user_id=ALICE, messages=[("user", "hi", at(0))])
    body = {"session_id": session.session_id,
            "uploads": [{"data": base64.b64encode(tiff).decode(), "name": "big.tif"}]}
    r = client.post("/api/v1/chat/files", headers=alice, json=body)
    assert r.status_code == 422 and "MiB to decode" in r.json()["detail"], r.text
    stored = put_file(mongo_db, tiff, name="big.tif", claimed="image/tiff")  # stored earlier
    r = client.get(f"/api/v1/chat/files/{stored}/thumbnail", headers=alice)
    assert r.status_code == 200 and "x-thumbnail-placeholder" in r.headers
