"""
Nightly fleet IMEI-change report: which SIMs moved to another device (IMEI) since the last audit.

A SIM moved to another device is the classic sign of theft or tampering. The whole audit is one
``FleetImeiAudit`` task group (``imei_audit.plan_batches`` -> mapped ``imei_audit.query_imeis`` ->
``imei_audit.build_report``); its report lands in
``<report_base_uri>/fleet_imei_change_report/<night YYYY-MM-DD>/imei_changes.csv`` with a ``status`` column
(``changed``, ``first_seen``, ``inventory_mismatch``, ``unknown``, ``failed``) and updates the
``fleet_imei_change_report`` asset. The default fleet file is the sample shipped beside this file, which
matches the bundled sandbox. See ``FleetImeiAudit``'s docstring for what a night covers and every guarantee.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import DAG, Asset, Param

from airflow_provider_m2m.fleet_audit import FleetImeiAudit

SAMPLE_FLEET = (Path(__file__).parent / "data" / "sample_fleet.csv").as_uri()

# [START howto_fleet_imei_audit]
with DAG(
    dag_id="fleet_imei_change_report",
    description="Nightly: which SIMs moved to another device (IMEI) since the last audit",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["m2m", "fleet", "imei"],
    params={
        "fleet_uri": Param(SAMPLE_FLEET, type="string", title="Fleet file", description="URI of the fleet CSV"),
        "report_base_uri": Param(None, type=["null", "string"], title="Report folder (default: reports/)"),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, maximum=20_000, title="SIMs per batch"),
        "pool_slots": Param(4, type="integer", minimum=1, title="Batches at once"),
        "max_workers": Param(16, type="integer", minimum=1, maximum=256, title="Calls in flight per batch"),
    },
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=1)},
):
    audit = FleetImeiAudit(
        group_id="imei_audit",
        fleet_uri="{{ params.fleet_uri }}",
        report_base_uri="{{ params.report_base_uri or '' }}",
        batch_size="{{ params.batch_size or '' }}",
        pool_slots="{{ params.pool_slots }}",  # its default caps the batches at once: no pool to create
        max_workers="{{ params.max_workers }}",
        outlets=[Asset(name="fleet_imei_change_report")],
    )
# [END howto_fleet_imei_audit]
