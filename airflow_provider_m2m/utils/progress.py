"""The progress line a long task logs: ``done / total, rate, ETA``, and how the items ended."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_m2m.utils.version_compat import TaskLog


class Progress:
    """
    Log ``done / total, rate, ETA`` at most every ``every`` seconds on long runs.

    With ``outcomes`` each item is counted under how it ended (``step(outcome=...)``), the line shows every
    count, and it says ``done`` only when every item ended in the first outcome (``1/1 ... done`` never
    stands for a send that failed).

    :param log: the task's logger.
    :param what: what is being counted, e.g. ``SIMs queried``.
    :param total: how many items there are.
    :param every: seconds between two log lines.
    :param outcomes: the ways an item can end, the good one first (e.g. ``("sent", "failed", "unknown")``).
    """

    def __init__(
        self, log: TaskLog, what: str, total: int, every: float = 10.0, outcomes: tuple[str, ...] = ()
    ) -> None:
        self.log = log
        self.what = what
        self.total = total
        self.every = every
        self.outcomes = outcomes
        self.tally: Counter[str] = Counter()
        self.done = 0
        self.started = self._last = time.monotonic()

    def step(self, count: int = 1, outcome: str | None = None) -> None:
        """Count ``count`` more items done (ended in ``outcome``, one of ``outcomes``); log if it is time."""
        self.done += count
        if outcome is not None:
            self.tally[outcome] += count
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress line as text."""
        elapsed = max(1e-9, (now or time.monotonic()) - self.started)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else float("inf")
        counts = f" ({', '.join(f'{self.tally[o]} {o}' for o in self.outcomes)})" if self.outcomes else ""
        text = f"{self.what}: {self.done}/{self.total}{counts} in {elapsed:.1f}s ({rate:.0f}/s)"
        if self.done < self.total:
            return f"{text}, ETA {left:.0f}s"
        if self.outcomes and self.tally[self.outcomes[0]] < self.total:
            return f"{text} - finished, not all {self.outcomes[0]}"
        return f"{text} - done"
