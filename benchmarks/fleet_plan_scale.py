"""
Figure 8: the fleet audit's plan and report at fleet scale: the plan's XCom bytes and the peak RSS growth of
``plan_batches`` and ``build_report`` (their code: ``fleet_plan.plan_fleet`` and ``audit_state.audit_night``)
for a fleet of N SIMs, each task in a fresh process as on a worker; ``file://`` storage.

The platform calls are not measured: after the plan, each batch's query file is written directly from its
input file, as QueryImeiOperator writes it (every SIM in the device the fleet file expects), against a previous
state in which a tenth of the SIMs had another device, so the report is of real size. The fleet file and the
state are generated in another process first. Growth is the task's peak RSS minus the RSS of its process
after the imports (what the task itself added). Prints JSON; never asserts::

    .venv/bin/python benchmarks/fleet_plan_scale.py                      # 100,000 and 1,000,000 SIMs
    .venv/bin/python benchmarks/fleet_plan_scale.py --sims 20000 --batch-size 500
    .venv/bin/python benchmarks/fleet_plan_scale.py --batch-size 0          # automatic, as the DAG's default
    .venv/bin/python benchmarks/fleet_plan_scale.py --task plan --folder F --sims N --batch-size B   (one step)

``--batch-size 0`` sizes the batches as the DAG does by default (from the fleet, for a pool of 4 slots).
``plan_s`` is a night like any other (the previous state as the night before's report wrote it, which the plan
trusts); ``plan_state_read_s`` the same plan with a state restored by hand (read through, every row checked).
``plan_two_pass_s`` is the plan as it was (a count pass when automatic, then the cut, then a merge of the batch
files for the duplicate check; the state read through), timed in the same run beside ``plan_s``; likewise
``report_merged_s`` is the report merging the batches (as before they were ICCID ranges) beside ``report_s``
(each batch read once, in order), and ``report_collecting_s`` the report with Python's cycle collector running
through its diff (as before the report paused it). ``--no-two-pass`` leaves these out. Those reports diff the
whole fleet themselves (``report_s``: as when the batches made no parts); then every batch's share of the diff
runs at once, each in its own process as the pool runs the batches (``batch_diff_s``: the slowest one's diff),
and ``report_joining_s`` is the report joining their parts, as the audit's report does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

NIGHT = dt.date(2026, 3, 2)
BATCH = 1000  # figure 8's batches (1,000 at 1,000,000 SIMs); 0: automatic, as the DAG's default
POOL_SLOTS = 4  # the pool the automatic size fills


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def generate(folder: Path, sims: int) -> None:
    """
    The fleet file (iccid, asset_name, expected_imei) and the previous night's state under ``folder``, with the
    fingerprint the night before's report leaves beside the state it wrote (see :func:`plan`'s ``trusted``).
    """
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_m2m.fleet_audit.state import mark_written, state_uri
    from airflow_provider_m2m.utils.files import write_csv

    rng = random.Random(sims)
    iccids = [f"89254{n:014d}" for n in rng.sample(range(10**13), sims)]
    imeis = {i: f"35982704{rng.randrange(10**7):07d}" for i in iccids}
    fleet = ({"iccid": i, "asset_name": f"truck-{n}", "expected_imei": imeis[i]} for n, i in enumerate(iccids))
    write_csv(f"{folder.as_uri()}/fleet.csv", ["iccid", "asset_name", "expected_imei"], fleet)
    moved = set(rng.sample(iccids, sims // 10))
    state = ({"iccid": i, "imei": "86205704" + imeis[i][8:] if i in moved else imeis[i], "last_change": _WHEN}
             for i in sorted(iccids))  # fmt: skip
    previous = state_uri(_audit(folder), NIGHT - dt.timedelta(days=1))
    write_csv(previous, ["iccid", "imei", "last_change"], state)
    mark_written(ObjectStoragePath(previous))  # as the night before's report leaves it


_WHEN = "2026-02-01T00:00:00+00:00"


def _audit(folder: Path) -> str:
    from airflow_provider_m2m.fleet_audit.plan import audit_folder

    return audit_folder(folder.as_uri())


def plan(folder: Path, batch_size: int, two_pass: bool = False, trusted: bool = True) -> dict:
    """
    ``plan_batches``' work in this process: the plan, its XCom bytes, the peak RSS growth. ``trusted``: the
    previous state as the audit wrote it (a night like any other); else as if restored by hand, so the plan
    reads it through, row by row.
    """
    from airflow_provider_m2m.fleet_audit.plan import plan_fleet, plan_size
    from airflow_provider_m2m.fleet_audit.state import WRITTEN, state_uri

    fleet_uri, size = f"{folder.as_uri()}/fleet.csv", batch_size or None
    previous = state_uri(_audit(folder), NIGHT - dt.timedelta(days=1)).removeprefix("file://")
    written, hidden = Path(previous + WRITTEN), Path(previous + ".hidden")
    if not trusted:
        written.rename(hidden)
    base = _rss_mb()
    try:
        if two_pass:
            result = _two_pass_plan(fleet_uri, folder.as_uri(), size)
        else:
            result = plan_fleet(fleet_uri, folder.as_uri(), NIGHT, size, pool_slots=POOL_SLOTS)
    finally:
        if not trusted:
            hidden.rename(written)
    growth = _peak_mb() - base
    (folder / "plan.json").write_text(json.dumps(result))
    return {
        "batches": len(result),
        "sims": sum(b["sims"] for b in result),
        "xcom_bytes": plan_size(result),
        "growth_mb": round(growth, 1),
    }


def _two_pass_plan(fleet_uri: str, base_uri: str, batch_size: int | None) -> list[dict]:
    """
    The plan as it was before it read the fleet once, for the side-by-side figure: a count pass for the
    automatic size, then batches cut in the file's order (each sorted in memory), then a k-way merge of the
    batch files for the duplicate check.
    """
    from contextlib import closing
    from itertools import islice

    from airflow_provider_m2m.fleet_audit.plan import audit_folder, batch_uris, night_folder
    from airflow_provider_m2m.fleet_audit.rules import checked_fleet
    from airflow_provider_m2m.fleet_audit.sizing import batch_size_for
    from airflow_provider_m2m.fleet_audit.state import check_previous_state
    from airflow_provider_m2m.utils.files import merged_csv, write_csv
    from airflow_provider_m2m.utils.fleet_file import read_fleet, read_fleet_lines

    if not batch_size:
        with closing(read_fleet(fleet_uri)) as counted:
            batch_size = batch_size_for(sum(1 for _ in counted), POOL_SLOTS)
    folder = night_folder(base_uri, NIGHT)
    check_previous_state(audit_folder(base_uri), NIGHT)
    lines = read_fleet_lines(fleet_uri)
    _, header = next(lines)
    columns = ("iccid", "asset_name", "expected_imei")
    rows = (dict(zip(header, cells, strict=True)) for cells in checked_fleet(lines, header, fleet_uri))
    plan, inputs = [], []
    while batch := list(islice(rows, batch_size)):
        uri = batch_uris(folder, len(plan))["iccids_uri"]
        write_csv(uri, columns, sorted(batch, key=lambda row: row["iccid"]))
        plan.append({"batch": len(plan), "sims": len(batch)})
        inputs.append(uri)
    before = None
    with closing(merged_csv(inputs, f"{folder}/work", columns)) as merged:
        for row in merged:
            assert row["iccid"] != before, f"{before} listed twice"
            before = row["iccid"]
    return plan


def query(folder: Path) -> dict:
    """Stand-in for the mapped queries: each batch's query CSV, written from its input file (not measured)."""
    from airflow_provider_m2m.fleet_audit.plan import batch_uris, night_folder
    from airflow_provider_m2m.fleet_audit.state import QUERY_COLUMNS
    from airflow_provider_m2m.utils.files import read_csv, write_csv

    night = night_folder(folder.as_uri(), NIGHT)
    for batch in json.loads((folder / "plan.json").read_text()):
        uris = batch_uris(night, batch["batch"])
        rows = ({"iccid": r["iccid"], "current_imei": r["expected_imei"], "last_change": _WHEN}
                for r in read_csv(uris["iccids_uri"]))  # fmt: skip
        write_csv(uris["output_uri"], ("iccid", *QUERY_COLUMNS), rows)
    return {}


