"""The durable record of which SIMs an SMS task has already sent to, so a retry never sends twice."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_m2m.utils.version_compat import TaskLog

#: Written before a SIM's request can leave; replaced once its outcome is known. A SIM still ``pending`` on a
#: retry may have been sent to (the worker died, or the answer never came): it is looked up first.
PENDING = "pending"
#: The platform acknowledged the message: never sent again.
SENT = "sent"
#: The platform refused the message for good (``api_outcome`` failure, e.g. ``invalid iccid``): never sent again.
FAILED = "failed"


class SmsLedger:
    """
    Per-SIM send state that outlives a task's tries.

    SIMs are recorded a window at a time: key ``sms:<window number>``, value ``{iccid: "pending" | "sent" |
    "failed"}``. Every SIM of a window not yet settled is written ``pending`` before the window's first request
    leaves (write-ahead), and the window's outcomes are written once its last SIM is done. That is two round
    trips to the store per window (plus one read per window on a retry), whatever the concurrency.

    Where the store lives:

    * Airflow 3.3+: the task state store (``context["task_state_store"]``), kept across tries.
    * Airflow without a task state store (3.1, 3.2): nothing survives a try, so a retry (``try_number`` > 1)
      treats every SIM as ``pending``: each is looked up in the platform's SMS history before it is sent
      (:attr:`durable` is False). A first try needs no look-ups: nothing was sent before it.
    * A bare ``operator.execute()`` outside a task runner: a first try, recorded in memory only.

    :param context: the task's context.
    :param log: the task's logger.
    """

    def __init__(self, context: Any, log: TaskLog) -> None:
        self._store = context.get("task_state_store")
        self.first_try = getattr(context.get("ti"), "try_number", 1) <= 1
        self._memory: dict[int, dict[str, str]] = {}
        #: Reads and writes of the task state store so far, and the seconds they took (for the run's log line).
        self.round_trips = 0
        self.store_seconds = 0.0
        if self._store is None and not self.first_try:
            log.warning(
                "No task state store on this Airflow: this retry looks every SIM up in the platform's SMS "
                "history before sending to it (one query per SIM)"
            )

    @property
    def durable(self) -> bool:
        """True when what is recorded survives the task's tries (a task state store is there)."""
        return self._store is not None

    def prior(self, window: int, numbers: list[str]) -> dict[str, str]:
        """
        What earlier tries recorded for window number ``window`` (its SIMs are ``numbers``): a SIM left out
        was certainly not sent to; a ``pending`` SIM has to be looked up before it is sent.
        """
        if self.first_try:
            return dict(self._memory.get(window, {}))
        if self._store is None:
            return dict.fromkeys(numbers, PENDING)
        value = self._timed(self._store.get, f"sms:{window}")
        return dict(value) if isinstance(value, dict) else {}

    def save(self, window: int, states: dict[str, str]) -> None:
        """Record the state of each SIM of window number ``window``; SIMs left out have no record."""
        if self._store is None:
            self._memory[window] = dict(states)
            return
        # Imported here: a store exists only on Airflow 3.3+, where this name exists too.
        from airflow.sdk.execution_time.context import NEVER_EXPIRE

        self._timed(self._store.set, f"sms:{window}", states, retention=NEVER_EXPIRE)

    def _timed(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            self.round_trips += 1
            self.store_seconds += time.perf_counter() - started


def warn_if_retry_comes_too_soon(retries: int, retry_delay: float, timeout: float, log: TaskLog) -> None:
    """
    Warn when a task's ``retry_delay`` (seconds) is shorter than the connection's ``timeout``: a retry could
    look a SIM up before the platform finished a request whose answer was lost, and send it again.
    """
    if retries and retry_delay < timeout:
        log.warning(
            "retry_delay (%.0fs) is shorter than the connection's timeout (%.0fs): a retry could look a SIM "
            "up before the platform finished a request whose answer was lost, and send it again",
            retry_delay,
            timeout,
        )
