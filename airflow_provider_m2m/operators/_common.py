"""What the operators share: bad input fails the task at once, progress logs, small argument coercions."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from airflow_provider_m2m.exceptions import AuthenticationError, InvalidRequestError
from airflow_provider_m2m.hooks.base import MAX_WORKERS_LIMIT
from airflow_provider_m2m.version_compat import AirflowFailException


@contextmanager
def bad_input_fails_task() -> Iterator[None]:
    """
    Turn bad input and refused credentials into :class:`AirflowFailException`: retrying cannot fix either.

    The message is the rule that was broken, naming the field; nothing has been sent at that point.
    """
    try:
        yield
    except (InvalidRequestError, AuthenticationError) as exc:
        raise AirflowFailException(str(exc)) from None


def as_int(value: object, field: str, low: int, high: int) -> int:
    """An integer from ``low`` to ``high``; a templated numeric string is accepted."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequestError(field, f"must be an integer from {low} to {high}", repr(value))
    return value


def as_workers(value: object) -> int | None:
    """``max_workers`` as given to an operator: None (or an empty template) means the hook's default."""
    return None if value in (None, "") else as_int(value, "max_workers", 1, MAX_WORKERS_LIMIT)


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
