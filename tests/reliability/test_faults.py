"""Suite 1, faults: a 2,000-SIM audit with ~10 % faulty answers loses nothing and duplicates nothing."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from conftest import ANCHOR, M2M_PASSWORD

from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.sandbox import Fleet, Sandbox
from airflow_provider_m2m.utils.transport import RetryPolicy

FLEET = 2000
UNKNOWN = [f"89000000000000{i:05d}" for i in range(20)]  # valid syntax, not in the fleet: "invalid iccid"
# Fault kind -> share of requests. The sandbox tries the faults in order, each with its own probability,
# and the first that hits answers: the total is 1 - prod(1 - rate), about 10 %.
MIX = {
    "503": 0.025,
    "drop": 0.02,
    "malformed": 0.015,
    "slow": 0.01,  # 2 s, past the connection's 1 s timeout
    "html": 0.01,
    "empty": 0.005,
    "502": 0.005,
    "504": 0.005,
    "drop_after": 0.005,
    "429": 0.002,  # Retry-After 1 s pauses the whole batch: a small share
}


@pytest.fixture(scope="module")
def faulty():
    with Sandbox.spawn(fleet=FLEET, anchor=ANCHOR, seed=7, m2m_password=M2M_PASSWORD) as sb:
        yield sb


def test_audit_under_faults(faulty, monkeypatch):
    conn = json.loads(faulty.conn_env(timeout=1)["AIRFLOW_CONN_M2M_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_FAULTY_M2M", json.dumps(conn))
    for kind, rate in MIX.items():
        faulty.inject(kind, rate=rate, platform="m2m", retry_after=1 if kind == "429" else None, slow_seconds=2)
    truth = Fleet(FLEET, seed=7, anchor=ANCHOR)
    iccids = truth.iccids + UNKNOWN
    hook = M2mHook("faulty_m2m", retry_policy=RetryPolicy(base_delay=0.01, max_delay=1, max_elapsed=30))

    started = time.monotonic()
    records = list(hook.query_imeis(iccids, max_workers=32))
    elapsed = time.monotonic() - started
    stats = faulty.stats()
    faulty.clear_faults()

    seen = Counter(r.iccid for r in records)
    assert seen == Counter(iccids), "every input ICCID exactly once"
    ok = [r for r in records if not r.error]
    errors = [r for r in records if r.error]
    for record in ok:
        sim = truth.by_iccid[record.iccid]
        assert record.current_imei == sim.normalized_imei, record
        assert record.last_change == sim.last_change, record
        assert record.previous_imei == sim.previous_imei, record
        assert record.error is None
    assert all(r.current_imei is None and r.last_change is None for r in errors)
    unknown_errors = {r.iccid for r in errors if "invalid iccid" in r.error}
    assert unknown_errors == set(UNKNOWN)
    other_errors = [r for r in errors if r.iccid not in unknown_errors]
    assert len(other_errors) <= 5, [r.error for r in other_errors]  # 5 attempts each: ~1e-5 per SIM
    queried = stats["imei_queries_per_iccid"]
    assert {r.iccid for r in ok} <= set(queried), "every record came from the platform"

    def kind_of(error: str) -> str:
        return "invalid iccid" if "invalid iccid" in error else error.split(":")[-1].strip()[:40]

    sent = stats["requests"]
    faults = stats["faults"]
    print(
        f"\n[faults] audit of {len(iccids)} SIMs ({FLEET} in the fleet + {len(UNKNOWN)} unknown) in {elapsed:.1f}s: "
        f"{len(ok)} records ok (all equal to the fleet's truth), {len(errors)} errors "
        f"{dict(Counter(kind_of(r.error) for r in errors))}; every ICCID exactly once"
    )
    print(
        f"[faults] sandbox: {sent} requests for {len(iccids)} SIMs, {sum(faults.values())} faults injected "
        f"({sum(faults.values()) / sent:.1%}) by kind {dict(sorted(faults.items()))}; "
        f"SIMs queried more than once: {sum(1 for n in queried.values() if n > 1)}"
    )


# Faults an SMS send meets: refusals the hook retries (503, 429), a connection dropped before the platform
# acted (retried: it provably did not act), and answers lost after it acted (dropped, or slower than the
# 1 s timeout): those come back `unknown` and the task's retry settles them from the SMS history.
SMS_MIX = {"503": 0.03, "429": 0.002, "drop": 0.02, "drop_after": 0.025, "slow": 0.025}

SMS_DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_m2m.operators.m2m import SendSmsOperator

with DAG("sms_under_faults", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):
    SendSmsOperator(task_id="send", iccids={iccids!r}, message_text="Firmware update tonight", m2m_conn_id="faulty_m2m",
                    max_workers=16, retries=6, retry_delay=dt.timedelta(seconds=3))
"""
# A retry must come after the platform has finished what it was doing: a "slow" answer is carried out 2 s
# after it arrived, 1 s after the client gave up on it. A retry that looked the SIM up before that could not
# see the message and would send it again, so the retry waits longer than that (as any real retry_delay does).


def test_sms_under_faults_one_message_per_sim(faulty, dags_folder, monkeypatch):
    from conftest import load_dag

    faulty.reset()
    conn = json.loads(faulty.conn_env(timeout=1)["AIRFLOW_CONN_M2M_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_FAULTY_M2M", json.dumps(conn))
    for kind, rate in SMS_MIX.items():
        faulty.inject(kind, rate=rate, platform="m2m", retry_after=1 if kind == "429" else None, slow_seconds=2)
    iccids = Fleet(FLEET, seed=7, anchor=ANCHOR).iccids
    dag = load_dag(dags_folder, SMS_DAG.format(iccids=iccids), "sms_under_faults")

    started = time.monotonic()
    dr = dag.test()
    elapsed = time.monotonic() - started
    stats = faulty.stats()
    faulty.clear_faults()

    (ti,) = dr.get_task_instances()
    assert dr.state == "success", ti.state
    assert ti.try_number >= 2  # the first try ended with unknown outcomes, which a retry settled
    assert stats["sms_per_iccid"] == dict.fromkeys(iccids, 1), "every SIM exactly one message, none twice"
    rows = ti.xcom_pull(task_ids="send")
    assert [r["iccid"] for r in rows] == iccids and {r["outcome"] for r in rows} == {"success"}  # nothing lost
    faults = stats["faults"]
    acted_unanswered = faults.get("drop_after", 0) + faults.get("slow", 0)
    assert acted_unanswered > 0
    lookups = stats["by_command"].get("query_sms_mt_details", 0)
    assert lookups >= 1  # the unknown ones were looked up before anything was resent
    sends = stats["by_command"]["send_sms"]
    print(
        f"\n[faults] SMS to {len(iccids)} SIMs, 16 in flight, {sum(faults.values())} faults injected "
        f"({sum(faults.values()) / stats['requests']:.1%} of {stats['requests']} requests) by kind "
        f"{dict(sorted(faults.items()))}: {ti.try_number} tries in {elapsed:.1f}s, {sends} send_sms requests, "
        f"{lookups} history lookups; every SIM exactly one message"
    )
