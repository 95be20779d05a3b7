"""Where the web and image libraries differ between the versions the service runs on.

The newest releases and the original service's pins (FastAPI 0.104.1 with Starlette 0.27,
Pillow 10.0.1) differ in these things the service uses; the MongoDB driver's differences live
in :mod:`app_patch.service.driver`. (FastAPI 0.104 with pydantic 2.12+ also refuses Query and
Header parameters declared inside ``Annotated``: the router declares them as defaults.)
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import re
from typing import Any

from PIL import Image, ImageCms

#: lcms's one-pixel cache off (it is not thread-safe): ``ImageCms.Flags`` since Pillow 10.1,
#: the ``FLAGS`` table (same value) before.
LCMS_NOCACHE: int = (
    ImageCms.Flags.NOCACHE if hasattr(ImageCms, "Flags") else ImageCms.FLAGS["NOTCACHE"]
)


def has_transparency_data(img: Image.Image) -> bool:
    """Whether ``img`` carries transparency (``Image.has_transparency_data``, Pillow 10.1+;
    the same test spelled out before)."""
    known = getattr(img, "has_transparency_data", None)
    return bool(known) if known is not None else _transparency_spelled_out(img)


def _transparency_spelled_out(img: Image.Image) -> bool:
    return (
        img.mode in ("LA", "La", "PA", "RGBA", "RGBa")
        or (img.mode == "P" and img.palette is not None and img.palette.mode.endswith("A"))
        or "transparency" in img.info
    )


def form_limits(**limits: Any) -> dict[str, Any]:
    """The ``Request.form`` limits this Starlette knows.

    ``max_part_size`` came with Starlette 0.40; on older ones a text field is bounded only
    by the request's total size cap (see :func:`app_patch.service.uploads.request_limit`).
    """
    known = _form_parameters()
    return {name: value for name, value in limits.items() if name in known}


def _version(dist: str) -> tuple[int, ...]:
    try:
        text = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ()
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


#: python-multipart before 0.0.7 parses Content-Type parameters with a regex that backtracks
#: exponentially (CVE-2024-24762): 74 bytes hold the event loop for seconds. The original
#: service pins 0.0.6, so on such a stack the upload route checks the header first.
MULTIPART_REDOS: bool = (0, 0, 0) < _version("python-multipart") < (0, 0, 7)

# What browsers, curl, requests and httpx send: a boundary of RFC 2046's characters (1-70,
# optionally quoted, no backslash), and at most a charset besides.
_BOUNDARY = r"(?:[0-9A-Za-z'()+_,./:=?-][0-9A-Za-z'()+_,./:=? -]{0,68}[0-9A-Za-z'()+_,./:=?-]|[0-9A-Za-z'()+_,./:=?-])"
_PARAM = rf"""(?:boundary=(?:{_BOUNDARY}|"{_BOUNDARY}")|charset=[A-Za-z0-9_-]{{1,40}})"""
_BROWSER_MULTIPART = re.compile(
    rf"multipart/form-data(?:[ \t]*;[ \t]*{_PARAM}){{1,2}}[ \t]*", re.IGNORECASE | re.ASCII
)
MAX_CONTENT_TYPE = 200


def browser_like_multipart(content_type: str) -> bool:
    """Whether a multipart ``Content-Type`` is one a browser would send (checked in linear
    time, before python-multipart < 0.0.7 parses it)."""
    return len(content_type) <= MAX_CONTENT_TYPE and bool(
        _BROWSER_MULTIPART.fullmatch(content_type)
    )


@functools.cache
def _form_parameters() -> frozenset[str]:
    from starlette.requests import Request  # here: the image code imports this module too

    return frozenset(inspect.signature(Request.form).parameters)
