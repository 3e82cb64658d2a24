"""
Nightly fleet IMEI-change report.

Every night, ask SIM Insight which device (IMEI) each SIM of the fleet sits in and report the SIMs whose
device changed since the last successful audit, first sightings, and SIMs not in the device the inventory
says: a SIM moved to another device is the classic sign of theft or tampering.

* Input: a CSV fleet file with an ``iccid`` column (other columns, such as ``asset_name``, are carried into
  the report) at the URI in the ``fleet_uri`` param. The default is the sample fleet shipped beside this
  file, which matches the bundled sandbox.
* The fleet is split into batches of ``batch_size`` SIMs (by default sized from the fleet and ``pool_slots`` so
  that the batches fill the pool in as few waves as possible, see ``airflow_provider_m2m.sizing``);
  ``QueryImeiOperator`` is mapped over the batches,
  each streaming its rows to object storage with ``max_workers`` calls in flight. The mapped tasks share
  the ``m2m_platform`` pool, so pool slots x ``max_workers`` caps the calls in flight against the platform.
* ``plan_batches`` first checks the fleet file (an ICCID of 18-22 digits per row, each ICCID once, an optional
  ``expected_imei`` that is an IMEI) and the previous audit state: bad input fails the run, naming the file,
  line and rule, before any platform call.
* ``build_report`` compares every SIM with the audit state of the last successful night before this one (kept
  beside the reports, see ``airflow_provider_m2m.audit_state``), writes
  ``<report_base_uri>/fleet_imei_change_report/<interval start date>/imei_changes.csv`` and ``summary.json``
  (fleet size and a count per status), then this night's state, and emits the ``fleet_imei_change_report``
  asset (its extra carries the counts). So a change made while a night failed or was not run is reported by
  the next successful night, dated by the platform's ``last_change`` (ISO 8601), and by that night only; a
  rerun of a night reproduces its rows. The CSV's ``status`` column says why a SIM is listed, rows in this
  order: ``changed`` (its IMEI differs from the last audit's, or ``last_change`` moved, e.g. A -> B -> A),
  ``first_seen`` (a device, and none known before), ``inventory_mismatch`` (the fleet file's
  ``expected_imei`` is not the current IMEI: every night until fixed; on top of ``changed`` / ``first_seen``),
  ``unknown`` (the platform knows no device for the SIM; the night it knows one, ``first_seen``) and
  ``failed`` (the query failed: listed, never dropped; such a SIM keeps its old state, so its change comes in
  a later report). The first audit, with no state yet, takes the platform's dates: a change at or after its
  interval start is ``changed`` (``first_seen`` without a previous IMEI); older ones become the baseline.
* A night whose batches did not all finish writes no report and no state (the task fails without retries).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_m2m.audit import STATUSES
from airflow_provider_m2m.operators.m2m import QueryImeiOperator
from airflow_provider_m2m.version_compat import CronDataIntervalTimetable

SAMPLE_FLEET = (Path(__file__).parent / "data" / "sample_fleet.csv").as_uri()
REPORT_ASSET = Asset(name="fleet_imei_change_report")
POOL = "m2m_platform"

with DAG(
    dag_id="fleet_imei_change_report",
    description="Nightly: which SIMs moved to another device (IMEI) since the last audit",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["m2m", "fleet", "imei"],
    params={
        "fleet_uri": Param(
            SAMPLE_FLEET,
            type="string",
            title="Fleet file",
            description="URI of the fleet CSV (an iccid column, optional expected_imei; other columns are kept).",
        ),
        "batch_size": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=20000,
            title="SIMs per batch",
            description="Each batch is one mapped task. Empty: sized from the fleet and the pool slots (the "
            "batches fill the pool in as few waves as possible); a number wins. Keep fleet size / batch size "
            "under 1024.",
        ),
        "pool_slots": Param(
            4,
            type="integer",
            minimum=1,
            title="Batches at once",
            description=f"The slots of the {POOL} pool: the automatic batch size gives every slot a batch "
            "in each wave.",
        ),
        "max_workers": Param(
            16,
            type="integer",
            minimum=1,
            maximum=256,
            title="Calls in flight per batch",
        ),
        "report_base_uri": Param(
            None,
            type=["null", "string"],
            title="Report folder",
            description="URI under which reports are written (default: reports/ under the Airflow home).",
        ),
    },
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=1)},
) as dag:

    @task
    def plan_batches(params=None, data_interval_start=None) -> list[dict]:
        """Check the fleet file and the previous audit state, then cut the fleet into batches."""
        from airflow_provider_m2m.audit_state import check_inputs
        from airflow_provider_m2m.files import chunked, report_folder
        from airflow_provider_m2m.task_failures import bad_input_fails_task

        audit = report_folder(params["report_base_uri"], "fleet_imei_change_report")
        folder = f"{audit}/{data_interval_start:%Y-%m-%d}"
        from airflow_provider_m2m.sizing import batch_size_for
        from airflow_provider_m2m.version_compat import conf

        with bad_input_fails_task():  # before any platform call: a bad file is not retried
            iccids = check_inputs(params["fleet_uri"], audit, data_interval_start.date())
        size = params["batch_size"] or batch_size_for(
            len(iccids), params["pool_slots"], max_map_length=conf.getint("core", "max_map_length")
        )
        batches = [
            {"iccids": chunk, "output_uri": f"{folder}/batches/batch-{n:05d}.csv"}
            for n, chunk in enumerate(chunked(iccids, size))
        ]
        print(f"Fleet of {len(iccids)} SIMs in {len(batches)} batches; report folder {folder}")
        return batches

    batches = plan_batches()

    query = QueryImeiOperator.partial(
        task_id="query_imeis",
        pool=POOL,
        max_workers="{{ params.max_workers }}",
        map_index_template="{{ task.output_uri.rsplit('/', 1)[-1] }}",
    ).expand_kwargs(batches)

    # all_done: a night whose batches failed still accounts for them (summary.json); min_one_success: a night
    # whose plan failed (bad input) stops there instead of retrying a report that has nothing to read.
    @task(outlets=[REPORT_ASSET], trigger_rule="all_done_min_one_success")
    def build_report(
        batches: list[dict], params=None, data_interval_start=None, data_interval_end=None, outlet_events=None
    ) -> dict:
        """Diff the batches against the last successful audit's state; write the report, then this night's state."""
        import json

        from airflow.sdk import ObjectStoragePath

        from airflow_provider_m2m.audit_state import NightIncomplete, audit_night
        from airflow_provider_m2m.files import report_folder
        from airflow_provider_m2m.version_compat import AirflowFailException

        audit = report_folder(params["report_base_uri"], "fleet_imei_change_report")
        folder = f"{audit}/{data_interval_start:%Y-%m-%d}"
        summary = {
            "interval_start": data_interval_start.isoformat(),
            "interval_end": data_interval_end.isoformat(),
            "complete": False,
        }
        try:
            result = audit_night(
                fleet_uri=params["fleet_uri"],
                batch_uris=[batch["output_uri"] for batch in batches],
                batch_size=len(batches[0]["iccids"]) if batches else 1,  # what the plan cut
                audit_folder=audit,
                night=data_interval_start.date(),
                since=data_interval_start,
            )
        except NightIncomplete as exc:
            summary["missing_batches"] = exc.missing
            ObjectStoragePath(f"{folder}/summary.json").write_text(json.dumps(summary, indent=2))
            # Retrying this task cannot bring the batches back; the next night covers this one.
            raise AirflowFailException(str(exc)) from None
        summary = {**summary, **result, "complete": True, "missing_batches": []}
        summary_uri = f"{folder}/summary.json"
        ObjectStoragePath(summary_uri).write_text(json.dumps(summary, indent=2))
        counts = {key: result[key] for key in ("fleet_size", *STATUSES)}
        outlet_events[REPORT_ASSET].extra = {"summary": summary_uri, "report_csv": result["report_csv"], **counts}
        print(f"Report: {result['report_csv']}\nSummary: {json.dumps(summary)}")
        return {**summary, "summary_uri": summary_uri}

    build_report(batches) << query
