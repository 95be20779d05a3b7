"""Progress for long steps: a bar on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")


_WRITE = threading.Lock()


class Reporter:
    """Where a run's messages go (stderr by default). ``quiet`` drops progress only."""

    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False,
                 verbose: bool = False, interval: float = 5.0):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.verbose = verbose
        self.interval = interval
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def info(self, message: str) -> None:
        with _WRITE:
            print(message, file=self.stream, flush=True)

    def progress(self, iterable: Iterable[T], total: int | None = None, label: str = "",
                 *, weight=None) -> Iterator[T]:
        """Yield from ``iterable``, reporting how far along it is.

        ``weight(item)`` counts items that stand for several units (a batch of documents).
        """
        done = 0
        start = last = time.monotonic()
        for item in iterable:
            yield item
            done += weight(item) if weight else 1
            now = time.monotonic()
            if self.quiet:
                continue
            if self.tty and now - last >= 0.1:
                self._bar(label, done, total, now - start)
                last = now
            elif not self.tty and now - last >= self.interval:
                self.info(self._line(label, done, total, now - start))
                last = now
        if not self.quiet and (self.tty or time.monotonic() - start >= self.interval):
            if self.tty:
                with _WRITE:
                    self.stream.write("\r\x1b[K")
            self.info(self._line(label, done, total, time.monotonic() - start) + " done")

    @staticmethod
    def _line(label: str, done: int, total: int | None, elapsed: float) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        of = f"/{total}" if total else ""
        pct = f" {100 * done / total:.0f}%" if total else ""
        return f"  {label}: {done}{of}{pct} ({rate:,.0f}/s)"

    def _bar(self, label: str, done: int, total: int | None, elapsed: float) -> None:
        if total:
            width = 30
            filled = min(width, int(width * done / total))
            bar = "#" * filled + "-" * (width - filled)
            line = f"\r\x1b[K  {label} [{bar}] {done}/{total}"
        else:
            line = f"\r\x1b[K  {label} {done}"
        with _WRITE:  # steps run side by side (op.parallel) take turns on the one line
            self.stream.write(line)
            self.stream.flush()
