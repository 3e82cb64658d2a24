"""
The nightly fleet audit on a real scheduler, and where its time goes: platform floor / wall time (figure 11).

    .venv/bin/python benchmarks/scheduled_fleet.py [--fleet 20000] [--platform-rate 200] [--pool 4]
        [--client-rate 47.5] [--latency 0.05] [--batch-size 5000 | --batch-size auto] [--workers 16]

A throwaway Airflow home with the project's ``airflow_provider_m2m/example_dags/``: api-server, scheduler and
dag-processor as separate processes (LocalExecutor, SQLite), ``--pool`` batches at once (the DAG's ``pool_slots``:
it sizes the batches; the audit's own cap is the param's default, 4, and ``[core] parallelism`` is ``--pool`` + 1;
the ``m2m_platform`` pool is still set to ``--pool`` slots for other DAGs), the
connection's ``max_requests_per_second`` set to ``--client-rate``, and the sandbox (``--latency`` per call, a platform
limit of ``--platform-rate`` requests/s) in another process. The run is triggered through the REST API with
the data interval of last night's scheduled run, then the DAG is unpaused (the scheduler sees that night's
run exists and makes no other). The clock runs from the trigger to the end of ``imei_audit.build_report``.

Prints the breakdown from the task instances' start and end times (REST API): scheduling before the plan,
plan, gaps, the batches (waves, idle pool slots between waves and in the last wave, each batch's own rate
against its share, where its time at the limit went) and the report; how busy the machine's cores were in the
plan, the batches and the report (and how much of them the hypervisor and the platform simulator took); then
the platform's view (429s, SIMs queried twice or never) and whether the report matches the sandbox fleet's
truth. The last line is a JSON object. Never asserts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from ui_airflow import POOL, AirflowServer  # noqa: E402

from airflow_provider_m2m.sandbox import Fleet, Sandbox, midnight_utc  # noqa: E402
from airflow_provider_m2m.sandbox.airflow_home import new_airflow_home  # noqa: E402
from airflow_provider_m2m.utils.files import read_csv  # noqa: E402

DAG_ID, GROUP = "fleet_imei_change_report", "imei_audit"  # the DAG's FleetImeiAudit group: its tasks' prefix


def _when(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value).timestamp() if value else None


def slots_of(batches: list[dict]) -> list[list[dict]]:
    """Lay the batches out on pool slots as they ran: each starts on the slot free longest before it."""
    slots: list[list[dict]] = []
    for b in sorted(batches, key=lambda b: b["start"]):
        free = [s for s in slots if s[-1]["end"] <= b["start"] + 0.05]
        if free:
            min(free, key=lambda s: s[-1]["end"]).append(b)
        else:
            slots.append([b])
    return slots


QUERIED = re.compile(r"SIMs queried: (\d+)/\d+ in ([\d.]+)s")


def task_log(home: Path, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
    """A task's first attempt's log lines (JSON lines, each with a ``timestamp``)."""
    folder = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        folder /= f"map_index={map_index}"
    path = folder / "attempt=1.log"
    lines = path.read_text("utf-8", "replace").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


def query_seconds(log: list[dict]) -> float | None:
    """The seconds a batch spent querying, from its last progress line."""
    found = [QUERIED.search(str(line.get("event", ""))) for line in log]
    found = [m for m in found if m]
    return float(found[-1].group(2)) if found else None


def batch_phases(log: list[dict], start: float, end: float) -> list[float] | None:
    """
    A batch's seconds outside its querying: the task process starting (to its first log line), then up to its
    progress clock (reading and checking its ICCIDs...), then from its last progress line to its end.
    """
    found = [(line, m) for line in log if (m := QUERIED.search(str(line.get("event", ""))))]
    stamps = [_when(line["timestamp"]) for line in log if line.get("timestamp")]
    if not found or not stamps:
        return None
    last_line = _when(found[-1][0]["timestamp"])
    clock = last_line - float(found[-1][1].group(2))
    return [round(min(stamps) - start, 2), round(clock - min(stamps), 2), round(end - last_line, 2)]


PACED = re.compile(r"The batch was paced at .*fresh turn: (\d+); pauses for a 429: (\d+) \(([\d.]+) s\)")


def batch_pacing(log: list[dict]) -> list[float] | None:
    """A batch's [late wakes that took a fresh turn, pauses for a 429, seconds paused], from the hook's last line."""
    found = [m for line in log if (m := PACED.search(str(line.get("event", ""))))]
    return [int(found[-1].group(1)), int(found[-1].group(2)), float(found[-1].group(3))] if found else None


def startup_seconds(log: list[dict], start: float) -> float | None:
    """Seconds from the task's start to its first log line (the task process starting and parsing the DAG)."""
    stamps = [_when(line["timestamp"]) for line in log if line.get("timestamp")]
    return min(stamps) - start if stamps else None


