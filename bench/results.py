"""One machine-readable line per benchmark target, for ``bench/summary.py``.

Each bench stays runnable alone and prints its own table; :func:`record` adds a line
``BENCH-RESULT {json}`` that the summariser collects from every bench's output.
"""

from __future__ import annotations

import json
import os

PREFIX = "BENCH-RESULT "


def load() -> str:
    """The load average, printed beside figures measured on a shared machine."""
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def record(bench: str, what: str, figure: str, reference: str, target: str,
           passed: bool | None) -> bool | None:
    """Print one target's result as a line the summariser reads; ``passed`` None for a
    figure printed for information (no target)."""
    print(PREFIX + json.dumps({"bench": bench, "what": what, "figure": figure,
                               "reference": reference, "target": target,
                               "passed": passed, "load": load()}), flush=True)
    return passed
