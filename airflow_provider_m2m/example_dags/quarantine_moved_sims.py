"""
Quarantine SIMs that moved to another device, with a person's approval.

Runs when the nightly ``fleet_imei_change_report`` asset is updated and reads that night's report
(``report_csv`` in the asset event's extra, or the ``report_csv`` param of a manual run):

1. ``read_report``: the SIMs whose status is ``changed`` (a SIM in a new device: the classic sign of a stolen SIM).
2. ``approve_suspension``: a person sees them in the Airflow UI (Browse > Required actions) with asset name,
   old -> new IMEI and time, chooses which to suspend, and clicks Approve or Reject. No answer within
   ``RESPONSE_TIMEOUT`` counts as Reject. Nothing is ever suspended without an answer.
3. ``suspend``: ``SetSimStatusOperator`` deactivates exactly the approved SIMs (closed SIMs are skipped).
4. ``report_actions``: what was decided, by whom, and each SIM's outcome, written beside the night's report
   as ``quarantine_actions.json``.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_m2m.operators.approval import ApproveSimsOperator
from airflow_provider_m2m.operators.m2m import SetSimStatusOperator

REPORT_ASSET = Asset(name="fleet_imei_change_report")
RESPONSE_TIMEOUT = dt.timedelta(hours=12)
#: A person can review this many SIMs at once; more are listed in the report as not offered.
MAX_OFFERED = 200

with DAG(
    dag_id="quarantine_moved_sims",
    description="Suspend the SIMs that moved to another device, once a person approves",
    schedule=[REPORT_ASSET],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["m2m", "fleet", "imei", "approval"],
    params={
        "report_csv": Param(
            None,
            type=["null", "string"],
            title="Report to act on",
            description="URI of an imei_changes.csv (default: the one in the triggering asset event).",
        ),
    },
) as dag:

    @task(multiple_outputs=True)
    def read_report(params=None, triggering_asset_events=None) -> dict:
        """The changed SIMs of the night's report (at most MAX_OFFERED), with the report's URI."""
        from airflow_provider_m2m.utils.files import read_csv

        uri = params["report_csv"]
        if not uri:
            events = triggering_asset_events[REPORT_ASSET] if triggering_asset_events else []
            if not events:
                raise ValueError("report_csv: no report given and no fleet_imei_change_report event to read")
            uri = events[-1].extra["report_csv"]
        changed = [row for row in read_csv(uri) if row.get("status") == "changed"]
        columns = ("iccid", "asset_name", "previous_imei", "current_imei", "last_change")
        sims = [{c: row.get(c) or None for c in columns} for row in changed]
        print(f"{len(sims)} SIMs changed device in {uri}")
        return {"report_csv": uri, "sims": sims[:MAX_OFFERED], "not_offered": [s["iccid"] for s in sims[MAX_OFFERED:]]}

    report = read_report()

    approve = ApproveSimsOperator(
        task_id="approve_suspension",
        sims=report["sims"],
        subject="Suspend SIMs that moved to another device?",
        intro=(
            "These SIMs were seen in a different device (IMEI) last night: a sign of a stolen SIM. "
            "Choose the ones to **suspend** (deactivate: no data, SMS or voice) and click Approve. "
            "Reject, or no answer within 12 hours, suspends none."
        ),
        columns=["iccid", "asset_name", "previous_imei", "current_imei", "last_change"],
        response_timeout=RESPONSE_TIMEOUT,
    )

    suspend = SetSimStatusOperator(task_id="suspend", iccids=approve.output["approved_iccids"], status="deactivated")

    @task(trigger_rule="all_done", multiple_outputs=False)  # one XCom: the summary dict, not one per key
    def report_actions(found: dict, ti=None) -> dict:
        """Write down what was decided and done, SIM by SIM; also when rejected, timed out, or nothing moved."""
        import json

        from airflow.sdk import ObjectStoragePath

        answer = ti.xcom_pull(task_ids="approve_suspension", key="decision")
        rows = ti.xcom_pull(task_ids="suspend") or ti.xcom_pull(task_ids="suspend", key="outcomes") or []
        if not found["sims"]:
            decision = "nothing to decide: no SIM changed device"
        elif not answer:
            decision = "no decision recorded: nothing suspended"
        elif answer["responded_by"] is None:
            decision = "no answer before the timeout: nothing suspended"
        else:
            decision = f"{answer['choice']} by {answer['responded_by']}"
        summary = {
            "report_csv": found["report_csv"],
            "offered": [sim["iccid"] for sim in found["sims"]],
            "not_offered": found["not_offered"],
            "decision": decision,
            "approved": (answer or {}).get("approved", []),
            "outcomes": rows,
        }
        target = ObjectStoragePath(found["report_csv"].rsplit("/", 1)[0]) / "quarantine_actions.json"
        target.write_text(json.dumps(summary, indent=2, default=str))
        print(f"{decision}; outcomes: {json.dumps(rows)}; written to {target}")
        return summary

    report_actions(report) << suspend
