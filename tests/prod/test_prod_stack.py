"""
The project's DAGs on a production-shaped Airflow (``stack.py``): PostgreSQL, CeleryExecutor with Redis and two
workers, api-server, scheduler, dag-processor, triggerer, S3 (moto) and the sandbox, every run triggered through
the REST API. Each test prints what it did and what held.

1. the nightly audit of 100,000 SIMs (50 ms a call, a platform limit of 400/s), fleet file and reports on S3;
2. an SMS run to 500 SIMs, the delivery wait deferred to the triggerer;
3. faults of the deployment: a Celery worker SIGKILLed mid-SMS-run and mid-audit, the triggerer restarted during
   the delivery wait; the task state store (the SMS ledger) in PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections import Counter

import pytest
from stack import S3_ROOT, WORKERS

FLEET_DAG, SMS_DAG = "fleet_imei_change_report", "sms_notification_run"
DAY = dt.timedelta(days=1)
PLAN_XCOM_LIMIT = 64 * 1024


def _rows(stack, uri: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(stack.s3.read(uri).decode("utf-8"))))


def _fleet_file(stack, tmp_path, size: int) -> str:
    """The sandbox fleet's first ``size`` SIMs as a fleet file (with ``expected_imei``) on S3; its URI."""
    full = stack.sandbox.fleet.write_csv(tmp_path / "fleet.csv")
    lines = full.read_text().splitlines(keepends=True)[: size + 1]
    part = tmp_path / f"fleet-{size}.csv"
    part.write_text("".join(lines))
    return stack.s3.put(f"fleets/fleet-{size}.csv", part)


def _most_at_once(intervals) -> int:
    """The most intervals ``(start, end)`` open at one moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start: touching intervals do not overlap
        now += step
        most = max(most, now)
    return most


def _span(ti: dict) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.fromisoformat(ti["start_date"]), dt.datetime.fromisoformat(ti["end_date"])


def _night(stack):
    end = stack.sandbox.anchor
    return end - DAY, end


def _audit(stack, tmp_path, size: int, batch_size: int, name: str, logical_offset=dt.timedelta(0)):
    """Trigger the nightly audit of the first ``size`` SIMs like a scheduled run; (run id, conf, interval)."""
    start, end = _night(stack)
    conf = {
        "fleet_uri": _fleet_file(stack, tmp_path, size),
        "batch_size": batch_size,
        "max_workers": 16,
        "report_base_uri": f"{S3_ROOT}/{name}",
    }
    run_id = stack.trigger(FLEET_DAG, conf, logical_date=start + logical_offset, interval=(start, end))
    return run_id, conf, (start, end)


def _check_audit(stack, run_id: str, conf: dict, interval, size: int) -> dict:
    """The report against the sandbox fleet's truth, each SIM once across the batches; the report's XCom."""
    fleet = stack.sandbox.fleet
    sims = fleet.sims[:size]
    ours = {sim.iccid for sim in sims}
    report, _ = stack.xcom(FLEET_DAG, run_id, "build_report")
    assert report["complete"] and report["fleet_size"] == size and report["failed"] == 0, report
    rows = _rows(stack, report["report_csv"])
    changed = {r["iccid"] for r in rows if r["status"] == "changed"}
    # The first audit (no state under this report folder yet) takes the platform's dates: every change at or
    # after the interval start.
    truth = {sim.iccid for sim in fleet.changed_between(interval[0], interval[1] + DAY)} & ours
    assert len(truth) > size // 20 and changed == truth, (len(changed), len(truth))
    unknown = {sim.iccid for sim in sims if sim.last_change is None}
    assert {r["iccid"] for r in rows if r["status"] == "unknown"} == unknown
    mismatches = set(fleet.inventory_mismatches) & ours
    assert {r["iccid"] for r in rows if r["status"] == "inventory_mismatch"} == mismatches

    plan, plan_bytes = stack.xcom(FLEET_DAG, run_id, "plan_batches")
    seen = Counter()
    for batch in plan:
        seen.update(row["iccid"] for row in _rows(stack, batch["output_uri"]))
    assert set(seen) == ours and set(seen.values()) == {1}, "a SIM missing from, or repeated across, the batches"
    print(
        f"  report {report['report_csv']}: {len(changed)} changed = the sandbox's {len(truth)}, "
        f"{len(unknown)} unknown, {len(mismatches)} inventory mismatches, 0 failed; "
        f"{len(plan)} batches hold each of the {size} SIMs exactly once; plan XCom {plan_bytes} bytes"
    )
    return {"plan_bytes": plan_bytes, "batches": len(plan)}


@pytest.mark.timeout(1200)
def test_nightly_audit_of_100k_sims_on_celery_and_s3(stack, tmp_path):
    size, batch_size = 100_000, 5_000
    before = stack.sandbox.stats()
    began = time.monotonic()
    run_id, conf, interval = _audit(stack, tmp_path, size, batch_size, "nightly")
    state = stack.wait_for_run(FLEET_DAG, run_id, timeout=1000)
    wall = time.monotonic() - began
    assert state == "success", stack.task_instances(FLEET_DAG, run_id)
    print(
        f"\naudit of {size} SIMs, batches of {batch_size}, triggered through POST dagRuns for {interval[0]:%Y-%m-%d}:"
    )
    checked = _check_audit(stack, run_id, conf, interval, size)
    assert checked["plan_bytes"] < PLAN_XCOM_LIMIT, f"plan XCom {checked['plan_bytes']} bytes"

    batches = stack.task_instances(FLEET_DAG, run_id, "query_imeis")
    assert len(batches) == checked["batches"] and {ti["state"] for ti in batches} == {"success"}
    hosts = Counter(ti["hostname"] for ti in batches)
    assert set(hosts) == set(WORKERS), f"batches by worker: {hosts}"
    assert {ti["pool"] for ti in batches} == {"m2m_platform"}
    most = _most_at_once(_span(ti) for ti in batches)
    assert most <= stack.pool_slots, f"{most} batches ran at once on a pool of {stack.pool_slots}"
    stats = stack.sandbox.stats()
    calls = stats["by_command"].get("query_imei", 0) - before["by_command"].get("query_imei", 0)
    limited = stats["rate_limited"] - before["rate_limited"]
    floor = size / stack.sandbox_options["rate_limit"]
    print(
        f"  batches by worker {dict(hosts)}; at most {most} at once (pool of {stack.pool_slots} slots); "
        f"{calls} query_imei calls, {limited} answered 429; trigger to report {wall:.0f} s, "
        f"platform floor {floor:.0f} s: {floor / wall:.2f} of the limit"
    )
