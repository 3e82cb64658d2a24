"""
Run the nightly fleet report DAG end to end on a 50,000-SIM fleet against the sandbox, and time it.

    .venv/bin/python benchmarks/fleet_dag_50k.py [--fleet 50000] [--latency 0.05] [--batch-size 1000] [--workers 32]

Uses a throwaway Airflow home, a sandbox in a subprocess with the given per-call latency, and
``airflow dags test`` (tasks run one after another in one process, so this is the single-worker figure;
with an executor the mapped batches also run side by side, up to the audit's ``pool_slots``).
Prints the wall time, the SIM Insight calls made and the report's summary; checks the changed SIMs
against the sandbox fleet's truth.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from airflow_provider_m2m.sandbox.airflow_home import airflow_home_env, new_airflow_home

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--fleet", type=int, default=50_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=32)
    args = parser.parse_args()

    home = new_airflow_home("m2m-fleet-bench-")
    example_dags = ROOT / "airflow_provider_m2m" / "example_dags"
    os.environ.update({**airflow_home_env(home, dags_folder=example_dags), "AIRFLOW__CORE__MAX_MAP_LENGTH": "1024"})
    from airflow.utils import db

    db.initdb()
    from airflow_provider_m2m.sandbox import Fleet, Sandbox, midnight_utc
    from airflow_provider_m2m.utils.files import read_csv

    end = midnight_utc()
    start = end - dt.timedelta(days=1)
    fleet_file = home / "fleet.csv"
    Fleet(args.fleet, anchor=end).write_csv(fleet_file)
    conf = {
        "fleet_uri": fleet_file.as_uri(),
        "batch_size": args.batch_size,
        "max_workers": args.workers,
        "report_base_uri": (home / "reports").as_uri(),
    }
    with Sandbox.spawn(fleet=args.fleet, anchor=end, latency=args.latency) as sandbox:
        began = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "airflow",
                "dags",
                "test",
                "fleet_imei_change_report",
                end.isoformat(),
                "-c",
                json.dumps(conf),
            ],
            env={**os.environ, **sandbox.conn_env()},
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.monotonic() - began
        calls = sandbox.stats()["by_command"].get("query_imei", 0)
        expected = {sim.iccid for sim in sandbox.fleet.changed_between(start, end)}
    if result.returncode:
        print(result.stdout[-3000:], result.stderr[-3000:])
        return 1
    summary_uri = home / "reports" / "fleet_imei_change_report" / f"{start:%Y-%m-%d}" / "summary.json"
    summary = json.loads(summary_uri.read_text())
    changed = {row["iccid"] for row in read_csv(summary["report_csv"]) if row["status"] == "changed"}
    batches = -(-args.fleet // args.batch_size)
    limit = args.fleet * args.latency / args.workers
    print(
        f"fleet {args.fleet} SIMs, {batches} mapped batches of {args.batch_size}, {args.workers} in flight, "
        f"latency {args.latency * 1000:.0f} ms: DAG run {wall:.1f}s end to end ({calls} calls; "
        f"the batches alone cannot take less than {limit:.1f}s one after another)"
    )
    print(f"summary: {json.dumps({k: summary[k] for k in ('fleet_size', 'changed', 'unknown', 'failed')})}")
    print(f"report matches the sandbox's {len(expected)} changes: {changed == expected}")
    return 0 if changed == expected and summary["fleet_size"] == args.fleet else 1


if __name__ == "__main__":
    sys.exit(main())