def part(folder: Path, batch: int) -> dict:
    """A batch's share of the diff (``diff_batch``, as the audit's batch runs it after its queries), timed."""
    import time

    from airflow_provider_m2m.fleet_audit.plan import batch_uris, night_folder
    from airflow_provider_m2m.fleet_audit.state import diff_batch

    uris = batch_uris(night_folder(folder.as_uri(), NIGHT), batch)
    since = dt.datetime.combine(NIGHT, dt.time(), dt.UTC)
    began = time.perf_counter()
    diff_batch(batch=(uris["iccids_uri"], uris["output_uri"]), audit_folder=_audit(folder), night=NIGHT, since=since)
    return {"diff_s": time.perf_counter() - began}


def _parts(folder: str, sims: int, batches: int) -> float:
    """Every batch's share of the diff, all at once (as the pool runs the batches): the slowest one's seconds."""
    cmd = [sys.executable, __file__, "--task", "part", "--folder", folder, "--sims", str(sims)]
    running = [subprocess.Popen([*cmd, "--batch", str(n)], stdout=subprocess.PIPE, text=True) for n in range(batches)]
    return max(json.loads(p.communicate()[0].strip().splitlines()[-1])["diff_s"] for p in running)


def report(folder: Path, merged: bool = False, collecting: bool = False) -> dict:
    """
    ``build_report``'s work in this process: the diff, the report and the state; the peak RSS growth.
    ``merged``: the batches handed over last first, so the report merges them as it did before they were ranges.
    ``collecting``: the cycle collector left running through the diff, as it was before the report paused it.
    """
    from contextlib import nullcontext

    from airflow_provider_m2m.fleet_audit import state
    from airflow_provider_m2m.fleet_audit.plan import batch_uris, night_folder
    from airflow_provider_m2m.fleet_audit.state import audit_night

    if collecting:
        state.paused_cycle_collector = nullcontext  # type: ignore[assignment]  # the comparison's only change

    night = night_folder(folder.as_uri(), NIGHT)
    base = _rss_mb()
    files = [batch_uris(night, b["batch"]) for b in json.loads((folder / "plan.json").read_text())]
    files = files[::-1] if merged else files
    result = audit_night(
        batches=[(f["iccids_uri"], f["output_uri"]) for f in files],
        audit_folder=_audit(folder),
        night=NIGHT,
        since=dt.datetime.combine(NIGHT, dt.time(), dt.UTC),
    )
    growth = _peak_mb() - base
    return {"fleet_size": result["fleet_size"], "changed": result["changed"], "growth_mb": round(growth, 1)}


