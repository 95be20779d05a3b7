"""Output for people: aligned columns and ``name: count`` lines, the same in every command.

Commands return data; the CLI (and the tools that print mongrate's results) render it
with these, so no Python ``dict`` or ``list`` repr reaches a person. ``--json`` keeps the
data as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any


def cell(value: Any) -> str:
    """One value as a person reads it: ``-`` for nothing, dates to the second, sequences
    joined with commas, mappings as ``k=v`` pairs."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return ", ".join(cell(v) for v in items) or "-"
    return str(value)


def columns(header: Sequence[str], rows: Iterable[Sequence[Any]], *,
            right: Iterable[int] = ()) -> list[str]:
    """``rows`` under ``header`` in columns two spaces apart; the columns numbered in
    ``right`` (counts) are aligned right."""
    body = [[cell(v) for v in row] for row in rows]
    table = [list(header), *body]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    flush_right = set(right)
    return ["  ".join(c.rjust(w) if i in flush_right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in table]


def counts(results: Mapping[str, Any], indent: str = "    ") -> list[str]:
    """A step's results as aligned ``name: value`` lines, in the order they were reported;
    numbers aligned right."""
    if not results:
        return []
    names = [f"{k}:" for k in results]
    raw = [int(v) if hasattr(v, "value") else v for v in results.values()]  # lazy counts
    values = [cell(v) for v in raw]
    numeric = [isinstance(v, int | float) and not isinstance(v, bool) for v in raw]
    nw = max(map(len, names))
    vw = max((len(v) for v, n in zip(values, numeric, strict=True) if n), default=0)
    return [f"{indent}{name:<{nw}} {value.rjust(vw) if n else value}".rstrip()
            for name, value, n in zip(names, values, numeric, strict=True)]
