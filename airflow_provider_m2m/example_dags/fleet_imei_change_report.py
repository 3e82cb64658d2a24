"""
Nightly fleet IMEI-change report.

Every night, ask SIM Insight which device (IMEI) each SIM of the fleet sits in and report the SIMs whose
device changed since the last successful audit, first sightings, and SIMs not in the device the inventory
says: a SIM moved to another device is the classic sign of theft or tampering.

* Input: a CSV fleet file with an ``iccid`` column (other columns, such as ``asset_name``, are carried into
  the report) at the URI in the ``fleet_uri`` param. The default is the sample fleet shipped beside this
  file, which matches the bundled sandbox.
* ``plan_batches`` writes the fleet in batches of ``batch_size`` SIMs (left empty: sized from the fleet and
  ``pool_slots`` so that the batches fill the pool in as few full waves as possible, see
  ``airflow_provider_m2m.fleet_audit.sizing``) to object storage beside the report
  (``<night>/batches/input-NNNNN.csv``, see ``airflow_provider_m2m.fleet_audit.plan``) and returns only a small item
  per batch (its number and SIM count: about 30 kB of XCom for 1,000 batches, whatever the fleet size).
  ``QueryImeiOperator`` is mapped over the batches, each reading its ICCIDs from ``iccids_uri`` and streaming
  its rows to ``output_uri`` with ``max_workers`` calls in flight. The mapped tasks share the ``m2m_platform``
  pool, so pool slots x ``max_workers`` caps the calls in flight against the platform.
* ``plan_batches`` first checks the fleet file (an ICCID of 18-22 digits per row, each ICCID once, an optional
  ``expected_imei`` that is an IMEI) and the previous audit state: bad input fails the run, naming the file,
  line(s) and rule, before any platform call.
* ``build_report`` compares every SIM with the audit state of the last successful night before this one (kept
  beside the reports, see ``airflow_provider_m2m.fleet_audit.state``), writes
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

from airflow_provider_m2m.fleet_audit.rules import STATUSES
from airflow_provider_m2m.operators.m2m import QueryImeiOperator
from airflow_provider_m2m.utils.version_compat import CronDataIntervalTimetable

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
        """Check the fleet file and the previous audit state, then write the fleet's batches to object storage."""
        from airflow_provider_m2m.fleet_audit.plan import fleet_batch_size, night_folder, plan_fleet, plan_size
        from airflow_provider_m2m.utils.task_failures import bad_input_fails_task
        from airflow_provider_m2m.utils.version_compat import conf

        night = data_interval_start.date()
        with bad_input_fails_task():  # before any platform call: a bad file is not retried
            size = fleet_batch_size(
                params["fleet_uri"], params["batch_size"], params["pool_slots"], conf.getint("core", "max_map_length")
            )
            plan = plan_fleet(params["fleet_uri"], params["report_base_uri"], night, size)
        sims, folder = sum(batch["sims"] for batch in plan), night_folder(params["report_base_uri"], night)
        print(f"Fleet of {sims} SIMs in {len(plan)} batches ({plan_size(plan)} bytes of XCom); report folder {folder}")
        return plan

    def batch_files(batch: dict) -> dict:
        """Runs in each mapped task: its batch's files, from its run (the plan's XCom carries no URIs)."""
        from airflow.sdk import get_current_context

        from airflow_provider_m2m.fleet_audit.plan import batch_uris, night_folder

        context = get_current_context()
        night = context["data_interval_start"].date()  # type: ignore[union-attr]  # a timetable's run has one
        folder = night_folder(context["params"]["report_base_uri"], night)
        return batch_uris(folder, batch["batch"])

    # [START howto_fleet_imei_audit]
    batches = plan_batches()

    query = QueryImeiOperator.partial(
        task_id="query_imeis",
        pool=POOL,
        max_workers="{{ params.max_workers }}",
        map_index_template="{{ task.output_uri.rsplit('/', 1)[-1] }}",
    ).expand_kwargs(batches.map(batch_files))
    # [END howto_fleet_imei_audit]

    # all_done: a night whose batches failed still accounts for them (summary.json); min_one_success: a night
    # whose plan failed (bad input) stops there instead of retrying a report that has nothing to read.
    # multiple_outputs=False: one XCom, the summary dict (a "-> dict" task would push each key as another XCom).
    @task(outlets=[REPORT_ASSET], trigger_rule="all_done_min_one_success", multiple_outputs=False)
    def build_report(
        batches: list[dict], params=None, data_interval_start=None, data_interval_end=None, outlet_events=None
    ) -> dict:
        """Diff the batches against the last successful audit's state; write the report, then this night's state."""
        import json

        from airflow.sdk import ObjectStoragePath

        from airflow_provider_m2m.fleet_audit.plan import audit_folder, batch_uris, night_folder
        from airflow_provider_m2m.fleet_audit.state import NightIncomplete, audit_night
        from airflow_provider_m2m.utils.version_compat import AirflowFailException

        folder = night_folder(params["report_base_uri"], data_interval_start.date())
        files = [batch_uris(folder, batch["batch"]) for batch in batches]
        summary = {
            "interval_start": data_interval_start.isoformat(),
            "interval_end": data_interval_end.isoformat(),
            "complete": False,
        }
        try:
            result = audit_night(
                batches=[(uris["iccids_uri"], uris["output_uri"]) for uris in files],
                audit_folder=audit_folder(params["report_base_uri"]),
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
