"""Sensor that waits until SMS sent through SIM Insight are delivered (or failed)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.operators.arguments import as_int
from airflow_provider_m2m.operators.base import PlatformHookMixin
from airflow_provider_m2m.protocol.delivery_states import FINAL_STATES
from airflow_provider_m2m.protocol.values import read_literal
from airflow_provider_m2m.sms.delivery import (
    POLL_RETRY_POLICY,
    DeliveryWatch,
    messages_to_watch,
    poll_round,
    requests_per_poke,
)
from airflow_provider_m2m.sms.report import watched_messages, write_deliveries
from airflow_provider_m2m.triggers.m2m import SmsDeliveryTrigger
from airflow_provider_m2m.utils.task_failures import bad_input_fails_task
from airflow_provider_m2m.utils.version_compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    conf,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Task state store key of what a rescheduled sensor has learnt so far.
STATE_KEY = "sms_delivery"


class SmsDeliverySensor(PlatformHookMixin[M2mHook], BaseSensorOperator):
    """
    Wait until every SMS is delivered or failed, polling SIM Insight's ``query_sms_mt_details``.

    SIM Insight's send call only means "accepted": a device that is off gets its message later (the platform
    keeps trying for at least 72 hours). Messages are matched by ``sms_uid`` among each SIM's last ``lastx``
    messages; one query per SIM covers all its watched messages. Each poke asks about at most
    ``max_requests_per_poke`` SIMs whose messages are not final yet, those asked longest ago first, with at
    most ``max_workers`` queries in flight; a failed query is not retried within the poke (the next poke
    asks again). Left unset, the budget scales with the run: what the connection's
    ``max_requests_per_second`` allows in one ``poke_interval`` (10,000 messages at 200/s and a poke every
    60 s: every SIM asked about in the first poke), or 100 when the connection sets no rate; the hook's
    rate limiter spaces the queries, so a poke never goes faster than that limit.

    With ``deferrable=True`` (default: ``[operators] default_deferrable``) the sensor pokes once in the
    worker, then hands the waiting to the triggerer (:class:`~airflow_provider_m2m.triggers.m2m.SmsDeliveryTrigger`),
    so a thousand pending messages hold no worker slot. ``mode="reschedule"`` keeps what it learnt in the
    task state store between pokes; on Airflow 3.1 and 3.2, which have none, it runs as ``mode="poke"`` (with a
    warning).

    Returns (XCom) one row per message: ``iccid``, ``sms_uid``, ``state`` (``delivered``, ``failed``,
    ``pending``, ``unknown`` for a status word the provider does not know, ``not_found``, ``unchecked``),
    ``status`` (the platform's word), ``sent_at``, ``delivered_at`` (ISO 8601, UTC) and ``error``. When the
    wait times out the same rows are pushed to XCom before the sensor fails (or is skipped, with
    ``soft_fail=True``), so a downstream report with ``trigger_rule="all_done"`` still has them.

    .. code-block:: python

        sent = SendSmsOperator(task_id="send", iccids=sims, message_text="Reboot tonight")
        SmsDeliverySensor(task_id="delivered", messages=sent.output, timeout=2 * 3600, soft_fail=True)

    :param messages: what to watch: SendSmsOperator's output (also mapped: a list of lists; rows whose
        ``outcome`` is neither ``success`` nor ``unknown`` are left out, nothing was sent), ``{iccid,
        sms_uid}`` rows or ``[iccid, sms_uid]`` pairs. Templated.
    :param messages_uri: instead of ``messages``: the URI of a CSV file of SendSmsOperator rows (its
        ``output_uri``), or a list of them (a missing file has no messages), so no message passes through XCom.
        Templated.
    :param output_uri: where the rows go (CSV: ``iccid,sms_uid,state,status,sent_at,delivered_at,error``),
        also when the wait times out; XCom then gets ``{uri, messages, delivery: {state: count}}``. Deferred,
        the trigger reads ``messages_uri`` and writes ``output_uri`` itself, so neither its arguments nor its
        event grow with the run. Templated.
    :param m2m_conn_id: the SIM Insight connection. Templated.
    :param max_requests_per_poke: SIM queries per poke (1-1000000; default: ``max_requests_per_second`` x
        ``poke_interval``, or 100 without a rate on the connection).
    :param max_workers: queries in flight at once (1-64, default 8).
    :param lastx: messages asked for per SIM (1-20, default 20): the watched message must still be among
        the SIM's last ``lastx`` messages.
    :param deferrable: wait in the triggerer instead of a worker.
    :param poke_interval: seconds between pokes (default 60).
    """

    template_fields: Sequence[str] = ("messages", "messages_uri", "output_uri", "m2m_conn_id")
    template_fields_renderers = {"messages": "json"}
    ui_color = "#e8f0d8"
    hook_class = M2mHook

    def __init__(
        self,
        *,
        messages: Any = None,
        messages_uri: str | list[str] | None = None,
        output_uri: str | None = None,
        m2m_conn_id: str = M2mHook.default_conn_name,
        max_requests_per_poke: int | None = None,
        max_workers: int = 8,
        lastx: int = 20,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: dt.timedelta | float = 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.messages = messages
        self.messages_uri = messages_uri
        self.output_uri = output_uri
        self.m2m_conn_id = m2m_conn_id
        self.max_requests_per_poke = max_requests_per_poke
        self.max_workers = max_workers
        self.lastx = lastx
        self.deferrable = deferrable
        self._watch: DeliveryWatch | None = None

    @property
    def hook_parameters(self) -> dict[str, Any]:
        """The SIM Insight hook polls politely: one attempt per query per poke."""
        return {**super().hook_parameters, "retry_policy": POLL_RETRY_POLICY}

    def execute(self, context: Context) -> Any:
        with bad_input_fails_task():
            uris = self._messages_uris()
            pairs, skipped = messages_to_watch(watched_messages(uris) if uris else self.messages)
            asked_for = self.max_requests_per_poke
            if asked_for is not None:
                asked_for = as_int(asked_for, "max_requests_per_poke", 1, 1_000_000)
            self.max_workers = as_int(self.max_workers, "max_workers", 1, 64)
            self.lastx = as_int(self.lastx, "lastx", 1, 20)
            self.hook.fetch_connection()  # a connection without api_id is bad input: fail before polling
            self.max_requests_per_poke = requests_per_poke(asked_for, self.poke_interval, self.hook.limiter.rate)
        if skipped:
            self.log.info("%d rows were not sent (their outcome says so); not waiting for them", skipped)
        store = context.get("task_state_store")
        if store is None and self.reschedule:
            # Airflow before 3.3: nothing durable carries what one poke learnt to the next, and a reschedule
            # that forgets would ask about the same first messages forever. Poking in place stays correct.
            self.log.warning("No task state store on this Airflow: mode='reschedule' runs as mode='poke'")
            self.mode = "poke"
        known = store.get(STATE_KEY) if store is not None and self.reschedule else None
        self._watch = DeliveryWatch(pairs, known if isinstance(known, list) else None)
        if not self._watch.deliveries:
            self.log.info("No message to wait for")
            return self._result([])
        self.log.info(
            "Waiting for %d messages to %d SIMs, asking about at most %d SIMs every %.1fs",
            len(pairs),
            len({n for n, _ in pairs}),
            self.max_requests_per_poke,
            self.poke_interval,
        )
        if not self.deferrable:
            try:
                return super().execute(context)
            except (AirflowSensorTimeout, AirflowSkipException):
                self._keep_report(context, self._watch.report())
                raise
        poke_started = time.monotonic()
        # With files, the trigger starts afresh from them: what a poke here learnt would go into its kwargs.
        if not uris and self.poke(context):  # settled already: no need to defer
            return self._watch.report()
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.timeout)
        self.defer(
            trigger=SmsDeliveryTrigger(
                messages=[] if uris else [list(pair) for pair in pairs],
                messages_uri=uris,
                output_uri=self.output_uri,
                deadline=deadline.isoformat(),
                m2m_conn_id=self.m2m_conn_id,
                poke_interval=self.poke_interval,
                max_requests_per_poke=self.max_requests_per_poke,
                max_workers=self.max_workers,
                lastx=self.lastx,
                known=[] if uris else self._watch.known(),
                wait_first=False if uris else max(0.0, self.poke_interval - (time.monotonic() - poke_started)),
                exponential_backoff=self.exponential_backoff,
                max_wait=self.max_wait.total_seconds() if self.max_wait else None,
            ),
            method_name="execute_complete",
            # The trigger ends itself at the deadline with a report; this is only the safety net.
            timeout=dt.timedelta(seconds=self.timeout + 10 * self.poke_interval + 60),
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        watch = self._watch
        if watch is None:  # an explicit check, not an assert: ``python -O`` strips asserts
            raise RuntimeError("SmsDeliverySensor.poke() runs from execute(), which builds the watch first")
        with bad_input_fails_task():
            self.hook.fetch_connection()  # on this thread, outside the event loop
            asyncio.run(
                poll_round(
                    self.hook,
                    watch,
                    budget=cast(int, self.max_requests_per_poke),  # sized by execute(), before any poke
                    lastx=self.lastx,
                    max_workers=self.max_workers,
                    log=self.log,
                )
            )
        store = context.get("task_state_store")
        if store is not None and self.reschedule:
            store.set(STATE_KEY, watch.known())
        if watch.settled:
            return PokeReturnValue(is_done=True, xcom_value=self._result(watch.report()))
        return False

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Resume after the trigger: return the report, or keep it and fail (skip) on timeout or error."""
        if "output_uri" in event:  # the trigger wrote the rows: XCom gets the counts
            kept: Any = self._summary(event["output_uri"], event.get("counts", {}))
            self.log.info("SMS delivery: %s; rows in %s", kept["delivery"] or "nothing watched", kept["uri"])
            unsettled = {s: n for s, n in kept["delivery"].items() if s not in FINAL_STATES}
            if event.get("status") != "success" and unsettled:
                self.log.warning("Messages not delivered or failed yet: %s", unsettled)
        else:
            kept = event.get("deliveries", [])
            watch = DeliveryWatch([(r["iccid"], r["sms_uid"]) for r in kept], kept)
            self.log.info("%s", watch.summary())
            if event.get("status") != "success":
                self._log_unsettled(kept)
        if event.get("status") == "success":
            return kept
        context["ti"].xcom_push(key="return_value", value=kept)
        if event.get("status") == "timeout":
            raise AirflowSensorTimeout(f"Not every SMS was delivered or failed: {event.get('message')}")
        raise AirflowFailException(f"Waiting for SMS delivery failed: {event.get('message')}")

    def _messages_uris(self) -> list[str] | None:
        """``messages_uri`` as a list (a template may render a list as text), or None; not both it and messages."""
        uris = self.messages_uri
        if uris in (None, "", []):
            return None
        if self.messages not in (None, "", []):
            raise InvalidRequestError("messages / messages_uri", "give one of the two, not both")
        if isinstance(uris, str) and uris.lstrip().startswith("["):
            uris = cast("str | list[str]", read_literal(uris))  # a list literal, or text: checked below
        return [uris] if isinstance(uris, str) else [str(uri) for uri in uris]

    def _summary(self, uri: str, counts: dict[str, int]) -> dict[str, Any]:
        return {"uri": uri, "messages": sum(counts.values()), "delivery": dict(counts)}

    def _result(self, rows: list[dict[str, Any]]) -> Any:
        """The rows for XCom; with ``output_uri``, written there, and their counts for XCom."""
        if not self.output_uri:
            return rows
        write_deliveries(self.output_uri, rows)
        return self._summary(self.output_uri, dict(Counter(row["state"] for row in rows)))

    def _keep_report(self, context: Context, rows: list[dict[str, Any]]) -> None:
        self._log_unsettled(rows)
        context["ti"].xcom_push(key="return_value", value=self._result(rows))

    def _log_unsettled(self, rows: list[dict[str, Any]]) -> None:
        unsettled = [r for r in rows if r["state"] not in FINAL_STATES]
        shown = "; ".join(f"{r['iccid']} {r['sms_uid']}: {r['state']}" for r in unsettled[:20])
        more = f" and {len(unsettled) - 20} more" if len(unsettled) > 20 else ""
        self.log.warning("%d of %d messages not delivered or failed yet: %s%s", len(unsettled), len(rows), shown, more)


__all__ = ["SmsDeliverySensor"]
