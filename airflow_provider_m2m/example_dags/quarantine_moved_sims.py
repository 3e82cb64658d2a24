"""
Quarantine SIMs that moved to another device, once a person approves (Browse > Required actions; no answer in 12
hours suspends none), on each nightly ``fleet_imei_change_report`` (or the ``report_csv`` param). Writes
``quarantine_actions.json`` beside the report. Needs a running Airflow: under ``airflow dags test`` it fails at once.
"""

from __future__ import annotations

import csv
import datetime as dt
import json

from airflow.sdk import DAG, Asset, ObjectStoragePath, Param, task

from airflow_provider_m2m.operators.approval import ApproveSimsOperator
from airflow_provider_m2m.operators.m2m import SetSimStatusOperator

REPORT = Asset(name="fleet_imei_change_report")
COLUMNS = ["iccid", "asset_name", "previous_imei", "current_imei", "last_change"]

with DAG(
    dag_id="quarantine_moved_sims",
    schedule=[REPORT],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    params={"report_csv": Param(None, type=["null", "string"], description="URI of an imei_changes.csv")},
):

    @task(multiple_outputs=True)
    def read_report(params=None, triggering_asset_events=None):
        """The night's ``changed`` SIMs, and the report's URI."""
        uri = params["report_csv"] or triggering_asset_events[REPORT][-1].extra["report_csv"]
        with ObjectStoragePath(uri).open("r") as lines:
            rows = [row for row in csv.DictReader(lines) if row["status"] == "changed"]
        return {"report_csv": uri, "sims": [{c: row[c] or None for c in COLUMNS} for row in rows]}

    report = read_report()
    # [START howto_quarantine_approval]
    approve = ApproveSimsOperator(
        task_id="approve_suspension",
        sims=report["sims"],
        columns=COLUMNS,
        max_offered=200,  # the rest are listed under the XCom key "not_offered"
        subject="Suspend SIMs that moved to another device?",
        intro="Seen in a new device last night. Choose the SIMs to **suspend**; Reject or no answer suspends none.",
        response_timeout=dt.timedelta(hours=12),
    )
    suspend = SetSimStatusOperator(task_id="suspend", iccids=approve.output["approved_iccids"], status="deactivated")
    # [END howto_quarantine_approval]

    @task(trigger_rule="all_done")
    def report_actions(found, ti=None):
        """What was decided and done, SIM by SIM: also when rejected, timed out, or nothing moved."""
        answer = ti.xcom_pull(task_ids="approve_suspension", key="decision")
        not_offered = ti.xcom_pull(task_ids="approve_suspension", key="not_offered") or []
        decision = f"{answer['choice']} by {answer['responded_by']}" if answer else "no decision: nothing suspended"
        if not found["sims"]:
            decision = "nothing to decide: no SIM changed device"
        elif answer and answer["responded_by"] is None:
            decision = "no answer before the timeout: nothing suspended"
        summary = {
            "report_csv": found["report_csv"],
            "offered": [sim["iccid"] for sim in found["sims"] if sim["iccid"] not in not_offered],
            "not_offered": not_offered,
            "decision": decision,
            "approved": (answer or {}).get("approved", []),
            "outcomes": ti.xcom_pull(task_ids="suspend") or ti.xcom_pull(task_ids="suspend", key="outcomes") or [],
        }
        target = ObjectStoragePath(found["report_csv"].rsplit("/", 1)[0] + "/quarantine_actions.json")
        target.write_text(json.dumps(summary, indent=2))
        return summary

    report_actions(report) << suspend
