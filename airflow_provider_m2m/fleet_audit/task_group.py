"""
:class:`FleetImeiAudit`: the nightly fleet IMEI audit as one task group a DAG author drops into their DAG.

A subclass of Airflow's ``TaskGroup`` rather than a factory function: the object the author holds is the group
itself (``audit >> other``, ``other >> audit`` wire the whole audit, the UI shows one collapsible node), and it
carries the audit's outputs as attributes (``audit.summary``, ``audit.changed_iccids``), as astronomer-cosmos'
``DbtTaskGroup`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, TaskGroup, task

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.fleet_audit.night import Night, night_of_context
from airflow_provider_m2m.operators.m2m import MAX_CHANGED_ICCIDS, QueryImeiOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The task ids inside the group (prefixed with the group id: ``imei_audit.plan_batches``...).
PLAN, QUERY, REPORT = "plan_batches", "query_imeis", "build_report"
#: The most ICCIDs ``changed_iccids`` lists in XCom; the night's ``changed_iccids.csv`` has them all.
MAX_LISTED = MAX_CHANGED_ICCIDS
_PARAM_TEMPLATE = re.compile(r"\{\{\s*params\.([A-Za-z_]\w*)\s*\}\}")


class FleetImeiAudit(TaskGroup):
    """
    The nightly fleet IMEI audit: which SIMs moved to another device since the last successful audit.

    Three tasks: ``<group_id>.plan_batches`` checks the fleet file and the previous audit state (bad input fails
    here, before any platform call, without retries) and writes the fleet in batches to object storage;
    ``<group_id>.query_imeis`` is mapped over the batches (a :class:`QueryImeiOperator` per batch, ``max_workers``
    calls in flight each), and each batch then compares its own SIMs with the audit state of the last successful
    night before this one (its share of the report, under ``<night>/parts/``); ``<group_id>.build_report``
    joins the batches' shares (or, when a share is missing or stale, compares every SIM itself, with the same
    result) and writes the night's report, its summary and this night's state.

    What a run covers (:mod:`~airflow_provider_m2m.fleet_audit.night`): the changes made before its *cutoff*, the
    end of its data interval; for an empty interval (Airflow 3's ``@daily``, a ``CronTriggerTimetable``, and its
    backfills) its logical date; for a manual run without a logical date, its ``run_after``. A change at or after
    the cutoff belongs to a later night only, also when this night is rerun after that one. The night's folder
    is named by the date the night covers (the ``@daily`` run at 2 March 00:00 writes ``2026-03-01``); a night
    whose cutoff is not a midnight (UTC), such as a manual run's, by its cutoff (``2026-03-05T143000Z``), so the
    scheduled night of that date reports only the changes after it. Every change appears in exactly one night's
    report, also when a night failed, was skipped or is rerun.

    Files, under ``<report_base_uri>/<dag_id>/`` (plus ``<group_id>/`` when the DAG holds more than one audit,
    so two audits never share state or reports)::

        <night>/imei_changes.csv     the report: a row per SIM and status (changed, first_seen,
                                     inventory_mismatch, unknown, failed), last_change in ISO 8601
        <night>/summary.json         the summary below (also for a night that did not complete)
        <night>/changed_iccids.csv   the changed SIMs, an iccid column (usable as a fleet file)
        state/<night>.csv.gz         the audit state the next night compares with

    A night whose batches did not all finish writes no report and no state (``build_report`` fails without
    retries; the next successful night reports its changes). XCom stays O(batches): the plan carries a batch
    number and a count per batch, the batches their counts, the report its summary.

    Concurrency: at most ``pool_slots`` batches of one run at once, by the mapped task's own limit, so the
    audit needs no pool. With ``pool``, its batches also take a slot each of that Airflow pool (to share one
    rate limit between DAGs): create the pool first (``airflow pools set <pool> <slots> "SIM Insight"``); a task
    cannot read pools in Airflow 3, so ``plan_batches`` logs which pool the batches wait on, and a batch whose
    pool does not exist stays ``scheduled``. The scheduler needs the limit before templates render: a
    templated ``pool_slots`` must be ``"{{ params.<name> }}"``, whose default is the limit (a run's own value
    still sizes the batches).

    :param group_id: the group's id (the tasks are ``<group_id>.plan_batches``...).
    :param fleet_uri: the fleet CSV (an ``iccid`` column, optional ``expected_imei``, other columns are carried
        into the report), an ObjectStoragePath URI. A missing file fails at once, naming the URI. Templated.
    :param report_base_uri: where the audit's folder goes (None: ``reports/`` under the Airflow home). Templated.
    :param m2m_conn_id: the SIM Insight connection. Templated.
    :param pool: an Airflow pool the batches also take a slot of (None: no pool). Not templated (the scheduler
        reads it).
    :param pool_slots: batches at once; the automatic batch size makes the batches fill them in full waves.
        Templated as above.
    :param max_workers: calls in flight per batch (1-256). Templated.
    :param batch_size: SIMs per batch (None: sized from the fleet and ``pool_slots``, see
        :mod:`~airflow_provider_m2m.fleet_audit.sizing`). Templated.
    :param outlets: the assets ``build_report`` updates (default: one asset named ``<dag_id>.<group_id>``); each
        event's extra carries the night's counts, ``report_csv`` and ``summary``.
    :param kwargs: passed to ``TaskGroup`` (``tooltip``, ``default_args``...).

    Outputs (XComArgs, to hand to other tasks):

    * :attr:`summary`: the night's summary dict: ``report_csv``, ``summary_uri``, ``fleet_size``, a count per
      status (``changed``, ``first_seen``, ``inventory_mismatch``, ``unknown``, ``failed``), ``complete``,
      ``night`` (its folder's name), ``cutoff``, ``since``, ``changed_iccids_uri``, ``changed_iccids_truncated``.
    * :attr:`changed_iccids`: the ICCIDs whose device changed this night (status ``changed``), sorted, at most
      10,000 (past that ``summary["changed_iccids_truncated"]`` is true; ``changed_iccids_uri`` lists them all).
      Pushed only when the DAG uses it, so an audit nobody reads the list of keeps XCom at its counts.

    .. code-block:: python

        audit = FleetImeiAudit(group_id="imei_audit", fleet_uri="s3://aws_default@fleet/fleet.csv",
                               report_base_uri="s3://aws_default@reports")
        SendSmsOperator(task_id="tell_drivers", iccids=audit.changed_iccids, message_text="...")
    """

    def __init__(
        self,
        *,
        group_id: str = "imei_audit",
        fleet_uri: str,
        report_base_uri: str | None = None,
        m2m_conn_id: str = "m2m_default",
        pool: str | None = None,
        pool_slots: int | str = 4,
        max_workers: int | str = 16,
        batch_size: int | str | None = None,
        outlets: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(group_id=group_id, **kwargs)
        at_once = _batches_at_once(pool_slots, self.dag.params)
        self.outlets = list(outlets) if outlets is not None else [Asset(name=f"{self.dag.dag_id}.{self.group_id}")]
        where: dict[str, Any] = {"report_base_uri": report_base_uri, "audit_group_id": self.group_id}
        with self:
            plan = _plan_batches.override(task_id=PLAN)(
                fleet_uri=fleet_uri,
                batch_size=batch_size,
                pool_slots=pool_slots,
                max_workers=max_workers,
                pool=pool,
                **where,
            )
            pooled = {"pool": pool} if pool else {}
            query = _AuditBatch.partial(
                task_id=QUERY,
                m2m_conn_id=m2m_conn_id,
                max_workers=max_workers,
                max_active_tis_per_dagrun=at_once,
                map_index_template="{{ 'batch-%05d' % task.batch['batch'] }}",
                **pooled,
                **where,
            ).expand(batch=plan)
            # all_done: a night whose batches failed still accounts for them (summary.json); min_one_success: a
            # night whose plan failed (bad input) stops there instead of retrying a report with nothing to read.
            report = _build_report.override(
                task_id=REPORT, outlets=self.outlets, trigger_rule="all_done_min_one_success"
            )(plan, list_changed=False, **where)
            query >> report
        self._report = report

    @property
    def summary(self) -> Any:
        """XComArg: the night's summary dict (see the class docstring)."""
        return self._report

    @property
    def changed_iccids(self) -> Any:
        """XComArg: the sorted ICCIDs whose device changed this night, at most 10,000 (see the class docstring)."""
        self._report.operator.op_kwargs["list_changed"] = True  # read at parse time: the report pushes the list
        return self._report.operator.output["changed_iccids"]


def _batches_at_once(pool_slots: object, params: Mapping[str, Any]) -> int:
    """The scheduler's limit of batches at once: ``pool_slots`` itself, or the default of the param it names."""
    value = pool_slots
    if isinstance(pool_slots, str) and (named := _PARAM_TEMPLATE.fullmatch(pool_slots.strip())):
        if named.group(1) not in params:
            raise InvalidRequestError("pool_slots", f"names the param {named.group(1)!r}, which the DAG does not have")
        value = params[named.group(1)]
    elif isinstance(pool_slots, str) and pool_slots.strip().isdigit():
        value = int(pool_slots)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(
            "pool_slots",
            "must be a whole number of batches, 1 or more, or '{{ params.<name> }}' with such a default (the "
            "scheduler limits the batches at once before templates render)",
            repr(value)[:60],
        )
    return value


def _optional_int(value: object, field: str, low: int, high: int) -> int | None:
    """A rendered template's integer; None, "" and "None" (an empty param, rendered as text) mean unset."""
    from airflow_provider_m2m.operators.arguments import as_int

    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    return as_int(value, field, low, high)


def _base(report_base_uri: str | None) -> str | None:
    """The rendered ``report_base_uri``; empty (or an unset param rendered as ``None``) means the default."""
    return None if report_base_uri is None or str(report_base_uri).strip() in ("", "None") else report_base_uri


def _owner(context: Context, group_id: str) -> tuple[str, str | None]:
    """Whose folder: the DAG's id, plus the group id when the DAG holds more than one audit."""
    dag = context["dag"]
    audits = [g for g in dag.task_group.get_task_group_dict().values() if isinstance(g, FleetImeiAudit)]
    return dag.dag_id, group_id if len(audits) > 1 else None


def _night_folder(context: Context, report_base_uri: str | None, group_id: str) -> tuple[Night, str, str]:
    """The night this run covers, the audit's folder and the night's folder."""
    from airflow_provider_m2m.fleet_audit.plan import audit_folder

    night = night_of_context(context)
    audit = audit_folder(_base(report_base_uri), *_owner(context, group_id))
    return night, audit, f"{audit}/{night.key}"


@task
def _plan_batches(
    *,
    fleet_uri: str,
    batch_size: object,
    pool_slots: object,
    max_workers: object,
    pool: str | None,
    report_base_uri: str | None,
    audit_group_id: str,
) -> list[dict[str, int]]:
    """Check the arguments, the fleet file and the previous audit state, then write the fleet's batches."""
    from airflow.sdk import get_current_context

    from airflow_provider_m2m.fleet_audit.plan import plan_fleet, plan_size
    from airflow_provider_m2m.operators.arguments import as_int, as_workers
    from airflow_provider_m2m.utils.task_failures import bad_input_fails_task
    from airflow_provider_m2m.utils.version_compat import conf

    context = get_current_context()
    with bad_input_fails_task():  # before any platform call: bad input is not retried
        night, _, folder = _night_folder(context, report_base_uri, audit_group_id)
        slots = as_int(pool_slots, "pool_slots", 1, 1024)
        size = _optional_int(batch_size, "batch_size", 1, 1_000_000)
        as_workers(max_workers)
        dag_id, owner_group = _owner(context, audit_group_id)
        plan = plan_fleet(  # size None: from the fleet's count, in the plan's one read of the file
            fleet_uri,
            _base(report_base_uri),
            night.key,
            size,
            dag_id=dag_id,
            group_id=owner_group,
            pool_slots=slots,
            max_map_length=conf.getint("core", "max_map_length"),
        )
        size = max((batch["sims"] for batch in plan), default=0)
    sims = sum(batch["sims"] for batch in plan)
    print(
        f"Night {night.key} (changes before {night.cutoff.isoformat()}): fleet of {sims} SIMs in {len(plan)} "
        f"batches of up to {size}, {slots} at once ({plan_size(plan)} bytes of XCom); folder {folder}"
    )
    if pool:
        context["task"].log.warning(
            "The batches run in the Airflow pool %r (a slot each): if it does not exist they stay 'scheduled' and "
            "only the scheduler's log says so (a task cannot read pools). Create it once: "
            "airflow pools set %s %s 'SIM Insight batches'",
            pool,
            pool,
            slots,
        )
    return plan


class _AuditBatch(QueryImeiOperator):
    """
    One batch of the audit: a QueryImeiOperator on the batch's files, keeping only its counts in XCom, then its
    share of the report's diff (:func:`~airflow_provider_m2m.fleet_audit.state.diff_batch`).
    """

    template_fields: Sequence[str] = (*QueryImeiOperator.template_fields, "report_base_uri")

    def __init__(self, *, batch: dict[str, int], report_base_uri: str | None, audit_group_id: str, **kwargs: Any):
        super().__init__(list_changed_iccids=False, **kwargs)
        self.batch = batch
        self.report_base_uri = report_base_uri
        self.audit_group_id = audit_group_id

    def execute(self, context: Context) -> Any:
        from airflow_provider_m2m.fleet_audit.plan import batch_uris
        from airflow_provider_m2m.fleet_audit.state import diff_batch

        night, audit, folder = _night_folder(context, self.report_base_uri, self.audit_group_id)
        uris = batch_uris(folder, int(self.batch["batch"]))
        self.iccids_uri, self.output_uri = uris["iccids_uri"], uris["output_uri"]
        summary = super().execute(context)
        # The batch's share of the report's diff, here beside the other batches: the report only joins the parts.
        batch, window = (self.iccids_uri, self.output_uri), {"since": night.since, "cutoff": night.cutoff}
        try:
            counts = diff_batch(batch=batch, audit_folder=audit, night=night.key, **window)
        except Exception as exc:  # a head start only: the report diffs a batch without a part itself
            # Failing here would retry the batch, and a retry after the query file is written asks every SIM
            # again; the report runs the same rules on the same files, so whatever went wrong fails it there.
            self.log.warning("This batch's diff is left to the report: %s", exc)
        else:
            self.log.info("Diffed against the last audit's state: %s", counts or "left to the report")
        return summary


@task(multiple_outputs=False)  # one XCom row for the summary, not one more per key
def _build_report(
    plan: list[dict[str, int]], *, list_changed: bool, report_base_uri: str | None, audit_group_id: str
) -> dict[str, Any]:
    """Join the batches' diffs (or diff the batches) against the last successful audit's state; write the report,
    then this night's state."""
    import json

    from airflow.sdk import ObjectStoragePath, get_current_context

    from airflow_provider_m2m.fleet_audit.plan import batch_uris
    from airflow_provider_m2m.fleet_audit.rules import STATUSES
    from airflow_provider_m2m.fleet_audit.state import NightIncomplete, audit_night
    from airflow_provider_m2m.utils.files import read_csv
    from airflow_provider_m2m.utils.version_compat import AirflowFailException

    context = get_current_context()
    night, audit, folder = _night_folder(context, report_base_uri, audit_group_id)
    files = [batch_uris(folder, batch["batch"]) for batch in plan]
    summary: dict[str, Any] = {
        "night": night.key,
        "cutoff": night.cutoff.isoformat(),
        "since": night.since.isoformat(),
        "complete": False,
    }
    summary_uri = f"{folder}/summary.json"
    try:
        result = audit_night(
            batches=[(uris["iccids_uri"], uris["output_uri"]) for uris in files],
            audit_folder=audit,
            night=night.key,
            since=night.since,
            cutoff=night.cutoff,
        )
    except NightIncomplete as exc:
        summary["missing_batches"] = exc.missing
        ObjectStoragePath(summary_uri).write_text(json.dumps(summary, indent=2))
        # Retrying this task cannot bring the batches back; the next night covers this one.
        raise AirflowFailException(str(exc)) from None
    summary = {
        **summary,
        **result,
        "complete": True,
        "missing_batches": [],
        "changed_iccids_truncated": result["changed"] > MAX_LISTED,
    }
    ObjectStoragePath(summary_uri).write_text(json.dumps(summary, indent=2))
    counts = {key: result[key] for key in ("fleet_size", *STATUSES)}
    extra = {"summary": summary_uri, "report_csv": result["report_csv"], "night": summary["night"], **counts}
    for outlet in context["task"].outlets:
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra = extra
    if list_changed:
        rows = islice(read_csv(result["changed_iccids_uri"]), MAX_LISTED)
        context["ti"].xcom_push(key="changed_iccids", value=sorted(row["iccid"] for row in rows))
    print(f"Report: {result['report_csv']}\nSummary: {json.dumps(summary)}")
    return {**summary, "summary_uri": summary_uri}
