"""Trigger that waits for SIM Insight SMS delivery in the triggerer, so no worker slot is held."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_m2m.exceptions import AuthenticationError, InvalidRequestError
from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.sms.delivery import (
    POLL_RETRY_POLICY,
    DeliveryWatch,
    messages_to_watch,
    poll_round,
    requests_per_poke,
)

#: The shortest pause between two rounds, whatever poke_interval says: never a busy loop against the platform.
MIN_INTERVAL = 0.1


class SmsDeliveryTrigger(BaseTrigger):
    """
    Poll ``query_sms_mt_details`` until every message is delivered or failed, or the deadline passes.

    A round starts every ``poke_interval`` (a round that takes longer is followed by the next one at once,
    after at least 0.1 s) and asks about at most ``max_requests_per_poke`` SIMs (those asked longest ago
    first; unset: what the connection's ``max_requests_per_second`` allows in one ``poke_interval``, see
    :func:`~airflow_provider_m2m.sms.delivery.requests_per_poke`), at most ``max_workers`` at a time; a round in
    which queries failed doubles the interval (up to ``max_wait``), as does every round with
    ``exponential_backoff``. Polling only reads, so a
    triggerer restart that runs this again from its kwargs is harmless.

    Fires one event: ``{"status": "success" | "timeout" | "error", "deliveries": [...], "message": str}``
    where ``deliveries`` are :meth:`DeliveryWatch.report` rows. With ``output_uri`` the rows are written there
    instead and the event carries ``output_uri`` and ``counts`` (messages per state): neither the trigger's
    kwargs nor its event then grow with the number of messages.

    :param messages: ``[iccid, sms_uid]`` pairs.
    :param messages_uri: instead of ``messages``: URIs of CSV files of SendSmsOperator rows (``iccid``,
        ``sms_uid``, ``outcome``), read when the trigger starts (again after a triggerer restart).
    :param output_uri: where the report rows go (CSV), instead of the event.
    :param deadline: ISO 8601 moment (with a timezone) when waiting ends.
    :param m2m_conn_id: the SIM Insight connection.
    :param poke_interval: seconds between rounds.
    :param max_requests_per_poke: SIM queries per round (None: derived from the connection's rate limit).
    :param max_workers: queries in flight at once.
    :param lastx: messages asked for per SIM (1-20); the watched message must be among them.
    :param known: what the sensor learnt before deferring (:meth:`DeliveryWatch.known`).
    :param wait_first: sleep before the first round (the sensor has just poked): True for one interval, or
        the seconds left of the interval the sensor's poke started.
    :param exponential_backoff: double the interval after every round.
    :param max_wait: the longest interval when backing off (default 16 × ``poke_interval``).
    """

    def __init__(
        self,
        *,
        messages: list[list[str]] | None = None,
        deadline: str,
        m2m_conn_id: str = M2mHook.default_conn_name,
        poke_interval: float = 60.0,
        max_requests_per_poke: int | None = None,
        max_workers: int = 8,
        lastx: int = 20,
        known: list[dict[str, Any]] | None = None,
        wait_first: bool | float = False,
        exponential_backoff: bool = False,
        max_wait: float | None = None,
        messages_uri: list[str] | None = None,
        output_uri: str | None = None,
    ) -> None:
        super().__init__()
        self.messages = [list(pair) for pair in messages or []]
        self.messages_uri = list(messages_uri) if messages_uri else None
        self.output_uri = output_uri
        self.deadline = deadline
        self.m2m_conn_id = m2m_conn_id
        self.poke_interval = float(poke_interval)
        self.max_requests_per_poke = int(max_requests_per_poke) if max_requests_per_poke is not None else None
        self.max_workers = int(max_workers)
        self.lastx = int(lastx)
        self.known = list(known or [])
        self.wait_first = wait_first if isinstance(wait_first, bool) else float(wait_first)
        self.exponential_backoff = bool(exponential_backoff)
        self.max_wait = float(max_wait) if max_wait is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the JSON-safe kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "messages": self.messages,
                "deadline": self.deadline,
                "m2m_conn_id": self.m2m_conn_id,
                "poke_interval": self.poke_interval,
                "max_requests_per_poke": self.max_requests_per_poke,
                "max_workers": self.max_workers,
                "lastx": self.lastx,
                "known": self.known,
                "wait_first": self.wait_first,
                "exponential_backoff": self.exponential_backoff,
                "max_wait": self.max_wait,
                "messages_uri": self.messages_uri,
                "output_uri": self.output_uri,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll round after round; yield one event and stop."""
        deadline = dt.datetime.fromisoformat(self.deadline)
        watch = DeliveryWatch(self.messages, self.known)
        hook = M2mHook(self.m2m_conn_id, retry_policy=POLL_RETRY_POLICY)
        longest = self.max_wait if self.max_wait is not None else 16 * self.poke_interval
        interval = self.poke_interval
        wait = self.wait_first is not False
        # As if the last round started so long ago that the first pause is wait_first seconds.
        first_pause = interval if self.wait_first is True else float(self.wait_first)
        round_started = time.monotonic() - (interval - first_pause)
        try:
            if self.messages_uri:
                watch = DeliveryWatch(await self._read_messages(), self.known)
            await hook.afetch_connection()
            budget = requests_per_poke(self.max_requests_per_poke, self.poke_interval, hook.limiter.rate)
            while True:
                if wait:
                    left = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
                    if left <= 0:
                        yield TriggerEvent(await self._event("timeout", watch, f"the wait ended at {self.deadline}"))
                        return
                    # Rounds start every interval: a big round's own duration counts towards the pause.
                    pause = interval - (time.monotonic() - round_started)
                    await asyncio.sleep(min(max(pause, MIN_INTERVAL), left))
                wait = True
                round_started = time.monotonic()
                failed = await poll_round(
                    hook,
                    watch,
                    budget=budget,
                    lastx=self.lastx,
                    max_workers=self.max_workers,
                    log=self.log,
                )
                if watch.settled:
                    yield TriggerEvent(await self._event("success", watch, "every message is delivered or failed"))
                    return
                backing_off = failed or self.exponential_backoff
                interval = min(longest, interval * 2) if backing_off else self.poke_interval
        except (AuthenticationError, InvalidRequestError) as exc:
            yield TriggerEvent(await self._event("error", watch, str(exc)))

    async def _read_messages(self) -> list[tuple[str, str]]:
        from airflow_provider_m2m.sms.report import watched_messages

        # Object storage reads block: in a thread, so the triggerer's other triggers go on.
        rows = await asyncio.to_thread(watched_messages, self.messages_uri or [])
        return messages_to_watch(rows)[0]

    async def _event(self, status: str, watch: DeliveryWatch, message: str) -> dict[str, Any]:
        if not self.output_uri:
            return {"status": status, "message": message, "deliveries": watch.report()}
        from airflow_provider_m2m.sms.report import write_deliveries

        await asyncio.to_thread(write_deliveries, self.output_uri, watch.report())
        return {"status": status, "message": message, "output_uri": self.output_uri, "counts": watch.tally()}


__all__ = ["SmsDeliveryTrigger"]
