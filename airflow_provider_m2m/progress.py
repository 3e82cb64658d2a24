"""The progress line a long task logs: ``done / total, rate, ETA``."""

from __future__ import annotations

import logging
import time


class Progress:
    """
    Log ``done / total, rate, ETA`` at most every ``every`` seconds on long runs.

    :param log: the task's logger.
    :param what: what is being counted, e.g. ``SIMs queried``.
    :param total: how many items there are.
    :param every: seconds between two log lines.
    """

    def __init__(self, log: logging.Logger, what: str, total: int, every: float = 10.0) -> None:
        self.log = log
        self.what = what
        self.total = total
        self.every = every
        self.done = 0
        self.started = self._last = time.monotonic()

    def step(self, count: int = 1) -> None:
        """Count ``count`` more items done; log if it is time."""
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress line as text."""
        elapsed = max(1e-9, (now or time.monotonic()) - self.started)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else float("inf")
        return f"{self.what}: {self.done}/{self.total} in {elapsed:.1f}s ({rate:.0f}/s), ETA {left:.0f}s" + (
            "" if self.done < self.total else " - done"
        )
