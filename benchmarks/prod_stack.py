"""
Figure 7: the whole nightly audit DAG on the production stack (CeleryExecutor with two workers, PostgreSQL,
Redis, S3 on moto; ``tests/prod/stack.py``), 100,000 SIMs against a platform limit of 400 requests/s at 50 ms a
call: the platform's floor (fleet / limit) against the wall time from the REST API trigger to the report.

    .venv/bin/python benchmarks/prod_stack.py [--fleet 100000] [--rate-limit 400] [--batch-size 5000] ...

Prints where the time went (the stack's start-up, the plan, the batches, the report, the 429s) and a final JSON
line; never asserts. ``benchmarks/run_all.py --only 7`` runs it as figure 7. The sizing (``--batch-size``,
``--max-workers``, ``--pool-slots``, the connection's ``max_requests_per_second``) follows the README's sizing
rules (main's: batches sized from the fleet and the pool, limit / pool a task) unless given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "prod"))

from stack import S3_ROOT, ProdStack

DAG_ID = "fleet_imei_change_report"


def _span(tis: list[dict]) -> tuple[float, float]:
    starts = [dt.datetime.fromisoformat(ti["start_date"]).timestamp() for ti in tis]
    ends = [dt.datetime.fromisoformat(ti["end_date"]).timestamp() for ti in tis]
    return min(starts), max(ends)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fleet", type=int, default=100_000)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--rate-limit", type=float, default=400, help="the platform's limit, requests/s")
    p.add_argument("--pool-slots", type=int, default=4)
    p.add_argument("--max-rps", type=float, help="connection extra max_requests_per_second (default limit / pool)")
    p.add_argument("--batch-size", type=int, default=0, help="default 0: sized from the fleet and the pool")
    p.add_argument("--max-workers", type=int, default=16)
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args()

    with ProdStack(
        fleet=args.fleet,
        latency=args.latency,
        rate_limit=args.rate_limit,
        pool_slots=args.pool_slots,
        max_requests_per_second=args.max_rps,
    ) as stack:
        print(f"# stack up in {stack.startup_s:.0f} s under {stack.root}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            fleet_uri = stack.s3.put("fleets/fleet.csv", stack.sandbox.fleet.write_csv(Path(tmp) / "fleet.csv"))
        end = stack.sandbox.anchor
        start = end - dt.timedelta(days=1)
        conf = {
            "fleet_uri": fleet_uri,
            "max_workers": args.max_workers,
            "pool_slots": args.pool_slots,
            "report_base_uri": f"{S3_ROOT}/bench",
        }
        if args.batch_size:
            conf["batch_size"] = args.batch_size
        began = time.time()
        run_id = stack.trigger(DAG_ID, conf, logical_date=start, interval=(start, end))
        state = stack.wait_for_run(DAG_ID, run_id, timeout=args.timeout)
        wall = time.time() - began
        tis = stack.task_instances(DAG_ID, run_id)
        stats = stack.sandbox.stats()
        by_task = {
            task: [ti for ti in tis if ti["task_id"] == f"imei_audit.{task}"]
            for task in ("plan_batches", "query_imeis", "build_report")
        }  # the DAG's FleetImeiAudit group prefixes its tasks: "imei_audit.plan_batches"...
        spans = {task: _span(found) for task, found in by_task.items() if found and all(ti["end_date"] for ti in found)}

    floor = args.fleet / args.rate_limit
    batches = len(by_task["query_imeis"])
    result = {
        "state": state,
        "fleet": args.fleet,
        "rate_limit": args.rate_limit,
        "pool_slots": args.pool_slots,
        "max_requests_per_second": stack.max_requests_per_second,
        "batch_size": conf.get("batch_size", "auto"),
        "batches": batches,
        "wall_s": round(wall, 1),
        "floor_s": round(floor, 1),
        "ratio": round(floor / wall, 3),
        "startup_s": round(stack.startup_s, 1),
        "queue_to_plan_s": round(spans["plan_batches"][0] - began, 1) if "plan_batches" in spans else None,
        "plan_s": round(spans["plan_batches"][1] - spans["plan_batches"][0], 1) if "plan_batches" in spans else None,
        "batches_s": round(spans["query_imeis"][1] - spans["query_imeis"][0], 1) if "query_imeis" in spans else None,
        "report_s": round(spans["build_report"][1] - spans["build_report"][0], 1) if "build_report" in spans else None,
        "query_imei_calls": stats["by_command"].get("query_imei", 0),
        "rate_limited": stats["rate_limited"],
        "workers": sorted({ti["hostname"] for ti in by_task["query_imeis"]}),
    }
    print(
        f"# {args.fleet} SIMs, {batches} batches, pool {args.pool_slots}, {stack.max_requests_per_second}/s a task: "
        f"run {state} in {wall:.0f} s from the trigger (floor {floor:.0f} s: {floor / wall:.3f}); plan "
        f"{result['plan_s']} s, batches {result['batches_s']} s, report {result['report_s']} s; "
        f"{result['rate_limited']} answered 429",
        flush=True,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