class CpuSampler:
    """
    The machine's CPU once a second while the run goes (``/proc/stat``): how busy its cores were in each phase,
    how much the hypervisor took (steal), and what the platform simulator's own process used. On a machine this
    small the simulator, the scheduler and the batches share the cores: a phase at 100 % busy is bound by the
    machine, not by the DAG.

    :param pid: the platform simulator's process.
    """

    def __init__(self, pid: int | None) -> None:
        self.pid, self.samples = pid, []
        self.cores = os.cpu_count() or 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), *self._read()))
            if self._stop.wait(1.0):
                return

    def _read(self) -> tuple[int, int, int, int]:
        """Ticks so far: all, idle (with I/O wait), steal, and the simulator's (user + system)."""
        with open("/proc/stat") as stat:
            cells = [int(n) for n in stat.readline().split()[1:]]
        simulator = 0
        if self.pid:
            try:
                with open(f"/proc/{self.pid}/stat") as own:
                    fields = own.read().rsplit(")", 1)[1].split()
                simulator = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the line)
            except OSError:
                pass
        return sum(cells[:8]), cells[3] + cells[4], cells[7], simulator

    def window(self, start: float, end: float) -> dict[str, float] | None:
        """Busy and steal as a share of all cores, and the simulator's cores, between ``start`` and ``end``."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        (_, all0, idle0, steal0, sim0), (_, all1, idle1, steal1, sim1) = inside[0], inside[-1]
        ticks = max(1, all1 - all0)
        return {
            "busy": round(1 - (idle1 - idle0) / ticks, 3),
            "steal": round((steal1 - steal0) / ticks, 3),
            "simulator_cores": round((sim1 - sim0) / ticks * self.cores, 2),
        }


def breakdown(tis: list[dict], trigger: float, sims_of: dict[int, int], pool: int, client_rate: float) -> dict:
    """Where the wall time went, from the task instances' start and end times."""
    by_task: dict[str, list[dict]] = {}
    for ti in tis:
        by_task.setdefault(ti["task_id"], []).append(
            {
                "map_index": ti["map_index"],
                "start": _when(ti["start_date"]),
                "end": _when(ti["end_date"]),
                "query_s": ti.get("query_s"),
                "startup_s": ti.get("startup_s"),
                "phases": ti.get("phases"),
                "pacing": ti.get("pacing"),
            }
        )
    plan, report = by_task[f"{GROUP}.plan_batches"][0], by_task[f"{GROUP}.build_report"][0]
    batches = sorted(by_task[f"{GROUP}.query_imeis"], key=lambda b: b["map_index"])
    first, last = min(b["start"] for b in batches), max(b["end"] for b in batches)
    span = last - first
    busy = sum(b["end"] - b["start"] for b in batches)
    slots = slots_of(batches)
    head = sum(s[0]["start"] - first for s in slots)
    tail = sum(last - s[-1]["end"] for s in slots)
    between = sum(nxt["start"] - prev["end"] for s in slots for prev, nxt in zip(s, s[1:], strict=False))
    rates = [sims_of[b["map_index"]] / (b["end"] - b["start"]) for b in batches]
    queried = [b["query_s"] for b in batches if b.get("query_s")]
    query_rates = [sims_of[b["map_index"]] / b["query_s"] for b in batches if b.get("query_s")]
    return {
        "trigger_to_plan_start_s": plan["start"] - trigger,
        "plan_s": plan["end"] - plan["start"],
        "plan_end_to_first_batch_s": first - plan["end"],
        "batches": len(batches),
        "slots_used": len(slots),
        "waves": max(len(s) for s in slots),
        "batch_span_s": span,
        "batch_s": sorted(round(b["end"] - b["start"], 2) for b in batches),
        "slot_seconds_busy": busy,
        # idle slot-seconds inside the batch span: before a slot's first batch, between waves, after its last
        "idle_head_slot_s": head + (pool - len(slots)) * span,
        "idle_between_waves_slot_s": between,
        "idle_tail_slot_s": tail,
        "batch_rate_mean": sum(rates) / len(rates),
        "batch_rate_share": sum(rates) / len(rates) / client_rate if client_rate else None,
        "batch_query_s": sorted(round(q, 2) for q in queried),
        "query_rate_mean": sum(query_rates) / len(query_rates) if query_rates else None,
        "task_overhead_s": sorted(round(b["end"] - b["start"] - b["query_s"], 2) for b in batches if b.get("query_s")),
        "batch_phases_s": [b["phases"] for b in batches],
        "batch_pacing": [b["pacing"] for b in batches],
        "plan_startup_s": plan.get("startup_s"),
        "report_startup_s": report.get("startup_s"),
        "last_batch_to_report_start_s": report["start"] - last,
        "report_s": report["end"] - report["start"],
        "wall_s": report["end"] - trigger,
    }


