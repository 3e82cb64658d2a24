"""
`make demo`: run the nightly fleet IMEI-change report end to end against the bundled sandbox.

Sets up a throwaway Airflow home in ``.airflow/`` (git-ignored), starts the sandbox (SIM Insight + Daraja)
in a subprocess on a free port, points ``m2m_default`` / ``daraja_default`` at it through environment
variables, runs ``airflow dags test fleet_imei_change_report`` for last night (its ``FleetImeiAudit`` needs no
pool), prints where the report is, its summary and first rows, checks the report against
the sandbox fleet's known changes, stops the sandbox, and exits non-zero if anything failed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from airflow_provider_m2m.sandbox.airflow_home import airflow_home_env

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "fleet_imei_change_report"


def _mismatches(fleet, cutoff: dt.datetime) -> set[str]:
    """SIMs not in the device the fleet file expects, at the cutoff (a SIM moved after it: its previous device)."""
    found = set()
    for sim in fleet.sims:
        device = sim.previous_imei if sim.last_change and sim.last_change >= cutoff else sim.normalized_imei
        if device and fleet.expected_imei(sim.iccid) and device != fleet.expected_imei(sim.iccid):
            found.add(sim.iccid)
    return found


def main() -> int:
    home = Path(os.environ.get("M2M_DEMO_HOME", ROOT / ".airflow")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(airflow_home_env(home, dags_folder=ROOT / "airflow_provider_m2m" / "example_dags"))
    started = time.monotonic()
    print(f"[demo] Airflow home: {home}", flush=True)

    import warnings

    warnings.filterwarnings("ignore")
    # Keep the DB migration's chatter out of the demo's own output (the DAG run below logs at INFO to a file).
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    from airflow.utils import db  # after AIRFLOW_HOME is set

    db.initdb()
    del os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"]

    from airflow_provider_m2m.sandbox import Sandbox, midnight_utc
    from airflow_provider_m2m.utils.files import read_csv, report_folder

    interval_end = midnight_utc()  # the nightly run just after midnight reports yesterday
    interval_start = interval_end - dt.timedelta(days=1)
    # The sandbox fleet's times move with today's date: each demo run is a first audit, so drop earlier states.
    shutil.rmtree(home / "reports" / DAG_ID / "state", ignore_errors=True)
    with Sandbox.spawn(fleet=1000, anchor=interval_end) as sandbox:
        print(f"[demo] sandbox listening on {sandbox.url} (fleet of {len(sandbox.fleet)} SIMs)", flush=True)
        log_path = home / "demo-dag-test.log"
        print(f"[demo] airflow dags test {DAG_ID} {interval_end.isoformat()}  (log: {log_path})", flush=True)
        with log_path.open("w") as log:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, interval_end.isoformat()],
                env={**os.environ, **sandbox.conn_env()},
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        # The first audit (no state yet) reports every change the platform dates from its interval start to the
        # night's cutoff (the interval's end: a change at or after it belongs to the next night).
        in_night = sandbox.fleet.changed_between(interval_start, interval_end)
        expected = {sim.iccid for sim in in_night if sim.previous_imei}
        expected_first = {sim.iccid for sim in in_night if not sim.previous_imei}
        expected_mismatch = _mismatches(sandbox.fleet, interval_end)
        expected_unknown = {sim.iccid for sim in sandbox.fleet.sims if sim.last_change is None}
        calls = sandbox.stats()["by_command"].get("query_imei", 0)

    if result.returncode != 0:
        print(log_path.read_text()[-4000:])
        print(f"[demo] FAILED: airflow dags test exited {result.returncode}; full log in {log_path}")
        return 1
    folder = report_folder(None, DAG_ID, f"{interval_start:%Y-%m-%d}")
    from airflow.sdk import ObjectStoragePath

    summary = json.loads(ObjectStoragePath(f"{folder}/summary.json").read_text())
    rows = list(read_csv(summary["report_csv"]))
    changed = {row["iccid"] for row in rows if row["status"] == "changed"}
    unknown = {row["iccid"] for row in rows if row["status"] == "unknown"}
    first = {row["iccid"] for row in rows if row["status"] == "first_seen"}
    mismatch = {row["iccid"] for row in rows if row["status"] == "inventory_mismatch"}

    print()
    print(f"Report for {interval_start:%Y-%m-%d %H:%M} to {interval_end:%Y-%m-%d %H:%M} UTC")
    print(f"  CSV:     {summary['report_csv']}")
    print(f"  summary: {folder}/summary.json")
    print(
        f"  fleet {summary['fleet_size']} SIMs ({calls} SIM Insight calls): {summary['changed']} changed device, "
        f"{summary['first_seen']} first seen, {summary['inventory_mismatch']} inventory mismatches, "
        f"{summary['unknown']} unknown, {summary['failed']} failed"
    )
    print("  first seen: a device, and none known before; inventory mismatch: not the fleet file's expected_imei")
    print("  unknown: the platform does not know the SIM's device (status unknown in the CSV; never a change)")
    print(f"  audit state for the next night: {summary['state']}")
    print("  first rows:")
    for row in rows[:5]:
        print(
            f"    {row['iccid']}  {row['asset_name']:<11} {row['previous_imei'] or '-':>15} -> "
            f"{row['current_imei'] or '-':<15} at {row['last_change']}"
        )
    ok = (changed, first, mismatch, unknown) == (expected, expected_first, expected_mismatch, expected_unknown)
    ok = ok and summary["failed"] == 0
    verdict = "matches" if ok else "DOES NOT MATCH"
    print(
        f"  check: {verdict} the sandbox fleet's {len(expected)} known changes of the night, "
        f"{len(expected_first)} first sightings, {len(expected_mismatch)} SIMs not in their inventory device "
        f"and {len(expected_unknown)} SIMs of unknown device"
    )
    print(f"[demo] done in {time.monotonic() - started:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
