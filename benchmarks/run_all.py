"""
The scale figures of the batch path, measured side by side in one run (``make bench``); never asserts.

Every figure runs in a fresh process (``benchmarks/figures.py``) against the sandbox in yet another
process, so CPU time and memory are the client's alone. Prints one line per figure
(``name | measured | goal | ratio | ok/MISSED``) and a final JSON line. About 45 minutes (``--quick``: 10).

    python benchmarks/run_all.py [--quick]

1. 10,000 SIMs at 50 ms per call, 32 in flight: wall time against the physical limit 10,000 x 0.05 / 32 s.
2. The same against a plain loop of ``query_imei`` (measured on 300 SIMs, scaled to 10,000).
3. The same against one mapped task per SIM run by LocalExecutor (``dag.test(use_executor=True)`` on 60
   SIMs, scaled to 10,000).
4. Client CPU per call at zero latency (process CPU time / calls).
5. Peak RSS of an audit of 10,000 and of 100,000 SIMs streamed to a CSV (each in a new process).
6. A platform limit of 200 requests/s: throughput, 429s, SIMs lost or duplicated.
7. The whole fleet DAG on the production stack (CeleryExecutor with two workers, PostgreSQL, Redis, S3 on moto;
   ``benchmarks/prod_stack.py``), 100,000 SIMs at a platform limit of 400/s: platform floor / wall time from the
   REST API trigger to the report. About 7 minutes, the stack's start-up included; not in ``--quick``.
8. The fleet audit's plan and report for 100,000 and 1,000,000 SIMs (batches of 1,000, ``file://``; each
   task in a fresh process, ``benchmarks/fleet_plan_scale.py``): the plan's XCom bytes (JSON, as the default
   XCom backend stores it) against 64 kB, and the peak RSS growth of each task against 30 MB.
9. One SendSmsOperator task (``dag.test()``, the real task state store), 10,000 SIMs at 50 ms, 16 in flight:
   physical limit 10,000 x 0.05 / 16 s against the task's execute time; and under a 200/s platform limit:
   throughput, 429s, each SIM exactly one message (the sandbox counts them).
10. The delivery wait (deferred SmsDeliverySensor) for 10,000 messages, sandbox delivery delay 2 s, platform
    limit 200/s: seconds until every message is final against the floor 10,000 / 200 + 2 s.
11. The fleet DAG on a real scheduler (``benchmarks/scheduled_fleet.py``: api-server, scheduler, dag-processor,
    LocalExecutor, SQLite), 1,000,000 SIMs at 50 ms a call, platform limit 1,000/s, pool of 4, automatic batch
    size, each task paced at a quarter of the limit with the audit's default 16 calls in flight: the platform
    floor 1,000,000 / 1,000 s against the wall time from trigger to report. About 18 minutes; ``--quick``
    runs 20,000 SIMs at 200/s instead (about 2 minutes).

12. A whole SmsRun (``dag.test()``: plan, mapped sends, deferred delivery wait, report) to 10,000 and to 100,000
    SIMs (batches of 1,000, sandbox latency 0, a 10 s delivery wait): the run's XCom bytes, every task, read from
    the xcom table, per batch at 100,000 against per batch at 10,000 (flat: O(batches), not O(SIMs)), beside the
    report's size (what the rows weigh); and each SIM got exactly one message (the sandbox counts them).
13. The fleet audit's whole night of XCom at 1,000,000 SIMs (every task, as the xcom table holds it;
    ``benchmarks/fleet_xcom.py``: a real DAG run at 20,000 SIMs read back from the metadata DB, rebuilt with the
    real plan and report at 1,000,000) against 64 kB.

    python benchmarks/run_all.py --only 9,10     # a subset of the figures
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from airflow_provider_m2m.sandbox import Sandbox

HERE = Path(__file__).resolve().parent
FIGURES = HERE / "figures.py"
TARGET = 10_000  # the fleet the scaled figures talk about


def measure(figure: str, *options: object, env: dict[str, str] | None = None, script: Path = FIGURES) -> dict:
    """Run one measurement in a fresh process (``script figure options``); return its JSON result."""
    cmd = [sys.executable, str(script), *([figure] if figure else []), *map(str, options)]
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines or not lines[-1].startswith("{"):
        sys.stderr.write(out.stdout[-2000:] + out.stderr[-4000:])
        raise SystemExit(f"{figure} failed with exit code {out.returncode}")
    result = json.loads(lines[-1])
    result["process_s"] = round(time.perf_counter() - started, 1)
    return result


def fleet_plan_scale(*sizes: int) -> list[dict]:
    """Figure 8's runs (each spawns its own processes); one JSON result per fleet size."""
    cmd = [sys.executable, str(HERE / "fleet_plan_scale.py"), *(f"--sims={n}" for n in sizes)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.stderr.write(out.stdout[-2000:] + out.stderr[-4000:])
        raise SystemExit(f"fleet_plan_scale failed with exit code {out.returncode}")
    return [json.loads(line) for line in out.stdout.strip().splitlines()]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def line(name: str, measured: str, goal: str, ratio: float, ok: bool, unit: str = "") -> dict:
    print(f"{name} | {measured} | {goal} | {ratio:.3g}{unit} | {'ok' if ok else 'MISSED'}", flush=True)
    return {"name": name, "measured": measured, "goal": goal, "ratio": round(ratio, 4), "ok": ok}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of this script)")
    p.add_argument("--only", help="comma-separated figure numbers to run (default: all)")
    args = p.parse_args()
    only = {int(n) for n in args.only.split(",")} if args.only else None
    if only and only & {2, 3}:
        only.add(1)  # figures 2 and 3 compare against figure 1's batch

    def wanted(number: int) -> bool:
        return only is None or number in only

    q = args.quick
    sims, seq_sims, task_sims = (2_000, 60, 12) if q else (TARGET, 200, 30)
    audit_small, audit_big = (2_000, 20_000) if q else (10_000, 100_000)
    limited_sims = 600 if q else 3_000
    sms_sims = 2_000 if q else TARGET
    started = time.perf_counter()
    loads = [load()]
    print(f"# m2m scale benchmark: load average (1/5 min) {loads[0]} on {os.cpu_count()} CPUs", flush=True)
    print("# figure | measured | goal | ratio | verdict", flush=True)
    figures: list[dict] = []
    raw: dict[str, object] = {}

    # 1. the batch against the physical limit
    if wanted(1):
        b = raw["batch"] = measure("batch", "--sims", sims, "--latency", 0.05, "--workers", 32)
        figures.append(
            line(
                f"1 batch {sims} SIMs @50ms, 32 in flight: limit/wall",
                f"{b['wall_s']:.2f} s (limit {b['limit_s']:.2f} s, max in flight {b['max_in_flight']}; "
                f"a minimal threaded client gets {b['sandbox_floor_ratio']:.3f} of the limit here, so this client "
                f"{b['limit_s'] / b['wall_s'] / b['sandbox_floor_ratio']:.3f} of what the sandbox allows)",
                ">= 0.9",
                b["limit_s"] / b["wall_s"],
                b["limit_s"] / b["wall_s"] >= 0.9 and b["records"] == sims,
            )
        )
        batch_wall = b["wall_s"] * TARGET / sims

    # 2. against a plain loop
    if wanted(2):
        s = raw["sequential"] = measure("sequential", "--sims", seq_sims, "--latency", 0.05)
        loop = s["wall_s"] / seq_sims * TARGET
        figures.append(
            line(
                f"2 batch vs sequential loop ({seq_sims} SIMs scaled to {TARGET})",
                f"loop {loop:.0f} s ({1000 * s['wall_s'] / seq_sims:.1f} ms/SIM) vs batch {batch_wall:.1f} s",
                ">= 25x",
                loop / batch_wall,
                loop / batch_wall >= 25,
                "x",
            )
        )

    # 3. against one mapped task per SIM on a real executor
    if wanted(3):
        e = raw["executor"] = measure("executor", "--sims", task_sims, "--latency", 0.05)
        tasks = e["wall_s"] / task_sims * TARGET
        figures.append(
            line(
                f"3 batch vs one mapped task per SIM ({e['executor']}, parallelism {e['parallelism']}, "
                f"{task_sims} SIMs scaled)",
                f"tasks {tasks:.0f} s ({e['wall_s'] / task_sims:.2f} s/SIM, run {e['state']}) "
                f"vs batch {batch_wall:.1f} s",
                ">= 100x",
                tasks / batch_wall,
                tasks / batch_wall >= 100 and e["succeeded"],
                "x",
            )
        )

    # 4. client CPU per call
    if wanted(4):
        c = raw["cpu"] = measure("batch", "--sims", sims, "--latency", 0, "--workers", 32)
        figures.append(
            line(
                "4 client CPU per call @0ms, 32 in flight: measured/goal",
                f"{c['cpu_ms_per_call']:.3f} ms ({c['requests']} calls, {c['requests'] / c['wall_s']:.0f} calls/s)",
                "<= 0.5 ms",
                c["cpu_ms_per_call"] / 0.5,
                c["cpu_ms_per_call"] <= 0.5,
            )
        )

    # 5. peak RSS, 10x the fleet; one sandbox (out of process) serves both audits
    if wanted(5):
        with tempfile.TemporaryDirectory(prefix="m2m-bench-") as tmp, Sandbox.spawn(fleet=audit_big) as sb:
            iccid_file = Path(tmp) / "iccids.txt"
            iccid_file.write_text("\n".join(sb.fleet.iccids))
            env = {**os.environ, **sb.conn_env()}
            small = measure("rss", "--sims", audit_small, "--iccid-file", iccid_file, "--out-dir", tmp, env=env)
            sb.reset()
            big = measure("rss", "--sims", audit_big, "--iccid-file", iccid_file, "--out-dir", tmp, env=env)
        raw["rss"] = {"small": small, "big": big}
        growth = big["peak_rss_mb"] - small["peak_rss_mb"]
        figures.append(
            line(
                f"5 peak RSS growth, audit {audit_small} -> {audit_big} SIMs to CSV: measured/goal",
                f"+{growth:.1f} MB ({small['peak_rss_mb']:.0f} -> {big['peak_rss_mb']:.0f} MB, "
                f"{big['rows']} rows in {big['wall_s']:.0f} s)",
                "<= 30 MB",
                growth / 30,
                growth <= 30 and small["rows"] == audit_small and big["rows"] == audit_big,
            )
        )

    # 6. under the platform's rate limit
    if wanted(6):
        r = raw["ratelimit"] = measure(
            "ratelimit", "--sims", limited_sims, "--platform-rate", 200, "--client-rate", 195, "--latency", 0.05
        )
        clean = r["lost"] == r["duplicated"] == r["server_missing"] == r["server_repeated"] == 0
        figures.append(
            line(
                f"6 platform limit 200/s, client 195/s, {limited_sims} SIMs: throughput/200",
                f"{r['throughput']:.1f}/s, 429s {r['rate_limited']}, lost {r['lost']}, duplicated {r['duplicated']}, "
                f"server missing/repeated {r['server_missing']}/{r['server_repeated']}",
                ">= 0.9, 0 lost/dup",
                r["throughput"] / 200,
                r["throughput"] >= 0.9 * 200 and clean,
            )
        )

    # 7. the whole DAG on the production stack, against the platform's floor
    if wanted(7) and not q:
        w = raw["prod_stack"] = measure("", script=HERE / "prod_stack.py")
        figures.append(
            line(
                f"7 fleet DAG on Celery + PostgreSQL + S3, {w['fleet']} SIMs @{w['rate_limit']:.0f}/s: floor/wall",
                f"{w['wall_s']:.0f} s from trigger to report (floor {w['floor_s']:.0f} s; {w['batches']} batches of "
                f"{w['batch_size']}, pool {w['pool_slots']}, {w['max_requests_per_second']}/s a task; plan "
                f"{w['plan_s']} s, batches {w['batches_s']} s, report {w['report_s']} s; 429s {w['rate_limited']}; "
                f"run {w['state']})",
                ">= 0.9",
                w["ratio"],
                w["ratio"] >= 0.9 and w["state"] == "success",
            )
        )

    # 8. the fleet plan's XCom and the plan's and report's memory, 10x the fleet
    if wanted(8):
        small, big = raw["fleet_plan"] = fleet_plan_scale(*((10_000, 100_000) if q else (100_000, 1_000_000)))
        figures.append(
            line(
                f"8a fleet plan of {big['sims']} SIMs in {big['batches']} batches: XCom bytes/64 kB",
                f"{big['xcom_bytes']} B ({small['xcom_bytes']} B for {small['sims']} SIMs in {small['batches']} "
                f"batches; plan {big['plan_s']:.0f} s, {big.get('plan_two_pass_s', 0):.0f} s reading the fleet twice)",
                "<= 64 kB",
                big["xcom_bytes"] / 65536,
                big["xcom_bytes"] <= 65536 and big["planned_sims"] == big["sims"],
            )
        )
        worst = max(big["plan_growth_mb"], big["report_growth_mb"])
        figures.append(
            line(
                f"8b peak RSS growth of plan_batches / build_report, {big['sims']} SIMs: measured/goal",
                f"+{big['plan_growth_mb']:.1f} / +{big['report_growth_mb']:.1f} MB (+{small['plan_growth_mb']:.1f}"
                f" / +{small['report_growth_mb']:.1f} MB for {small['sims']}; report {big['report_s']:.0f} s "
                f"({big.get('report_merged_s', 0):.0f} s merging the batches, "
                f"{big.get('report_collecting_s', 0):.0f} s with the cycle collector running; "
                f"{big['report_joining_s']:.1f} s joining the batches' parts, made in {big['batch_diff_s']:.1f} s "
                f"at once), "
                f"{big['fleet_size']} SIMs, {big['changed']} changed)",
                "<= 30 MB",
                worst / 30,
                worst <= 30 and big["fleet_size"] == big["sims"] and big["changed"] == big["sims"] // 10,
            )
        )

    # 9. one SendSmsOperator task against the physical limit, then under the platform's rate limit
    if wanted(9):
        m = raw["sms"] = measure(
            "sms", "--sims", sms_sims, "--latency", 0.05, "--workers", 16, "--platform-rate", 0, "--timeout", 600
        )
        figures.append(
            line(
                f"9a one SendSmsOperator task, {sms_sims} SIMs @50ms, 16 in flight: limit/execute time",
                f"{m['execute_s']:.2f} s (limit {m['limit_s']:.2f} s; task {m['task_s']:.1f} s with Airflow's "
                "start-up; "
                f"{m['store_round_trips']} task state store round trips, {m['store_s']:.2f} s; lost {m['lost']}, "
                f"duplicated {m['duplicated']})",
                ">= 0.8",
                m["limit_s"] / m["execute_s"],
                m["limit_s"] / m["execute_s"] >= 0.8 and m["lost"] == m["duplicated"] == 0,
            )
        )
        m = raw["sms_limited"] = measure(
            "sms",
            "--sims",
            limited_sims,
            "--latency",
            0.05,
            "--workers",
            16,
            "--platform-rate",
            200,
            "--client-rate",
            195,
            "--timeout",
            600,
        )
        clean = m["lost"] == m["duplicated"] == 0
        figures.append(
            line(
                f"9b SendSmsOperator under a 200/s platform limit, client 195/s, {limited_sims} SIMs: throughput/200",
                f"{m['throughput']:.1f}/s, 429s {m['rate_limited']}, lost {m['lost']}, duplicated {m['duplicated']} "
                f"(the sandbox counted each SIM's messages)",
                ">= 0.9, 0 lost/dup",
                m["throughput"] / 200,
                m["throughput"] >= 0.9 * 200 and clean,
            )
        )

    # 10. the delivery wait for a whole run, within the platform's rate limit
    if wanted(10):
        d = raw["delivery"] = measure(
            "delivery",
            "--sims",
            sms_sims,
            "--platform-rate",
            200,
            "--client-rate",
            195,
            "--delay",
            2,
            "--latency",
            0.05,
            "--workers",
            16,
            "--poke-interval",
            10,
            "--timeout",
            900,
        )
        figures.append(
            line(
                f"10 delivery wait, {d['messages']} messages, delay 2 s, platform 200/s: floor/time",
                f"{d['wall_s']:.1f} s until all final (floor {d['floor_s']:.0f} s; {d['final']} final, "
                f"{d['queries']} queries, 429s {d['rate_limited']})",
                ">= 0.7",
                d["floor_s"] / d["wall_s"],
                d["floor_s"] / d["wall_s"] >= 0.7 and d["final"] == d["messages"],
            )
        )

    # 11. the fleet DAG on a real scheduler, against the platform's floor
    if wanted(11):
        fleet, limit = (20_000, 200) if q else (1_000_000, 1_000)
        f = raw["scheduled_fleet"] = measure(
            "",
            "--fleet",
            fleet,
            "--platform-rate",
            limit,
            "--pool",
            4,
            "--client-rate",
            limit / 4,
            "--batch-size",
            "auto",
            "--latency",
            0.05,
            "--timeout",
            2700,
            script=HERE / "scheduled_fleet.py",
        )
        clean = f["never_queried"] == f["queried_twice"] == 0 and f["report_matches"]
        goal = 0.9 if q else 0.97  # a million SIMs: the night's fixed costs are 3 % of the floor at most
        figures.append(
            line(
                f"11 fleet DAG on a scheduler, {fleet} SIMs, platform {limit}/s, pool 4 x {limit / 4:g}/s: floor/wall",
                f"{f['wall_s']:.1f} s trigger to report (floor {f['floor_s']:.0f} s; plan {f['plan_s']:.1f} s, "
                f"{f['batches']} batches in {f['waves']} wave(s) {f['batch_span_s']:.1f} s, "
                f"report {f['report_s']:.1f} s; "
                f"429s {f['rate_limited']}, never queried {f['never_queried']}, twice {f['queried_twice']}, "
                f"report exact {f['report_matches']})",
                f">= {goal}",
                f["ratio"],
                f["ratio"] >= goal and clean,
            )
        )

    # 12. a whole SmsRun: XCom per batch at 10x the SIMs, and one message per SIM
    if wanted(12):
        runs = raw["sms_run"] = [
            measure(
                "sms_run", "--sims", n, "--latency", 0, "--workers", 16, "--wait", 10, "--poke-interval", 2,
                "--batch-size", 1000, "--timeout", 3000,
            )
            for n in ((2_000, 10_000) if q else (10_000, 100_000))
        ]  # fmt: skip
        small, big = runs
        per_batch = [r["xcom_bytes"] / r["batches"] for r in runs]
        clean = all(r["lost"] == r["duplicated"] == 0 and r["report_sims_once"] for r in runs)
        figures.append(
            line(
                f"12 SmsRun XCom per batch, {small['sims']} -> {big['sims']} SIMs: big/small",
                f"{big['xcom_bytes']} B in {big['batches']} batches vs {small['xcom_bytes']} B in {small['batches']} "
                f"({per_batch[1]:.0f} vs {per_batch[0]:.0f} B a batch; the reports weigh {big['report_bytes']} / "
                f"{small['report_bytes']} B); sent {big['sent']} / {small['sent']}, lost "
                f"{big['lost'] + small['lost']}, duplicated {big['duplicated'] + small['duplicated']}; "
                f"runs {big['wall_s']:.0f} / {small['wall_s']:.0f} s",
                "<= 1.2, 0 lost/dup",
                per_batch[1] / per_batch[0],
                per_batch[1] / per_batch[0] <= 1.2 and clean,
            )
        )

    # 13. the whole night's XCom of the fleet audit at 1,000,000 SIMs
    if wanted(13):
        sims = 100_000 if q else 1_000_000
        x = raw["fleet_xcom"] = measure("", "--sims", sims, "--run-sims", 2_000 if q else 20_000,
                                        script=HERE / "fleet_xcom.py")  # fmt: skip
        figures.append(
            line(
                f"13 fleet audit, whole night's XCom at {sims} SIMs ({x['batches']} batches): bytes/64 kB",
                f"{x['xcom_bytes']} B (a real run of {x['run_sims']} SIMs: {x['run_xcom_bytes']} B; sizing exact "
                f"for {x['calibrated_rows']} of {x['rows']} rows)",
                "<= 64 kB",
                x["xcom_bytes"] / 65536,
                x["xcom_bytes"] <= 65536 and x["run_state"] == "success",
            )
        )

    loads.append(load())
    total = time.perf_counter() - started
    print(f"# load average at start {loads[0]}, at end {loads[1]}; total {total:.0f} s", flush=True)
    summary = {"figures": figures, "raw": raw, "load_average": loads, "total_s": round(total, 1), "quick": q}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