def _cpu_line(window: dict[str, float] | None) -> str:
    if window is None:
        return "(too short to sample)"
    return f"[{window['busy']:.0%}, {window['steal']:.1%}, {window['simulator_cores']:.2f}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--fleet", type=int, default=20_000)
    p.add_argument("--platform-rate", type=float, default=200)
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--client-rate", type=float, default=47.5, help="the connection's max_requests_per_second")
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--batch-size", default="5000", help="SIMs per batch, or 'auto' (the DAG's own sizing)")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--timeout", type=float, help="seconds to wait for the run (default: 2 x the floor + 600)")
    p.add_argument("--keep-home", action="store_true", help="keep the Airflow home (logs, DB, reports)")
    args = p.parse_args()
    load = os.getloadavg()

    end = midnight_utc()
    start = end - dt.timedelta(days=1)
    home = new_airflow_home("m2m-scheduled-fleet-")
    fleet_file = Fleet(args.fleet, anchor=end).write_csv(home / "fleet.csv")
    reports = (home / "reports").as_uri()
    conf = {"fleet_uri": fleet_file.as_uri(), "max_workers": args.workers, "report_base_uri": reports}
    if args.batch_size != "auto":
        conf["batch_size"] = int(args.batch_size)
    else:
        conf["pool_slots"] = args.pool

    with Sandbox.spawn(fleet=args.fleet, anchor=end, latency=args.latency, rate_limit=args.platform_rate) as sb:
        conn = json.loads(sb.conn_env()["AIRFLOW_CONN_M2M_DEFAULT"])
        if args.client_rate:
            conn["extra"]["max_requests_per_second"] = args.client_rate
        env = {
            "AIRFLOW_CONN_M2M_DEFAULT": json.dumps(conn),
            "AIRFLOW__CORE__PARALLELISM": str(args.pool + 1),  # the batches of the pool, beside plan or report
        }
        components = ("api-server", "scheduler", "dag-processor")
        simulator = sb.proc.pid if sb.proc else None
        with AirflowServer(home, extra_env=env, components=components) as af, CpuSampler(simulator) as cpu:
            status, body = af.api(
                "PATCH", f"/api/v2/pools/{POOL}", {"pool": POOL, "slots": args.pool, "include_deferred": False}
            )
            assert status == 200, f"pool: HTTP {status} {body}"
            af.wait_until(lambda: af.api("GET", f"/api/v2/dags/{DAG_ID}")[0] == 200, 180, "the DAG to be parsed")
            # the first audit reports every change from the interval start to its end (the night's cutoff)
            # A long-running api-server has built its execution API long before the night's run; a fresh one
            # builds it on the first task's first call, which then waits (here up to 20 s): not the run's cost.
            af.wait_until(
                lambda: requests.get(f"{af.base_url}/execution/health", timeout=60).ok, 120, "the execution API"
            )
            expected = {sim.iccid for sim in sb.fleet.changed_between(start, end)}
            sb.reset()
            time.sleep(1)  # the platform's bucket full again
            run_id = f"nightly__{start:%Y-%m-%d}"  # "scheduled__" ids are the scheduler's own
            trigger = time.time()
            status, body = af.api(
                "POST",
                f"/api/v2/dags/{DAG_ID}/dagRuns",
                {
                    "dag_run_id": run_id,
                    "logical_date": end.isoformat(),  # @daily (CronTriggerTimetable): the night's run is at its end
                    "data_interval_start": start.isoformat(),
                    "data_interval_end": end.isoformat(),
                    "conf": conf,
                },
            )
            assert status == 200, f"trigger: HTTP {status} {body}"
            af.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})

            def finished() -> str | None:
                state = af.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")[1]["state"]
                return state if state in ("success", "failed") else None

            timeout = args.timeout or 2 * args.fleet / args.platform_rate + 600
            state = af.wait_until(finished, timeout, "the DAG run", interval=0.5)
            tis = af.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=1000")[1]
            tis = tis["task_instances"]
            plan_xcom = f"taskInstances/{GROUP}.plan_batches/xcomEntries/return_value"
            plan = af.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/{plan_xcom}")[1]["value"]
            runs = af.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")[1]["total_entries"]
        stats = sb.stats()

    sims_of = {n: b["sims"] if "sims" in b else len(b["iccids"]) for n, b in enumerate(plan)}  # either plan shape
    for ti in tis:
        log = task_log(home, run_id, ti["task_id"], ti["map_index"])
        ti["query_s"] = query_seconds(log)
        ti["startup_s"] = startup_seconds(log, _when(ti["start_date"]))
        ti["phases"] = batch_phases(log, _when(ti["start_date"]), _when(ti["end_date"]))
        ti["pacing"] = batch_pacing(log)
    result = breakdown(tis, trigger, sims_of, args.pool, args.client_rate)
    starts = {ti["task_id"]: _when(ti["start_date"]) for ti in tis}
    ends = {ti["task_id"]: _when(ti["end_date"]) for ti in tis}
    batch_tis = [ti for ti in tis if ti["task_id"] == f"{GROUP}.query_imeis"]
    result["cpu"] = {
        "cores": cpu.cores,
        "plan": cpu.window(starts[f"{GROUP}.plan_batches"], ends[f"{GROUP}.plan_batches"]),
        "batches": cpu.window(
            min(_when(ti["start_date"]) for ti in batch_tis), max(_when(ti["end_date"]) for ti in batch_tis)
        ),
        "report": cpu.window(starts[f"{GROUP}.build_report"], ends[f"{GROUP}.build_report"]),
    }
    queried = stats["imei_queries_per_iccid"]
    summary = json.loads((home / "reports" / DAG_ID / f"{start:%Y-%m-%d}" / "summary.json").read_text())
    changed = {row["iccid"] for row in read_csv(summary["report_csv"]) if row["status"] == "changed"}
    floor = args.fleet / args.platform_rate
    result.update(
        {
            "fleet": args.fleet,
            "platform_rate": args.platform_rate,
            "pool": args.pool,
            "client_rate": args.client_rate,
            "pacing_factor": args.pool * args.client_rate / args.platform_rate if args.client_rate else None,
            "batch_size": args.batch_size,
            "batch_sims": sorted(set(sims_of.values())),
            "state": state,
            "dag_runs": runs,
            "floor_s": floor,
            "ratio": floor / result["wall_s"],
            "rate_limited": stats["rate_limited"],
            "requests": stats["by_command"].get("query_imei", 0),
            "never_queried": sum(1 for sim in sb.fleet.iccids if sim not in queried),
            "queried_twice": sum(1 for n in queried.values() if n > 1),
            "report_matches": changed == expected and summary["fleet_size"] == args.fleet,
            "load_average": [round(x, 2) for x in (*load, *os.getloadavg())],
        }
    )
    if not args.keep_home and result["report_matches"]:
        shutil.rmtree(home, ignore_errors=True)
    else:
        result["home"] = str(home)
    r = result
    print(
        f"fleet {r['fleet']} SIMs, platform {r['platform_rate']:.0f}/s, pool {r['pool']}, "
        f"max_requests_per_second {r['client_rate']} (pacing factor {r['pacing_factor']}), batch_size "
        f"{r['batch_size']}: {r['batches']} batches of {r['batch_sims']} in {r['waves']} wave(s)\n"
        f"  trigger -> plan start   {r['trigger_to_plan_start_s']:6.1f} s\n"
        f"  plan                    {r['plan_s']:6.1f} s (its first log line after {r['plan_startup_s'] or 0:.1f} s)\n"
        f"  plan -> first batch     {r['plan_end_to_first_batch_s']:6.1f} s\n"
        f"  batches (first start -> last end) {r['batch_span_s']:6.1f} s (fleet / limit = {floor:.1f} s); "
        f"batch durations {r['batch_s']}\n"
        f"    idle pool slot-seconds: before a slot's first batch {r['idle_head_slot_s']:.1f}, "
        f"between waves {r['idle_between_waves_slot_s']:.1f}, last wave's tail {r['idle_tail_slot_s']:.1f} "
        f"(of {r['pool'] * r['batch_span_s']:.0f})\n"
        f"    a batch's own rate {r['batch_rate_mean']:.1f}/s = {r['batch_rate_share']:.3f} of its share "
        f"(task start-up included); querying alone {r['query_rate_mean'] or 0:.1f}/s in {r['batch_query_s']} s; "
        f"the rest of each task (start-up, files) {r['task_overhead_s']} s\n"
        f"    each batch's [process start, before its first query, after its last] {r['batch_phases_s']} s\n"
        f"    each batch's [late wakes that took a fresh turn, pauses for a 429, seconds paused] {r['batch_pacing']}\n"
        f"  last batch -> report    {r['last_batch_to_report_start_s']:6.1f} s\n"
        f"  report                  {r['report_s']:6.1f} s "
        f"(its first log line after {r['report_startup_s'] or 0:.1f} s)\n"
        f"  trigger -> report end   {r['wall_s']:6.1f} s: floor {floor:.0f} s / wall = {r['ratio']:.3f}\n"
        f"  CPU of the machine's {r['cpu']['cores']} cores [busy, stolen by the hypervisor, the platform simulator's "
        f"cores]: plan {_cpu_line(r['cpu']['plan'])}, batches {_cpu_line(r['cpu']['batches'])}, report "
        f"{_cpu_line(r['cpu']['report'])}\n"
        f"  platform: {r['requests']} queries, {r['rate_limited']} x 429, never queried {r['never_queried']}, "
        f"queried twice {r['queried_twice']}; report matches the fleet's truth: {r['report_matches']}; "
        f"run {r['state']} ({r['dag_runs']} run(s)); load average before/after {r['load_average']}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
