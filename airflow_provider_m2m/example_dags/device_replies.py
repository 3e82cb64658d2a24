"""
### Device replies

Runs when SIM Insight pushes SMS sent by devices (MO): the provider's push receiver turns each one into an
event on the asset ``sim_insight_mo_sms`` (see the docs, "Receive pushes"), and this DAG is scheduled on it.
Each run writes the messages that triggered it to ``reports/device_replies/<run id>/replies.csv``: ICCID,
MSISDN, the time SIM Insight received the message (UTC), its text and the item's ``api_did``.

A reply can trigger a follow-up: devices that answered ``HELP`` get the help text by SMS (``send_help``, a
:class:`~airflow_provider_m2m.operators.m2m.SendSmsOperator` on their ICCIDs); when nobody asked, it is skipped.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, ObjectStoragePath, task

from airflow_provider_m2m.operators.m2m import SendSmsOperator

MO_SMS = Asset("sim_insight_mo_sms")
REPORT_COLUMNS = ["iccid", "msisdn", "timestamp", "text", "api_did"]
HELP_TEXT = "Reply STATUS for the tracker's state, STOP to end alerts."

with DAG(
    dag_id="device_replies",
    description="Write each SMS a device sends (pushed by SIM Insight) to a report",
    schedule=[MO_SMS],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    doc_md=__doc__,
    tags=["m2m", "sms", "push"],
):

    # [START howto_receive_pushes]
    @task
    def write_replies(triggering_asset_events=None, run_id=None):
        """Write the run's MO messages (one row each, oldest first) and return them."""
        import csv
        import os
        import re

        replies = [dict(event.extra) for event in triggering_asset_events[MO_SMS]]
        home = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
        folder = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)  # run ids carry ':' and '+'
        target = ObjectStoragePath(f"file://{home}/reports/device_replies/{folder}/replies.csv")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", newline="") as out:
            writer = csv.DictWriter(out, REPORT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(replies)
        print(f"{len(replies)} device replies written to {target}")
        return replies

    @task.short_circuit
    def asked_for_help(replies):
        """The ICCIDs whose reply is HELP (none: the follow-up is skipped)."""
        return sorted({reply["iccid"] for reply in replies if reply.get("text", "").strip().upper() == "HELP"})

    help_iccids = asked_for_help(write_replies())
    SendSmsOperator(task_id="send_help", iccids=help_iccids, message_text=HELP_TEXT)
    # [END howto_receive_pushes]
