"""
Nightly fleet IMEI-change report.

Every night, ask SIM Insight which device (IMEI) each SIM of the fleet sits in and report the SIMs whose
device changed during the run's data interval (the previous day, UTC): a SIM moved to another device is
the classic sign of theft or tampering.

* Input: a CSV fleet file with an ``iccid`` column (other columns, such as ``asset_name``, are carried into
  the report) at the URI in the ``fleet_uri`` param. The default is the sample fleet shipped beside this
  file, which matches the bundled sandbox.
* The fleet is split into batches of ``batch_size`` SIMs; ``QueryImeiOperator`` is mapped over the batches,
  each streaming its rows to object storage with ``max_workers`` calls in flight. The mapped tasks share
  the ``m2m_platform`` pool, so pool slots x ``max_workers`` caps the calls in flight against the platform.
* ``build_report`` merges the batches into ``<report_base_uri>/<interval start date>/``:
  ``imei_changes.csv`` and ``summary.json`` (fleet size, changed, unknown, failed), and emits the
  ``fleet_imei_change_report`` asset so other DAGs can be scheduled on it. The CSV's ``status`` column
  says why a SIM is listed: ``changed`` (its device changed during the interval), ``unknown`` (the
  platform does not know its device: empty ``current_imei`` and ``last_change``, e.g. a SIM never seen in
  a device or not seen for a long time; worth a look, never counted as a change) and ``failed`` (the query
  failed: failures are listed, never dropped). Rows come in that order.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, task

from airflow_provider_m2m.operators.m2m import QueryImeiOperator

SAMPLE_FLEET = (Path(__file__).parent / "data" / "sample_fleet.csv").as_uri()
REPORT_ASSET = Asset(name="fleet_imei_change_report")
POOL = "m2m_platform"
#: The report's ``status`` values, in the order its rows come.
STATUSES = ("changed", "unknown", "failed")

with DAG(
    dag_id="fleet_imei_change_report",
    description="Nightly: which SIMs moved to another device (IMEI) yesterday",
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
            description="URI of the fleet CSV (an iccid column; other columns are kept in the report).",
        ),
        "batch_size": Param(
            500,
            type="integer",
            minimum=1,
            maximum=20000,
            title="SIMs per batch",
            description="Each batch is one mapped task. Keep fleet size / batch size under 1024.",
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
        """Read the fleet file and cut it into batches, each with the URI its rows will stream to."""
        from airflow_provider_m2m.files import chunked, read_csv, report_folder

        folder = report_folder(params["report_base_uri"], "fleet_imei_change_report", f"{data_interval_start:%Y-%m-%d}")
        iccids = []
        for line, row in enumerate(read_csv(params["fleet_uri"]), start=2):
            if not row.get("iccid"):
                raise ValueError(f"fleet file line {line}: the iccid column is missing or empty")
            iccids.append(row["iccid"])
        batches = [
            {"iccids": chunk, "output_uri": f"{folder}/batches/batch-{n:05d}.csv"}
            for n, chunk in enumerate(chunked(iccids, params["batch_size"]))
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

    @task(outlets=[REPORT_ASSET], trigger_rule="all_done")
    def build_report(
        batches: list[dict], params=None, data_interval_start=None, data_interval_end=None, outlet_events=None
    ) -> dict:
        """Merge the batch files into the interval's report; list SIMs of batches that did not finish as failed."""
        import json
        from itertools import chain

        from airflow.sdk import ObjectStoragePath

        from airflow_provider_m2m.files import read_csv, write_csv

        batches = list(batches)
        folder = batches[0]["output_uri"].rsplit("/batches/", 1)[0] if batches else None
        found: dict[str, dict] = {}
        counts = {"fleet_size": 0, "changed": 0, "unknown": 0, "failed": 0}
        missing_batches = []
        for batch in batches:
            path = ObjectStoragePath(batch["output_uri"])
            if not path.exists():
                missing_batches.append(path.name)
                rows = ({"iccid": i, "error": f"batch {path.name} did not finish"} for i in batch["iccids"])
            else:
                rows = read_csv(path)
            for row in rows:
                counts["fleet_size"] += 1
                if row.get("error"):
                    counts["failed"] += 1
                    found[row["iccid"]] = {**row, "status": "failed"}
                elif not row.get("last_change"):
                    counts["unknown"] += 1
                    found[row["iccid"]] = {**row, "status": "unknown"}
                elif data_interval_start <= dt.datetime.fromisoformat(row["last_change"]) < data_interval_end:
                    counts["changed"] += 1
                    found[row["iccid"]] = {**row, "status": "changed"}

        # Stream the fleet file once more, keeping only the reported SIMs (with their extra columns).
        fleet = read_csv(params["fleet_uri"])
        first = next(fleet, None)
        extra_columns = [c for c in (first or {}) if c != "iccid"]
        columns = ["iccid", *extra_columns, "status", "current_imei", "previous_imei", "last_change", "error"]
        report = sorted(
            ({**row, **found[row["iccid"]]} for row in chain([first] if first else [], fleet) if row["iccid"] in found),
            key=lambda r: (STATUSES.index(r["status"]), r.get("last_change") or "", r["iccid"]),
        )
        csv_uri = f"{folder}/imei_changes.csv"
        write_csv(csv_uri, columns, report)
        summary = {
            "interval_start": data_interval_start.isoformat(),
            "interval_end": data_interval_end.isoformat(),
            **counts,
            "report_csv": csv_uri,
            "missing_batches": missing_batches,
        }
        summary_uri = f"{folder}/summary.json"
        ObjectStoragePath(summary_uri).write_text(json.dumps(summary, indent=2))
        outlet_events[REPORT_ASSET].extra = {"summary": summary_uri, "report_csv": csv_uri, **counts}
        print(f"Report: {csv_uri}\nSummary: {json.dumps(summary)}")
        if missing_batches:
            raise RuntimeError(f"report written, but {len(missing_batches)} batches did not finish: {missing_batches}")
        return {**summary, "summary_uri": summary_uri}

    build_report(batches) << query
