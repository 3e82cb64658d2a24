"""The durable record of which SIMs an SMS task has already sent to, so a retry never sends twice."""

from __future__ import annotations

import logging
from typing import Any


class SmsLedger:
    """
    Per-SIM send state kept in Airflow's task state store (Airflow 3.3+), which outlives the task's tries.

    SIMs are recorded a chunk at a time: key ``sms:<chunk number>``, value ``{iccid: "pending" | "sent"}``.
    Before a chunk's first request every SIM of it not yet sent is written ``pending`` (write-ahead), and
    after the chunk the outcomes are written. That is two round trips to the store per chunk instead of two
    per SIM; the price of a worker dying mid-chunk is that the retry settles up to :attr:`CHUNK` pending SIMs
    from the platform's SMS history before resending. A first try reads nothing: there is nothing to read.
    Without a state store (a bare ``operator.execute()`` outside a task runner) a dict stands in and a
    warning says that retries are not protected.

    :param context: the task's context.
    :param log: the task's logger.
    """

    CHUNK = 25

    def __init__(self, context: Any, log: logging.Logger) -> None:
        self._store = context.get("task_state_store")
        self._first_try = getattr(context.get("ti"), "try_number", 1) <= 1
        self._memory: dict[int, dict[str, str]] = {}
        if self._store is None:
            log.warning("No task state store here: a retry of this task would not know what was already sent")

    def load(self, chunk: int) -> dict[str, str]:
        """The recorded state of each SIM of chunk number ``chunk`` (empty when nothing was recorded)."""
        if self._store is None:
            return dict(self._memory.get(chunk, {}))
        if self._first_try:
            return {}
        value = self._store.get(f"sms:{chunk}")
        return dict(value) if isinstance(value, dict) else {}

    def save(self, chunk: int, states: dict[str, str]) -> None:
        """Record the state of each SIM of chunk number ``chunk``; SIMs left out have no record."""
        if self._store is None:
            self._memory[chunk] = dict(states)
        else:
            # Imported here: a store exists only on Airflow 3.3+, where this name exists too.
            from airflow.sdk.execution_time.context import NEVER_EXPIRE

            self._store.set(f"sms:{chunk}", states, retention=NEVER_EXPIRE)