def _step(task: str, folder: str, sims: int, batch_size: int) -> dict:
    """One step in a fresh process (as a task on a worker); its JSON result."""
    cmd = [sys.executable, __file__, "--task", task, "--folder", folder, "--sims", str(sims)]
    out = subprocess.run([*cmd, "--batch-size", str(batch_size)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed(task: str, folder: str, sims: int, batch_size: int) -> tuple[dict, float]:
    import time

    began = time.perf_counter()
    result = _step(task, folder, sims, batch_size)
    return result, time.perf_counter() - began


def run(sims: int, batch_size: int = BATCH, two_pass: bool = True) -> dict:
    """Generate, plan, query (stand-in) and report, each in its own process; the plan's and report's figures."""
    with tempfile.TemporaryDirectory(prefix="m2m-plan-") as tmp:
        _step("generate", tmp, sims, batch_size)
        old = _timed("plan-two-pass", tmp, sims, batch_size) if two_pass else None
        _, read_through_s = _timed("plan-state-read", tmp, sims, batch_size)
        planned, plan_s = _timed("plan", tmp, sims, batch_size)  # last: the report reads its batch files
        _step("query", tmp, sims, batch_size)
        merged = _timed("report-merged", tmp, sims, batch_size) if two_pass else None
        collecting = _timed("report-collecting", tmp, sims, batch_size) if two_pass else None
        reported, report_s = _timed("report", tmp, sims, batch_size)
        parts_s = _parts(tmp, sims, planned["batches"])  # made after the reports above: they do not use them
        joined, joined_s = _timed("report", tmp, sims, batch_size)
    return {
        "sims": sims,
        "batch_size": batch_size or "automatic",
        "batches": planned["batches"],
        "planned_sims": planned["sims"],
        "xcom_bytes": planned["xcom_bytes"],
        "plan_growth_mb": planned["growth_mb"],
        "plan_s": round(plan_s, 1),
        "plan_state_read_s": round(read_through_s, 1),
        **({"plan_two_pass_s": round(old[1], 1), "plan_two_pass_growth_mb": old[0]["growth_mb"]} if old else {}),
        "report_growth_mb": reported["growth_mb"],
        "report_s": round(report_s, 1),
        "batch_diff_s": round(parts_s, 1),
        "report_joining_s": round(joined_s, 1),
        "report_joined_same_counts": {**joined, "growth_mb": 0} == {**reported, "growth_mb": 0},
        **({"report_merged_s": round(merged[1], 1)} if merged else {}),
        **({"report_collecting_s": round(collecting[1], 1)} if collecting else {}),
        "fleet_size": reported["fleet_size"],
        "changed": reported["changed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, action="append", help="fleet size (repeatable; default 100k and 1M)")
    parser.add_argument("--batch-size", type=int, default=BATCH, help="SIMs per batch (0: automatic)")
    parser.add_argument("--no-two-pass", action="store_true", help="skip the old two-pass plan (side by side)")
    tasks = ["generate", "plan", "plan-state-read", "plan-two-pass", "query", "report", "report-merged"]
    tasks += ["report-collecting", "part"]
    parser.add_argument("--task", choices=tasks, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        if args.task == "generate":
            generate(args.folder, args.sims[0])
            print("{}")
        else:
            step = {"plan": lambda: plan(args.folder, args.batch_size), "query": lambda: query(args.folder)}
            step["plan-two-pass"] = lambda: plan(args.folder, args.batch_size, two_pass=True, trusted=False)
            step["plan-state-read"] = lambda: plan(args.folder, args.batch_size, trusted=False)
            step["report"] = lambda: report(args.folder)
            step["report-merged"] = lambda: report(args.folder, merged=True)
            step["report-collecting"] = lambda: report(args.folder, collecting=True)
            step["part"] = lambda: part(args.folder, args.batch)
            print(json.dumps(step[args.task]()))
        return
    for sims in args.sims or [100_000, 1_000_000]:
        print(json.dumps(run(sims, args.batch_size, two_pass=not args.no_two_pass)), flush=True)


if __name__ == "__main__":
    main()
