"""
Figure 13: the whole night's XCom of the fleet audit (every task of ``fleet_imei_change_report``, as the metadata
DB's xcom table holds it) at 1,000,000 SIMs, against 64 kB, with Airflow's default XCom backend.

A DAG run over 1,000,000 SIMs (1,000,000 platform calls, 4 mapped tasks) takes about 17 minutes at a 1,000/s
platform limit (figure 11), too long for this figure on a shared 2-core machine, so it comes from two real parts:

1. A real run of the example DAG (``dag.test()`` in a throwaway Airflow home with SQLite, the sandbox in this
   process) over ``--run-sims`` SIMs (default 20,000: the automatic batch size makes 4 batches). Every XCom row
   of the run is read back from the xcom table (``length(value)``, the bytes as stored), task by task.
2. At ``--sims`` (default 1,000,000): the real plan (``plan_fleet``, automatic batch size: 4 batches) and the
   real report (``audit_night``) over batch files written as QueryImeiOperator writes them (the stand-in of
   ``fleet_plan_scale.py``). Each XCom row of part 1 is rebuilt with part 2's values (the plan itself; each
   batch's summary with its batch's number and counts; the report's summary with the 1,000,000-SIM result) and
   sized as Airflow stores it (``XComModel.serialize_value``); part 1 checks that this sizing gives exactly the
   stored bytes of its own rows.

Prints the breakdown and a JSON line; never asserts::

    .venv/bin/python benchmarks/fleet_xcom.py [--sims 1000000] [--run-sims 20000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DAG_ID, GROUP = "fleet_imei_change_report", "imei_audit"
POOL_SLOTS = 4  # the example DAG's default


def stored_bytes(value: object) -> int:
    """The bytes the xcom table holds for ``value`` (Airflow's own serialization, stored as it is)."""
    from airflow.models.xcom import XComModel

    return len(XComModel.serialize_value(value).encode())


def dag_run(home: Path, sims: int) -> dict:
    """Part 1: a real run of the example DAG over ``sims`` SIMs; every XCom row of the run, as stored."""
    from airflow.models.xcom import XComModel
    from airflow.utils import db

    from airflow_provider_m2m.sandbox import Fleet, Sandbox, midnight_utc
    from airflow_provider_m2m.sandbox.airflow_home import dag_bag

    db.initdb()
    end = midnight_utc()
    fleet_file = Fleet(sims, anchor=end).write_csv(home / "fleet.csv")
    with Sandbox(fleet=sims, anchor=end) as sandbox:
        os.environ.update(sandbox.conn_env())
        dag = dag_bag(str(ROOT / "airflow_provider_m2m" / "example_dags" / f"{DAG_ID}.py")).get_dag(DAG_ID)
        began = time.perf_counter()
        run = dag.test(
            logical_date=end, run_conf={"fleet_uri": fleet_file.as_uri(), "report_base_uri": (home / "r").as_uri()}
        )
        run_s = time.perf_counter() - began
    with sqlite3.connect(home / "airflow.db") as conn:
        query = "SELECT task_id, map_index, key, length(CAST(value AS BLOB)), value FROM xcom WHERE dag_id = ?"
        rows = conn.execute(f"{query} AND run_id = ?", (DAG_ID, run.run_id)).fetchall()
    found = []
    for task_id, map_index, key, size, raw in rows:
        column = json.loads(raw) if isinstance(raw, str | bytes) else raw  # what the JSON column gives back
        value = XComModel.deserialize_value(type("Row", (), {"value": column})())
        found.append({"task_id": task_id, "map_index": map_index, "key": key, "bytes": size, "value": value})
    return {"state": run.state, "run_s": round(run_s, 1), "rows": found}


def at_scale(folder: Path, sims: int) -> dict:
    """Part 2: the real plan and report of ``sims`` SIMs (the batches' query files written by the stand-in)."""
    sys.path.insert(0, str(HERE))
    import fleet_plan_scale

    from airflow_provider_m2m.fleet_audit.plan import batch_uris, night_folder
    from airflow_provider_m2m.fleet_audit.sizing import batch_size_for
    from airflow_provider_m2m.fleet_audit.state import audit_night

    size = batch_size_for(sims, POOL_SLOTS)
    fleet_plan_scale.generate(folder, sims)
    fleet_plan_scale.plan(folder, size)
    fleet_plan_scale.query(folder)
    plan = json.loads((folder / "plan.json").read_text())
    night = night_folder(folder.as_uri(), fleet_plan_scale.NIGHT)
    files = [batch_uris(night, batch["batch"]) for batch in plan]
    result = audit_night(
        batches=[(f["iccids_uri"], f["output_uri"]) for f in files],
        audit_folder=fleet_plan_scale._audit(folder),
        night=fleet_plan_scale.NIGHT,
        since=dt.datetime.combine(fleet_plan_scale.NIGHT, dt.time(), dt.UTC),
    )
    return {"batch_size": size, "plan": plan, "result": result}


def rebuilt(rows: list[dict], scale: dict) -> list[dict]:
    """Part 1's XCom rows with part 2's values: what the night at scale stores, row by row."""
    counts = ("fleet_size", "changed", "first_seen", "inventory_mismatch", "unknown", "failed")
    out = []
    for row in rows:
        task = row["task_id"].removeprefix(f"{GROUP}.")
        if task == "plan_batches" and row["key"] == "return_value":
            out.append({**row, "value": scale["plan"]})
        elif task == "query_imeis" and row["key"] == "return_value" and row["map_index"] == 0:
            for batch in scale["plan"]:  # one row per batch of the night at scale, shaped as this one
                n = batch["sims"]
                uri = re.sub(r"batch-\d{5}", f"batch-{batch['batch']:05d}", row["value"]["uri"])
                value = {**row["value"], "uri": uri, "total": n, "changed": n, "unknown": 0, "failed": 0, "rows": n}
                out.append({**row, "map_index": batch["batch"], "value": value})
        elif task == "query_imeis":
            continue  # replaced by the rows above
        elif task == "build_report" and row["key"] == "return_value":
            result = scale["result"]
            out.append({**row, "value": {**row["value"], **{k: result[k] for k in counts}}})
        else:
            out.append(row)  # a row of another shape: as stored by the real run
    return [{**row, "bytes": stored_bytes(row["value"])} for row in out]


def by_task(rows: list[dict]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        entry = table.setdefault(f"{row['task_id']}[{row['key']}]", {"rows": 0, "bytes": 0})
        entry["rows"] += 1
        entry["bytes"] += row["bytes"]
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=1_000_000)
    parser.add_argument("--run-sims", type=int, default=20_000)
    args = parser.parse_args()

    from airflow_provider_m2m.sandbox.airflow_home import airflow_home_env, new_airflow_home

    home = new_airflow_home("m2m-fleet-xcom-")
    os.environ.update(airflow_home_env(home, dags_folder=ROOT / "airflow_provider_m2m" / "example_dags"))
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    try:
        measured = dag_run(home, args.run_sims)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    calibrated = sum(stored_bytes(row["value"]) == row["bytes"] for row in measured["rows"])
    with tempfile.TemporaryDirectory(prefix="m2m-xcom-") as tmp:
        began = time.perf_counter()
        scale = at_scale(Path(tmp), args.sims)
        scale_s = time.perf_counter() - began
    night = rebuilt(measured["rows"], scale)
    run_total = sum(row["bytes"] for row in measured["rows"])
    total = sum(row["bytes"] for row in night)
    print(
        f"# part 1: a real DAG run of {DAG_ID} over {args.run_sims} SIMs ({measured['state']}, {measured['run_s']} s)"
    )
    for name, entry in by_task(measured["rows"]).items():
        print(f"    {name}: {entry['rows']} rows, {entry['bytes']} B")
    print(f"  whole run: {run_total} B; the sizing of part 2 reproduces {calibrated} of {len(measured['rows'])} rows")
    print(f"# part 2: the real plan and report of {args.sims} SIMs ({len(scale['plan'])} batches of up to "
          f"{scale['batch_size']}; {scale['result']['changed']} changed; {scale_s:.0f} s)")  # fmt: skip
    for name, entry in by_task(night).items():
        print(f"    {name}: {entry['rows']} rows, {entry['bytes']} B")
    print(f"  whole night at {args.sims} SIMs: {total} B of XCom ({total / 1024:.1f} kB; goal <= 64 kB)")
    print(
        json.dumps(
            {
                "sims": args.sims,
                "batches": len(scale["plan"]),
                "xcom_bytes": total,
                "run_sims": args.run_sims,
                "run_state": measured["state"],
                "run_xcom_bytes": run_total,
                "calibrated_rows": calibrated,
                "rows": len(measured["rows"]),
                "by_task": by_task(night),
            }
        )
    )
    return 0 if measured["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
