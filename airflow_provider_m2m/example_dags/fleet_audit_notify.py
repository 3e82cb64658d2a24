"""
Nightly: text every SIM whose device changed last night ("Your tracker's SIM moved to another device").

A user's own ``@daily`` DAG composed of two blocks: ``FleetImeiAudit`` finds the SIMs whose device changed in
the night (each change in exactly one night, also for a night that failed, was skipped, rerun or backfilled)
and ``SendSmsOperator`` texts each of them once (``audit.changed_iccids``: nothing to send on a quiet night).
It works the same for scheduled runs, manual runs with or without a logical date (a manual run covers the
changes before it was triggered) and backfills; no Jinja date arithmetic is involved. The default fleet file
is the sample shipped beside this file, which matches the bundled sandbox.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import DAG, Param

from airflow_provider_m2m.fleet_audit import FleetImeiAudit
from airflow_provider_m2m.operators.m2m import SendSmsOperator

SAMPLE_FLEET = (Path(__file__).parent / "data" / "sample_fleet.csv").as_uri()

# [START howto_fleet_audit_notify]
with DAG(
    dag_id="fleet_audit_notify",
    description="Nightly: text the SIMs whose device changed",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["m2m", "fleet", "sms"],
    params={
        "fleet_uri": Param(SAMPLE_FLEET, type="string", title="Fleet file"),
        "report_base_uri": Param(None, type=["null", "string"], title="Report folder (default: reports/)"),
    },
):
    audit = FleetImeiAudit(
        group_id="imei_audit",
        fleet_uri="{{ params.fleet_uri }}",
        report_base_uri="{{ params.report_base_uri or '' }}",
    )
    SendSmsOperator(
        task_id="tell_drivers",
        iccids=audit.changed_iccids,  # at most 10,000 a night; audit.summary has the full list's URI
        message_text="Your tracker's SIM moved to another device. Call us if that was not you.",
    )
# [END howto_fleet_audit_notify]
