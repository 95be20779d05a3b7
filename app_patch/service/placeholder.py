"""The generic picture the thumbnail endpoint sends for an image it cannot render.

History advertises a thumbnail for every image (as the original service did), and some
images cannot be rendered: truncated or corrupt files, more pixels than the limit, types
Pillow cannot decode here, files whose bytes are gone. The original sent such a file's raw
bytes; we send this instead: a small grey square with a "broken picture" glyph, so a
frontend's ``<img>`` shows something that is clearly not the file, and never a hostile file
inline. Pure image work: no HTTP, no database.
"""

from __future__ import annotations

import functools
import io

from PIL import Image, ImageDraw

MIME = "image/png"
_BACKGROUND = (229, 231, 235)
_INK = (107, 114, 128)


@functools.lru_cache(maxsize=8)
def placeholder_png(size: int) -> bytes:
    """A ``size`` x ``size`` PNG (a few hundred bytes), the same for every file."""
    img = Image.new("RGB", (size, size), _BACKGROUND)
    draw = ImageDraw.Draw(img)
    m, w = size // 4, max(1, size // 40)
    frame = (m, m, size - m, size - m)
    draw.rectangle(frame, outline=_INK, width=w)
    # a mountain and a sun, as picture icons have them, crossed out
    base, peak = size - m - w, m + (size - 2 * m) // 3
    draw.polygon([(m + w, base), (size // 2 - m // 4, peak), (size // 2 + m // 2, base)], fill=_INK)
    r = max(1, size // 16)
    cx, cy = size - m - 2 * r - w, m + 2 * r + w
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_INK)
    draw.line((m, m, size - m, size - m), fill=_INK, width=w * 2)
    out = io.BytesIO()
    img.convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(out, "PNG", optimize=True)
    return out.getvalue()
