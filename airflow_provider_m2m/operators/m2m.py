"""Operators for SIM Insight: fleet IMEI queries and SMS."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_m2m.hooks.m2m import ImeiRecord, M2mHook
from airflow_provider_m2m.operators.arguments import as_iccid_source, as_window, as_workers
from airflow_provider_m2m.operators.base import PlatformOperator

# SetSimStatusOperator lives beside its own rules; every SIM Insight operator is imported from this module.
from airflow_provider_m2m.operators.sim_status import SetSimStatusOperator
from airflow_provider_m2m.sms.ledger import SmsLedger, warn_if_retry_comes_too_soon
from airflow_provider_m2m.sms.report import OUTCOME_COLUMNS
from airflow_provider_m2m.sms.sending import checked_batch, send_once_each
from airflow_provider_m2m.utils.batch_progress import BatchProgress
from airflow_provider_m2m.utils.files import write_csv
from airflow_provider_m2m.utils.progress import Progress
from airflow_provider_m2m.utils.task_failures import bad_input_fails_task

if TYPE_CHECKING:
    from airflow.sdk import Context

# Stands in for a carriage return while a template renders (a private-use character, never valid GSM-7).
_CR = "\ue000"

#: Columns of the CSV that :class:`QueryImeiOperator` writes to ``output_uri``.
CSV_COLUMNS = ("iccid", "current_imei", "last_change", "previous_imei", "error")


#: At most this many ICCIDs are listed in ``changed_iccids`` (about 250 kB of XCom); the CSV has them all.
MAX_CHANGED_ICCIDS = 10_000


class QueryImeiOperator(PlatformOperator[M2mHook]):
    """
    Ask SIM Insight which device (IMEI) each SIM sits in, and when that changed.

    Runs the batch with bounded concurrency over one keep-alive session. Without ``output_uri`` it returns
    one ``ImeiRecord.as_dict()`` row per SIM (kept in XCom: fine for a few thousand SIMs). With
    ``output_uri`` it streams the rows as CSV (header ``iccid,current_imei,last_change,previous_imei,error``;
    CSV because fleet tools and spreadsheets read it and it streams row by row) to that object-storage URI
    and returns a small summary ``{uri, total, changed, unknown, failed, rows}``, so memory and XCom stay
    flat however big the fleet. The file appears whole, each SIM once, only when the batch is done. A retried
    try resumes: answers are flushed beside the file as the batch runs (``<output_uri>.parts/``, see
    :mod:`~airflow_provider_m2m.utils.batch_progress`), and a retry queries only the SIMs they lack (failed
    queries are asked again), then writes the file from both and removes the parts.

    With ``changed_since`` and/or ``changed_before``, only SIMs whose ``last_change`` falls in the half-open
    window ``changed_since <= last_change < changed_before`` are kept (either bound may be left out), plus
    the SIMs whose query failed (their ``error`` is set): a failure is never silently dropped. Half-open, so
    back-to-back nightly windows count a change at the boundary once. A SIM whose ``last_change`` is
    unknown has not "changed" (it is counted in ``unknown``).

    The sorted ICCIDs of the changed SIMs go to the XCom key ``changed_iccids``, so the next task can take
    ``query.output["changed_iccids"]`` directly (e.g. ``SendSmsOperator(iccids=...)``); the ``output_uri``
    summary carries them too. XCom stays small: at most :data:`MAX_CHANGED_ICCIDS` (10,000) are listed; past
    that the summary's ``changed_iccids_truncated`` is true and the CSV has them all.

    For fleet-sized batches, give ``iccids_uri`` instead of ``iccids``: a CSV file with an ``iccid`` column
    (other columns are ignored) on object storage, so the ICCIDs never pass through XCom. The whole file is
    read once and checked whole, each ICCID by the same rule as an ``iccids`` list (a bad one fails the task
    naming the file, the line and the rule, and nothing is sent); a file is one batch, held like a list.

    .. code-block:: python

        QueryImeiOperator.partial(task_id="query", output_uri=..., max_workers=32).expand(iccids=batches)
        QueryImeiOperator(task_id="query", iccids_uri="s3://fleet/batch-7.csv", output_uri="s3://out/batch-7.csv")

    :param iccids: one ICCID (a plain string is one ICCID, never split) or a list of them. Templated.
    :param iccids_uri: instead of ``iccids`` (exactly one of the two): an ObjectStoragePath URI of a CSV
        file with an ``iccid`` column, one SIM per row. Templated.
    :param m2m_conn_id: the SIM Insight connection. Templated.
    :param changed_since: keep SIMs changed at or after this: an aware datetime or ISO 8601 string with an
        offset. Templated.
    :param changed_before: keep SIMs changed strictly before this (same forms); must be later than
        ``changed_since``. Templated.
    :param output_uri: an ObjectStoragePath URI (``file://``, ``s3://``...) for the CSV. Templated.
    :param max_workers: calls in flight at once (default 16). Templated.
    :param list_changed_iccids: False leaves ``changed_iccids`` out of XCom (the key and the summary), for a
        caller that reads the rows instead (the fleet audit's batches): XCom then holds the counts only.
    """

    template_fields: Sequence[str] = (
        "iccids",
        "iccids_uri",
        "m2m_conn_id",
        "changed_since",
        "changed_before",
        "output_uri",
        "max_workers",
    )
    ui_color = "#d8ecf3"
    hook_class = M2mHook

    def __init__(
        self,
        *,
        iccids: str | list[str] | None = None,
        iccids_uri: str | None = None,
        m2m_conn_id: str = M2mHook.default_conn_name,
        changed_since: dt.datetime | str | None = None,
        changed_before: dt.datetime | str | None = None,
        output_uri: str | None = None,
        max_workers: int | None = None,
        list_changed_iccids: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.iccids = iccids
        self.iccids_uri = iccids_uri
        self.list_changed_iccids = list_changed_iccids
        self.m2m_conn_id = m2m_conn_id
        self.changed_since = changed_since
        self.changed_before = changed_before
        self.output_uri = output_uri
        self.max_workers = max_workers

    def execute(self, context: Context) -> list[dict[str, Any]] | dict[str, Any]:
        with bad_input_fails_task():
            numbers = as_iccid_source(self.iccids, self.iccids_uri)
            window = as_window(self.changed_since, self.changed_before)
            workers = as_workers(self.max_workers)
            self.hook.fetch_connection()  # a missing api_id is bad input too: fail before sending
            progress = Progress(self.log, "SIMs queried", len(numbers))
            counts = {"total": 0, "changed": 0, "unknown": 0, "failed": 0}
            changed: list[str] = []
            if self.output_uri:  # a retry resumes: it queries only the SIMs the earlier tries did not answer
                batch = BatchProgress(self.output_uri, CSV_COLUMNS, context["ti"].try_number, self.log)
                answers = batch.answers(numbers, lambda left: self.hook.query_imeis(left, workers))
            else:
                answers = self.hook.query_imeis(numbers, workers)
            records = self._kept(answers, window, progress, counts, changed)
            kept = (record.as_dict() for record in records)
            if not self.output_uri:
                rows = list(kept)
                self.log.info("%s; %s", progress.line(), counts)
                self._push_changed(context, changed, counts["changed"])
                return rows
            written = write_csv(self.output_uri, CSV_COLUMNS, kept)  # first: it fills the counts as it streams
            batch.remove()  # the final file is in place: the parts are no longer needed
            summary = {
                "uri": self.output_uri,
                **counts,
                "rows": written,
            }
            if self.list_changed_iccids:
                summary["changed_iccids"] = sorted(changed)
                summary["changed_iccids_truncated"] = counts["changed"] > len(changed)
        self.log.info("%s; wrote %s", progress.line(), {**summary, "changed_iccids": f"{len(changed)} ICCIDs"})
        self._push_changed(context, changed, counts["changed"])
        return summary

    def _push_changed(self, context: Context, changed: list[str], total_changed: int) -> None:
        if not self.list_changed_iccids:
            return
        if total_changed > len(changed):
            self.log.warning(
                "changed_iccids lists %d of the %d changed SIMs (XCom stays small); the rows have them all",
                len(changed),
                total_changed,
            )
        # ``query.output["changed_iccids"]`` reads the XCom *key* "changed_iccids", not an item of the
        # return value: push the list under that key too, so the natural spelling works downstream.
        context["ti"].xcom_push(key="changed_iccids", value=sorted(changed))

    def _kept(
        self,
        records: Iterable[ImeiRecord],
        window: tuple[dt.datetime | None, dt.datetime | None],
        progress: Progress,
        counts: dict[str, int],
        changed: list[str],
    ) -> Iterator[ImeiRecord]:
        """The records to report (failures always), counting and listing the changed ones as they stream past."""
        filtered = window != (None, None)
        for record in records:
            progress.step()
            counts["total"] += 1
            if record.error:
                counts["failed"] += 1
                self.log.warning("SIM %s: %s", record.iccid, record.error)
                yield record
                continue
            counts["unknown"] += record.last_change is None
            if record.changed_in(*window):
                counts["changed"] += 1
                if self.list_changed_iccids and len(changed) < MAX_CHANGED_ICCIDS:
                    changed.append(record.iccid)
            elif filtered:
                continue
            yield record

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the platform's ``query_imei`` (and the ``iccids_uri`` file) in; ``output_uri`` out."""
        from airflow_provider_m2m.utils import lineage

        inputs = [lineage.platform_dataset(self.hook.base_url, "query_imei")]
        inputs += [lineage.file_dataset(self.iccids_uri)] if self.iccids_uri else []
        outputs = [lineage.file_dataset(self.output_uri)] if self.output_uri else []
        return lineage.operator_lineage(inputs, outputs)


class SendSmsOperator(PlatformOperator[M2mHook]):
    """
    Send one SMS to each SIM, never twice, with up to ``max_workers`` sends in flight.

    Everything is validated first (every ICCID, the text against the GSM 7-bit rules, data coding, origin,
    uid); any invalid item fails the task with :class:`AirflowFailException` and nothing at all is sent. A
    SIM listed twice gets one message (the log says how many duplicates were dropped); an empty list sends
    nothing and succeeds with ``[]``. Each SIM gets its own ``sms_uid``, derived from the run, task, map
    index and ICCID so a retry reuses it.

    Sends are recorded write-ahead in a ledger (:class:`~airflow_provider_m2m.sms.ledger.SmsLedger`: Airflow's
    task state store), a window of SIMs at a time: ``pending`` before the window's first request can leave,
    ``sent`` after the platform's acknowledgement, ``failed`` when the platform refused the SIM for good. A
    retry skips the SIMs recorded as sent or refused; a SIM left ``pending`` (the worker died, or the outcome
    was unknown) is looked up in the platform's SMS history first and resent only when its uid is not there.
    On Airflow without a task state store a retry looks every SIM up that way (a first try needs no look-up).

    After every SIM was tried the task fails, listing them, when any SIM is not confirmed sent: retryably
    (:class:`~airflow_provider_m2m.exceptions.RetryToSettleError`, an ``AirflowException``) when an outcome
    is unknown or the platform turned every attempt away, so Airflow's retries settle them without duplicates;
    without retries (:class:`AirflowFailException`) when the only failures are SIMs the platform refused
    (e.g. ``invalid iccid``): resending cannot help. Either way the rows go to XCom under the key ``outcomes``.

    :param iccids: one ICCID or a list (or give ``iccids_uri``). Templated.
    :param message_text: GSM 7-bit text (at most 160 septets; ^ { } \\ [ ~ ] | € count two), or base64 for
        ``binary`` (at most 120 bytes). Templated.
    :param data_coding: ``default`` or ``binary``. Templated.
    :param origin: sender number (digits); honoured on some SIM types only. Templated.
    :param sms_uid: the message's uid (1-12 ASCII letters/digits); only allowed with a single SIM. Templated.
    :param m2m_conn_id: the SIM Insight connection. Templated.
    :param max_workers: sends in flight at once (default 16, as for the queries). Templated.
    :param iccids_uri: instead of ``iccids``: an ObjectStoragePath URI of a CSV file with an ``iccid`` column
        (one batch, checked whole before anything is sent), so the ICCIDs never pass through XCom. Templated.
    :param output_uri: an ObjectStoragePath URI: the rows go there as CSV (``iccid,sms_uid,outcome,error``,
        also when the task then fails) and XCom gets counts only, ``{uri, total, success, failed, unknown}``.
        Templated.
    """

    template_fields: Sequence[str] = (
        "iccids",
        "iccids_uri",
        "output_uri",
        "message_text",
        "data_coding",
        "origin",
        "sms_uid",
        "m2m_conn_id",
        "max_workers",
    )
    template_fields_renderers = {"message_text": "txt"}
    ui_color = "#f3e0d8"
    hook_class = M2mHook

    def __init__(
        self,
        *,
        iccids: str | list[str] | None = None,
        message_text: str,
        data_coding: str = "default",
        origin: str | None = None,
        sms_uid: str | None = None,
        m2m_conn_id: str = M2mHook.default_conn_name,
        max_workers: int | None = None,
        iccids_uri: str | None = None,
        output_uri: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.iccids = iccids
        self.iccids_uri = iccids_uri
        self.output_uri = output_uri
        self.message_text = message_text
        self.data_coding = data_coding
        self.origin = origin
        self.sms_uid = sms_uid
        self.m2m_conn_id = m2m_conn_id
        self.max_workers = max_workers

    def render_template(self, content: Any, context: Any, jinja_env: Any = None, seen_oids: Any = None) -> Any:
        """
        Render as Airflow does, but keep carriage returns (Jinja turns every ``\\r\\n`` and ``\\r`` into
        ``\\n``), and hand back as it is a string Jinja would give back unchanged (no ``{``, no line break):
        Airflow compiles a template per string, about 10 ms each, so a list of 10,000 ICCIDs took minutes.
        """
        if isinstance(content, str) and "{" not in content and "\n" not in content and "\r" not in content:
            return content
        if not (isinstance(content, str) and "\r" in content and _CR not in content):
            return super().render_template(content, context, jinja_env, seen_oids)
        rendered = super().render_template(content.replace("\r", _CR), context, jinja_env, seen_oids)
        return rendered.replace(_CR, "\r") if isinstance(rendered, str) else rendered

    def execute(self, context: Context) -> list[dict[str, Any]] | dict[str, Any]:
        with bad_input_fails_task():
            # iccids_uri: one batch file, checked whole (exactly one of it and iccids); else the list, maybe empty
            listed = as_iccid_source(self.iccids, self.iccids_uri) if self.iccids_uri not in (None, "") else self.iccids
            batch = checked_batch(listed, self.message_text, self.data_coding, self.origin, self.sms_uid)
            workers = as_workers(self.max_workers)
            if not batch.numbers:
                self.log.info("No SIMs to send to: nothing sent")
                return self._outcomes([])
            self.hook.fetch_connection()  # a missing api_id is bad input too: fail before sending
        if batch.listed > len(batch.numbers):
            self.log.info(
                "%d duplicate ICCIDs dropped: %d SIMs listed, one message each to %d distinct SIMs",
                batch.listed - len(batch.numbers),
                batch.listed,
                len(batch.numbers),
            )
        warn_if_retry_comes_too_soon(self.retries or 0, self.retry_delay.total_seconds(), self.hook.timeout, self.log)
        ti = context["ti"]
        with bad_input_fails_task():  # refused credentials stop the run: retrying cannot help
            sent = send_once_each(
                self.hook,
                SmsLedger(context, self.log),
                batch.numbers,
                batch.uid_maker(ti),
                batch.message,
                max_workers=workers,
                log=self.log,
            )
        kept = self._outcomes(sent.rows)  # the rows reach output_uri also when the task then fails
        if sent.unsent() and not self.output_uri:
            ti.xcom_push(key="outcomes", value=sent.rows)
        sent.raise_unless_all_sent()
        return kept

    def _outcomes(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]] | dict[str, Any]:
        """The rows for XCom; with ``output_uri``, written there instead, and their counts for XCom."""
        if not self.output_uri:
            return rows
        write_csv(self.output_uri, OUTCOME_COLUMNS, rows)
        counts = {"success": 0, "failed": 0, "unknown": 0}
        for row in rows:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        return {"uri": self.output_uri, "total": len(rows), **counts}

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the messages go out to the platform's ``send_sms``."""
        from airflow_provider_m2m.utils import lineage

        return lineage.operator_lineage(outputs=[lineage.platform_dataset(self.hook.base_url, "send_sms")])


__all__ = ["QueryImeiOperator", "SendSmsOperator", "SetSimStatusOperator"]
