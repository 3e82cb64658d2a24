"""
:class:`SmsRun`: one SMS to many SIMs as one task group a user drops into a DAG.

Tasks (ids prefixed with the group's): ``validate_and_plan`` -> ``send_sms`` (mapped, one per batch) ->
``wait_for_delivery`` (deferrable) -> ``write_report``, plus ``batches_to_send`` and ``delivery_wait``, which
turn the plan into the lists the two mapped tasks expand over (Airflow maps over a task's return value only).
Rows live in object storage (see :mod:`~airflow_provider_m2m.sms.report`); XCom carries URIs and counts,
so it grows with the batches, never with the SIMs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import TaskGroup, task

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.operators.arguments import as_int
from airflow_provider_m2m.operators.m2m import SendSmsOperator
from airflow_provider_m2m.sensors.m2m import SmsDeliverySensor

#: Batches sent at once within a run when no ``max_active_batches`` is given.
DEFAULT_ACTIVE_BATCHES = 4
#: The longest delivery wait: the platform keeps trying for 72 hours.
MAX_WAIT_SECONDS = 72 * 3600


class SmsRun(TaskGroup):
    """
    Send one SMS to every SIM of a list and/or a fleet file, wait for delivery, and report on every SIM.

    A :class:`~airflow.sdk.TaskGroup` (a subclass, so it shows as one group in the UI, ``run >> next_task``
    works as for any group, and ``run.report`` hangs off the object the DAG holds). In order:

    1. ``validate_and_plan``: every ICCID (``iccids`` plus the fleet file's ``iccid`` column, duplicates
       dropped) and the message are checked before anything is sent: one bad ICCID or one character outside
       the GSM 7-bit alphabet fails the run and nothing goes out. The SIMs are cut into batch files.
    2. ``send_sms``: one mapped :class:`~airflow_provider_m2m.operators.m2m.SendSmsOperator` per batch,
       ``max_workers`` sends in flight each, never twice to a SIM (its ledger; a retry resends only to SIMs
       not confirmed). Each writes its rows to a file. Nothing is sent on a dry run.
    3. ``wait_for_delivery``: a deferrable :class:`~airflow_provider_m2m.sensors.m2m.SmsDeliverySensor` (it
       waits in the triggerer, holding no worker slot) for at most ``delivery_wait``; messages still pending
       then are reported as pending (the wait is skipped, not failed).
    4. ``write_report``: ``outcomes.csv``, one row per SIM, failures included (a SIM whose batch task did not
       run is ``not_attempted``); it fails the run, after writing the report, when any SIM was not confirmed
       sent (without retries: the sends' own retries are over, and rewriting the report cannot send).

    Two small tasks between them, ``batches_to_send`` and ``delivery_wait``, turn the plan into the lists
    ``send_sms`` and ``wait_for_delivery`` are mapped over (empty on a dry run, so both are skipped).

    Files go under ``<report_base_uri>/<dag_id>/<run_id>/<group_id>/``.

    .. code-block:: python

        run = SmsRun(group_id="notify", iccids=audit.changed_iccids, message_text="Tracker moved: call us")
        run.report  # -> {"report_csv": ..., "sims": 3, "outcomes": {"success": 3}, "delivery": {...}}

    :param group_id: the task group's id.
    :param iccids: ICCIDs: a list, an XComArg (e.g. another task's list), or a template rendering a list.
        Templated.
    :param fleet_uri: an ObjectStoragePath URI of a CSV file with an ``iccid`` column, added to ``iccids``.
        Templated.
    :param message_text: the SMS (GSM 7-bit, at most 160 septets), or base64 for ``binary``. Templated.
    :param data_coding: ``default`` or ``binary``. Templated.
    :param dry_run: validate and write the report of what would be sent, sending nothing (True, or the text
        ``true``/``false``). Templated.
    :param delivery_wait: the longest wait for delivery: a timedelta or seconds (0: look once). Templated.
    :param report_base_uri: where the run's files go (default: ``reports/`` under the Airflow home). Templated.
    :param batch_size: SIMs per send task (default 1000). Templated.
    :param max_workers: sends in flight per batch (default 16). Templated.
    :param m2m_conn_id: the SIM Insight connection. Templated.
    :param pool: an Airflow pool for the send tasks (create it first: a task waits for a missing pool).
        Not templated (the scheduler reads it).
    :param max_active_batches: send tasks of one run at once (default 4), with or without a pool, so a run
        never floods the platform even without a pool.
    :param poke_interval: seconds between the delivery wait's polls (default 15).
    :param kwargs: passed to :class:`~airflow.sdk.TaskGroup` (``tooltip``, ``default_args``...).
    """

    def __init__(
        self,
        group_id: str,
        *,
        iccids: Any = None,
        fleet_uri: Any = None,
        message_text: Any,
        data_coding: Any = "default",
        dry_run: Any = False,
        delivery_wait: dt.timedelta | float | str = dt.timedelta(minutes=10),
        report_base_uri: Any = None,
        batch_size: Any = 1000,
        max_workers: Any = 16,
        m2m_conn_id: str = M2mHook.default_conn_name,
        pool: str | None = None,
        max_active_batches: int = DEFAULT_ACTIVE_BATCHES,
        poke_interval: float = 15,
        **kwargs: Any,
    ) -> None:
        super().__init__(group_id=group_id, **kwargs)
        if isinstance(delivery_wait, dt.timedelta):
            delivery_wait = delivery_wait.total_seconds()
        with self:
            plan = validate_and_plan(
                iccids=iccids,
                fleet_uri=fleet_uri,
                message_text=message_text,
                data_coding=data_coding,
                dry_run=dry_run,
                delivery_wait=delivery_wait,
                report_base_uri=report_base_uri,
                batch_size=batch_size,
                group_id=str(self.group_id),  # a group built by a user always has its id
            )
            send = SendSmsOperator.partial(
                task_id="send_sms",
                message_text=message_text,
                data_coding=data_coding,
                m2m_conn_id=m2m_conn_id,
                max_workers=max_workers,
                max_active_tis_per_dagrun=max_active_batches,
                retries=2,
                retry_delay=dt.timedelta(seconds=30),
                **({"pool": pool} if pool else {}),
            ).expand_kwargs(send_arguments(plan))
            # Mapped over one set of arguments (none on a dry run) so the wait's timeout can be templated.
            # Deferrable: the triggerer polls; a wait that ends with messages pending is skipped, not failed.
            wait = SmsDeliverySensor.partial(
                task_id="wait_for_delivery",
                m2m_conn_id=m2m_conn_id,
                deferrable=True,
                poke_interval=poke_interval,
                max_workers=16,
                max_wait=300,
                soft_fail=True,
                trigger_rule="all_done",  # the batches that went out are waited for, also when one failed
            ).expand_kwargs(wait_arguments(plan))
            report = write_report(plan=plan)
            send >> wait >> report
        #: XComArg: ``{"report_csv", "sims", "outcomes": {outcome: count}, "delivery": {state: count}}``.
        self.report = report


def _flag(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidRequestError(field, "must be true or false", repr(value))


def _seconds(value: object) -> float:
    if isinstance(value, dt.timedelta):  # e.g. from an XComArg
        value = value.total_seconds()
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            rule = "must be a timedelta or a number of seconds"
            raise InvalidRequestError("delivery_wait", rule, repr(value)) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_WAIT_SECONDS:
        raise InvalidRequestError("delivery_wait", f"must be 0 to {MAX_WAIT_SECONDS} seconds (72 hours)", repr(value))
    return float(value)


def _absent(value: object) -> bool:
    # What a template makes of an empty form field: "", "None", "[]".
    return value is None or (isinstance(value, str) and value.strip() in ("", "None", "[]"))


@task(multiple_outputs=False)  # one XCom, read whole by the next tasks
def validate_and_plan(
    *,
    iccids: Any,
    fleet_uri: Any,
    message_text: Any,
    data_coding: Any,
    dry_run: Any,
    delivery_wait: Any,
    report_base_uri: Any,
    batch_size: Any,
    group_id: str,
    ti: Any = None,
) -> dict[str, Any]:
    """Validate every SIM and the message before anything is sent; write the batch files."""
    from airflow_provider_m2m.protocol import iccid, sms
    from airflow_provider_m2m.sms.report import run_folder, write_batches
    from airflow_provider_m2m.utils.fleet_file import fleet_iccids
    from airflow_provider_m2m.utils.version_compat import AirflowFailException

    try:
        numbers = [] if _absent(iccids) else iccid.validate_many(iccids, allow_empty=True)
        if not _absent(fleet_uri):
            numbers += fleet_iccids(str(fleet_uri).strip(), label="fleet_uri")
        if not numbers:
            raise InvalidRequestError("iccids / fleet_uri", "at least one ICCID is required (none listed)")
        numbers = list(dict.fromkeys(numbers))  # one message per SIM
        coding = sms.validate_data_coding(data_coding)
        sms.validate_message(message_text, coding)
        dry = _flag(dry_run, "dry_run")
        wait = _seconds(delivery_wait)
        size = as_int(batch_size, "batch_size", 1, 100_000)
        base = None if _absent(report_base_uri) else str(report_base_uri).strip()
    except InvalidRequestError as exc:
        raise AirflowFailException(f"Nothing sent: {exc}") from None
    folder = run_folder(base, ti.dag_id, ti.run_id, group_id)
    sizes = write_batches(folder, numbers, size)
    mode = "DRY RUN: nothing will be sent" if dry else "sending"
    print(f"{len(numbers)} SIMs in {len(sizes)} batches under {folder}; {mode}")
    return {"folder": folder, "sims": len(numbers), "batches": len(sizes), "dry_run": dry, "wait": wait}


# Airflow maps a task over another task's return value only: these two turn the plan into the lists the send
# and wait tasks are mapped over, empty on a dry run (the mapped task is then skipped).
@task(task_id="batches_to_send")
def send_arguments(plan: dict[str, Any]) -> list[dict[str, str]]:
    """The send tasks' arguments: each batch's input and outcome files."""
    from airflow_provider_m2m.sms.report import batch_uris

    return [] if plan["dry_run"] else [batch_uris(plan["folder"], n) for n in range(plan["batches"])]


@task(task_id="delivery_wait")
def wait_arguments(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The delivery wait's arguments: the batches' outcome files, its own file, its timeout."""
    from airflow_provider_m2m.sms.report import batch_uris

    if plan["dry_run"]:
        return []
    sent = [batch_uris(plan["folder"], n)["output_uri"] for n in range(plan["batches"])]
    return [{"messages_uri": sent, "output_uri": f"{plan['folder']}/deliveries.csv", "timeout": plan["wait"]}]


@task(multiple_outputs=False, trigger_rule="all_done")
def write_report(*, plan: dict[str, Any], ti: Any = None) -> dict[str, Any]:
    """Write the per-SIM report; fail the run, once it is written, if any SIM was not confirmed sent."""
    from airflow_provider_m2m.sms.report import merge_report
    from airflow_provider_m2m.utils.version_compat import AirflowFailException

    summary = merge_report(plan["folder"], plan["batches"], plan["dry_run"])
    print(f"Report: {summary['report_csv']}\nOutcomes: {summary['outcomes']}\nDelivery: {summary['delivery'] or '-'}")
    unconfirmed = {k: v for k, v in summary["outcomes"].items() if k not in ("success", "dry_run")}
    if unconfirmed:
        ti.xcom_push(key="return_value", value=summary)  # readable downstream (all_done) even so
        where = summary["report_csv"]
        # Not retried: the sends are settled (their own retries are over); writing the report again sends nothing.
        raise AirflowFailException(f"report written to {where}, but not every SMS was confirmed sent: {unconfirmed}")
    return summary
