"""
The project's DAGs on a production-shaped Airflow (``stack.py``): PostgreSQL, CeleryExecutor with Redis and two
workers, api-server, scheduler, dag-processor, triggerer, S3 (moto) and the sandbox, every run triggered through
the REST API. Each test prints what it did and what held.

1. the nightly audit of 100,000 SIMs (50 ms a call, a platform limit of 400/s), fleet file and reports on S3;
2. an SMS run to 500 SIMs, the delivery wait deferred to the triggerer;
3. faults of the deployment: a Celery worker SIGKILLed mid-SMS-run and mid-audit (the audit's batches resume from
   the parts they flushed to S3), the triggerer restarted during the delivery wait; the task state store (the SMS
   ledger) in PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import time
from collections import Counter

import pytest
from stack import BUCKET, S3_ROOT, WORKERS

from airflow_provider_m2m.fleet_audit.plan import batch_uris, night_folder
from airflow_provider_m2m.utils.batch_progress import PART_ROWS

FLEET_DAG, SMS_DAG = "fleet_imei_change_report", "sms_notification_run"
# The SMS DAG is one SmsRun task group, "notify": its tasks' ids.
SEND, WAIT, SMS_REPORT = "notify.send_sms", "notify.wait_for_delivery", "notify.write_report"
# The fleet DAG's audit task group: its tasks are "imei_audit.plan_batches", "imei_audit.query_imeis"...
PLAN, QUERY, REPORT = "imei_audit.plan_batches", "imei_audit.query_imeis", "imei_audit.build_report"
BATCHES_AT_ONCE = 4  # the fleet DAG's pool_slots default: the audit's own cap on its batches, no pool needed
DAY = dt.timedelta(days=1)
PLAN_XCOM_LIMIT = 64 * 1024
SMS_DELIVERY_DELAY = 2.0  # the sandbox's default: seconds until a message settles


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
    report, _ = stack.xcom(FLEET_DAG, run_id, REPORT)
    assert report["complete"] and report["fleet_size"] == size and report["failed"] == 0, report
    rows = _rows(stack, report["report_csv"])
    changed = {r["iccid"] for r in rows if r["status"] == "changed"}
    # The first audit (no state under this report folder yet) takes the platform's dates: every change from the
    # interval start to the night's cutoff (its end; a change at or after it belongs to the next night).
    truth = {sim.iccid for sim in fleet.changed_between(interval[0], interval[1])} & ours
    assert len(truth) > size // 20 and changed == truth, (len(changed), len(truth))
    unknown = {sim.iccid for sim in sims if sim.last_change is None}
    assert {r["iccid"] for r in rows if r["status"] == "unknown"} == unknown
    # Not in the device the fleet file expects, at the night's cutoff (a SIM that moved at or after it was then in
    # its previous device: the sandbox's SIM that moved at exactly the cutoff, besides the inventory's own 5).
    at_cutoff = {sim.iccid: sim.previous_imei if sim.last_change and sim.last_change >= interval[1]
                 else sim.normalized_imei for sim in sims}  # fmt: skip
    expected = {sim.iccid: fleet.expected_imei(sim.iccid) for sim in sims}
    mismatches = {i for i, device in at_cutoff.items() if device and expected[i] and device != expected[i]}
    assert set(fleet.inventory_mismatches) & ours <= mismatches
    assert {r["iccid"] for r in rows if r["status"] == "inventory_mismatch"} == mismatches

    plan, plan_bytes = stack.xcom(FLEET_DAG, run_id, PLAN)
    folder = night_folder(conf["report_base_uri"], interval[0].date())
    seen = Counter()
    for batch in plan:
        seen.update(row["iccid"] for row in _rows(stack, batch_uris(folder, batch["batch"])["output_uri"]))
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

    batches = stack.task_instances(FLEET_DAG, run_id, QUERY)
    assert len(batches) == checked["batches"] and {ti["state"] for ti in batches} == {"success"}
    hosts = Counter(ti["hostname"] for ti in batches)
    assert set(hosts) == set(WORKERS), f"batches by worker: {hosts}"
    assert {ti["pool"] for ti in batches} == {"default_pool"}  # no pool to create: the audit caps itself
    most = _most_at_once([_span(ti) for ti in batches])
    assert most <= BATCHES_AT_ONCE, f"{most} batches ran at once; the audit's cap is {BATCHES_AT_ONCE}"
    stats = stack.sandbox.stats()
    calls = stats["by_command"].get("query_imei", 0) - before["by_command"].get("query_imei", 0)
    limited = stats["rate_limited"] - before["rate_limited"]
    floor = size / stack.sandbox_options["rate_limit"]
    print(
        f"  batches by worker {dict(hosts)}; at most {most} at once (the audit's cap: {BATCHES_AT_ONCE}); "
        f"{calls} query_imei calls, {limited} answered 429; trigger to report {wall:.0f} s, "
        f"platform floor {floor:.0f} s: {floor / wall:.2f} of the limit"
    )
    assert checked["plan_bytes"] < PLAN_XCOM_LIMIT, f"plan XCom {checked['plan_bytes']} bytes, over 64 KB"


# ------------------------------------------------------------------------------------------------ SMS runs
def _sims_for_sms(stack, first: int, count: int) -> list[str]:
    """``count`` SIMs from fleet index ``first`` on whose messages settle (delivered or failed, never pending)."""
    fleet = stack.sandbox.fleet
    return [sim.iccid for sim in fleet.sims[first:] if fleet.sms_fate(sim.iccid) != "pending"][:count]


def _sms_run(stack, iccids: list[str], text: str, batch_size: int = 250, wait_minutes: int = 10) -> str:
    conf = {
        "iccids": iccids,
        "message_text": text,
        "dry_run": False,
        "delivery_wait_minutes": wait_minutes,
        "batch_size": batch_size,
        "report_base_uri": f"{S3_ROOT}/sms",
    }
    return stack.trigger(SMS_DAG, conf, logical_date=dt.datetime.now(dt.UTC))


def _wait_watching(stack, run_id: str, task_id: str, timeout: float) -> tuple[str, set[str]]:
    """Wait for the SMS run to finish; its state and every state ``task_id`` was seen in meanwhile."""
    seen: set[str] = set()

    def finished():
        seen.update(ti["state"] for ti in stack.task_instances(SMS_DAG, run_id, task_id) if ti["state"])
        return (state := stack.run_state(SMS_DAG, run_id)) in ("success", "failed") and state

    return stack.airflow.wait_until(finished, timeout, f"SMS run {run_id}", interval=1), seen


def _check_sms_run(stack, run_id: str, iccids: list[str], before: dict) -> dict:
    """One message per SIM (the sandbox's counts), and a delivery report with every SIM's final state."""
    fleet = stack.sandbox.fleet
    sent = stack.sandbox.stats()["sms_per_iccid"]
    delta = {i: n - before.get(i, 0) for i, n in sent.items() if n != before.get(i, 0)}
    assert delta == dict.fromkeys(iccids, 1), f"messages per SIM: {Counter(delta.values())}, {len(delta)} SIMs"
    result, _ = stack.xcom(SMS_DAG, run_id, SMS_REPORT)
    rows = _rows(stack, result["report_csv"])
    assert [r["iccid"] for r in rows] == iccids
    assert {r["outcome"] for r in rows} == {"success"} and all(r["sms_uid"] for r in rows)
    assert [r["delivery"] for r in rows] == [fleet.sms_fate(i) for i in iccids]
    assert all(bool(r["delivered_at"]) == (r["delivery"] == "delivered") for r in rows)
    return dict(Counter(r["delivery"] for r in rows))


@pytest.mark.timeout(600)
def test_sms_run_waits_for_delivery_in_the_triggerer(stack):
    iccids = _sims_for_sms(stack, 1_000, 500)
    before = stack.sandbox.stats()["sms_per_iccid"]
    # Messages that settle 25 s after they are sent: the wait's first poke finds them pending, so it defers.
    stack.sandbox.configure(sms_delivery_delay=25)
    try:
        run_id = _sms_run(stack, iccids, "Prod stack: service notice.")
        state, seen = _wait_watching(stack, run_id, WAIT, timeout=500)
    finally:
        stack.sandbox.configure(sms_delivery_delay=SMS_DELIVERY_DELAY)
    assert state == "success", stack.task_instances(SMS_DAG, run_id)
    assert "deferred" in seen, f"the delivery wait was never deferred: {seen}"
    (wait,) = stack.task_instances(SMS_DAG, run_id, WAIT)
    assert wait["state"] == "success"
    # The triggerer writes what a trigger logs beside the task's log, as ``attempt=N.log.trigger.<triggerer>.log``.
    folder = stack.airflow.home / "logs" / f"dag_id={SMS_DAG}" / f"run_id={run_id}" / f"task_id={WAIT}"
    trigger_log = "".join(path.read_text("utf-8", "replace") for path in folder.rglob("*.log.trigger.*.log"))
    assert "airflow_provider_m2m.triggers.m2m.SmsDeliveryTrigger" in trigger_log, "the triggerer logged no poll"
    delivery = _check_sms_run(stack, run_id, iccids, before)
    hosts = Counter(ti["hostname"] for ti in stack.task_instances(SMS_DAG, run_id, SEND))
    print(
        f"\nSMS run to {len(iccids)} SIMs in {sum(hosts.values())} batches (by worker {dict(hosts)}): one message "
        f"per SIM (the sandbox's counts); the wait was deferred ({sorted(seen)}) and the triggerer polled "
        f"for it; report complete, delivery {delivery} = each SIM's fate"
    )


# ------------------------------------------------------------------------------------------------ faults
def _running(stack, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    return [ti for ti in stack.task_instances(dag_id, run_id, task_id) if ti["state"] == "running"]


@pytest.mark.timeout(600)
def test_worker_killed_mid_sms_run_sends_no_sim_twice(stack):
    iccids = _sims_for_sms(stack, 5_000, 500)
    before = stack.sandbox.stats()["sms_per_iccid"]
    stack.sandbox.configure(latency=1.0)  # 500 sends at 16 in flight: about 30 s, time to kill the worker mid-way
    try:
        run_id = _sms_run(stack, iccids, "Prod stack: worker killed mid-run.", batch_size=500)

        def sending():
            sent = sum(n - before.get(i, 0) for i, n in stack.sandbox.stats()["sms_per_iccid"].items())
            running = _running(stack, SMS_DAG, run_id, SEND)
            return 100 <= sent < 400 and running and (running[0]["hostname"], sent)

        victim, sent_then = stack.airflow.wait_until(sending, 300, "the SMS batch to be half sent", interval=0.5)
        stack.kill_worker(victim)
    finally:
        stack.sandbox.configure(latency=stack.sandbox_options["latency"])
    try:
        state = stack.wait_for_run(SMS_DAG, run_id, timeout=500)
    finally:
        stack.restart(victim)
    assert state == "success", stack.task_instances(SMS_DAG, run_id)
    tries = sorted(stack.tries(SMS_DAG, run_id, SEND), key=lambda ti: ti["try_number"])
    assert [ti["hostname"] for ti in tries][0] == victim and tries[-1]["hostname"] != victim, tries
    assert tries[-1]["state"] == "success" and tries[-1]["try_number"] >= 2
    _check_sms_run(stack, run_id, iccids, before)

    # The ledger the retry read is the task state store, in PostgreSQL.
    rows = stack.postgres.query(
        "SELECT key, value FROM task_state_store WHERE dag_id = %s AND run_id = %s AND task_id = %s",
        (SMS_DAG, run_id, SEND),
    )
    ledger = {}
    for key, value in rows:
        assert key.startswith("sms:"), key
        ledger.update(json.loads(value) if isinstance(value, str) else value)
    assert set(ledger) == set(iccids) and set(ledger.values()) == {"sent"}, Counter(ledger.values())
    print(
        f"\nSMS run to {len(iccids)} SIMs: worker {victim} SIGKILLed after {sent_then} messages; the retry "
        f"(try {tries[-1]['try_number']}) ran on {tries[-1]['hostname']} and sent each SIM exactly one message; "
        f"the ledger is {len(rows)} rows of PostgreSQL's task_state_store, every SIM 'sent'"
    )


def _parts(stack, output_uri: str) -> dict[str, list[str]]:
    """The whole parts a query batch flushed beside its ``output_uri`` on S3 (key -> ICCIDs); half-written ones not."""
    prefix = f"{output_uri}.parts/".removeprefix(f"{S3_ROOT}/")
    listed = stack.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    keys = [o["Key"] for o in listed if re.fullmatch(r"part-\d+-\d+\.csv", o["Key"].rsplit("/", 1)[-1])]
    return {key: [r["iccid"] for r in _rows(stack, f"{S3_ROOT}/{key}")] for key in keys}


@pytest.mark.timeout(900)
def test_worker_killed_mid_audit_resumes_the_batch_and_the_report_is_exact(stack, tmp_path):
    """
    A worker SIGKILLed once its batches flushed their first parts: each retried batch queries only the SIMs its
    parts lack (the sandbox's per-ICCID counters), the SIMs asked twice stay within what was not yet flushed
    or in flight at the kill, and the report is exact.
    """
    size, batch_size, workers = 10_000, 2_500, 16  # one wave of 4 batches of 25 s at 100/s each
    before = stack.sandbox.stats()["imei_queries_per_iccid"]
    run_id, conf, interval = _audit(stack, tmp_path, size, batch_size, "killed-worker", dt.timedelta(hours=1))
    folder = night_folder(conf["report_base_uri"], interval[0].date())

    def flushed_on_a_worker():
        running = _running(stack, FLEET_DAG, run_id, QUERY)
        for ti in running:
            if _parts(stack, batch_uris(folder, ti["map_index"])["output_uri"]):
                host = ti["hostname"]
                return host, sorted(t["map_index"] for t in running if t["hostname"] == host)
        return None

    victim, killed = stack.airflow.wait_until(flushed_on_a_worker, 300, "a batch's first part", interval=0.3)
    stack.kill_worker(victim)
    at_kill = stack.sandbox.stats()["imei_queries_per_iccid"]
    parts = {n: _parts(stack, batch_uris(folder, n)["output_uri"]) for n in killed}  # the worker is dead: final
    kept = {n: {iccid for part in parts[n].values() for iccid in part} for n in killed}
    try:
        state = stack.wait_for_run(FLEET_DAG, run_id, timeout=700)
    finally:
        stack.restart(victim)
    assert state == "success", stack.task_instances(FLEET_DAG, run_id)
    retried = [ti for ti in stack.task_instances(FLEET_DAG, run_id, QUERY) if ti["try_number"] > 1]
    assert sorted(ti["map_index"] for ti in retried) == killed and all(ti["hostname"] != victim for ti in retried)
    print(f"\naudit of {size} SIMs: worker {victim} SIGKILLed mid-batch; batches {killed} retried elsewhere")

    window = PART_ROWS + workers  # answers not yet in a whole part, plus the calls in flight
    after = stack.sandbox.stats()["imei_queries_per_iccid"]  # once: every SIM of the session is in it
    for n in killed:
        sims = [r["iccid"] for r in _rows(stack, batch_uris(folder, n)["iccids_uri"])]
        first = sum(at_kill.get(i, 0) - before.get(i, 0) for i in sims)
        total = sum(after.get(i, 0) - before.get(i, 0) for i in sims)
        left = len(sims) - len(kept[n])
        # The retry asked the SIMs no part held (plus calls of the killed try still in flight at the snapshot);
        # first try + retry = the batch's SIMs within the window of what was not yet flushed at the kill.
        assert left <= total - first <= left + workers, (n, first, total, len(kept[n]))
        assert len(sims) <= total <= len(sims) + window and first - len(kept[n]) <= window, (n, first, total)
        print(
            f"  batch {n}: {first} queries before the kill, {len(kept[n])} answers in whole parts; the retry "
            f"asked {total - first} = the {left} left (+{total - first - left} in flight); "
            f"{total - len(sims)} of {len(sims)} SIMs asked twice (window {window})"
        )
    _check_audit(stack, run_id, conf, interval, size)
    tries = stack.tries(FLEET_DAG, run_id, QUERY)
    first_hosts = {t["map_index"]: t["hostname"] for t in tries if t["try_number"] == 1}
    assert {first_hosts[ti["map_index"]] for ti in retried} == {victim}, first_hosts
    assert not any(_parts(stack, batch_uris(folder, n)["output_uri"]) for n in killed)  # removed once written


@pytest.mark.timeout(600)
def test_triggerer_restarted_during_the_delivery_wait(stack):
    iccids = _sims_for_sms(stack, 10_000, 300)
    before = stack.sandbox.stats()["sms_per_iccid"]
    stack.sandbox.configure(sms_delivery_delay=45)  # the messages settle 45 s after they are sent
    try:
        run_id = _sms_run(stack, iccids, "Prod stack: triggerer restarted.", batch_size=300)
        deferred = lambda: [ti for ti in stack.task_instances(SMS_DAG, run_id, WAIT)  # noqa: E731
                            if ti["state"] == "deferred"]  # fmt: skip
        stack.airflow.wait_until(deferred, 300, "the delivery wait to be deferred", interval=1)
    finally:
        stack.sandbox.configure(sms_delivery_delay=SMS_DELIVERY_DELAY)
    stack.restart("triggerer")  # SIGKILL, then a new triggerer: the trigger is picked up again
    state = stack.wait_for_run(SMS_DAG, run_id, timeout=500)
    assert state == "success", stack.task_instances(SMS_DAG, run_id)
    (wait,) = stack.task_instances(SMS_DAG, run_id, WAIT)
    assert wait["state"] == "success"
    delivery = _check_sms_run(stack, run_id, iccids, before)
    print(
        f"\nSMS run to {len(iccids)} SIMs, messages settling after 45 s: the triggerer SIGKILLed and restarted "
        f"while the wait was deferred; the wait finished, delivery {delivery}, nothing lost"
    )
