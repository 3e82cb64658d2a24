"""The durable record of which SIMs an SMS task has already sent to, so a retry never sends twice."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.execution_time.context import NEVER_EXPIRE


class SmsLedger:
    """
    Per-SIM send state kept in Airflow's task state store (Airflow 3.3+), which outlives the task's tries.

    Keys are ``sms:<iccid>``; values ``{"state": "pending" | "sent", "sms_uid": ...}``. ``pending`` is written
    before the request goes out, so a worker killed mid-send leaves a trace the next try settles. When the
    task runs without a state store (a bare ``operator.execute()`` outside a task runner) an in-memory dict
    stands in and a warning says that retries are not protected.

    :param context: the task's context.
    :param log: the task's logger.
    """

    def __init__(self, context: Any, log: logging.Logger) -> None:
        self._store = context.get("task_state_store")
        self._memory: dict[str, Any] = {}
        if self._store is None:
            log.warning("No task state store here: a retry of this task would not know what was already sent")

    def _get(self, key: str) -> Any:
        return self._memory.get(key) if self._store is None else self._store.get(key)

    def _set(self, key: str, value: dict[str, str]) -> None:
        if self._store is None:
            self._memory[key] = value
        else:
            self._store.set(key, value, retention=NEVER_EXPIRE)

    def get(self, iccid: str) -> str | None:
        """``pending``, ``sent``, or None when this SIM has no record."""
        value = self._get(f"sms:{iccid}")
        return value.get("state") if isinstance(value, dict) else None

    def mark_pending(self, iccid: str, sms_uid: str) -> None:
        """Record that a message is about to go out."""
        self._set(f"sms:{iccid}", {"state": "pending", "sms_uid": sms_uid})

    def mark_sent(self, iccid: str, sms_uid: str) -> None:
        """Record the platform's acknowledgement."""
        self._set(f"sms:{iccid}", {"state": "sent", "sms_uid": sms_uid})

    def forget(self, iccid: str) -> None:
        """Drop the record: the message was refused, so it certainly did not go out."""
        if self._store is None:
            self._memory.pop(f"sms:{iccid}", None)
        else:
            self._store.delete(f"sms:{iccid}")
