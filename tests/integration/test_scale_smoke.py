"""
Fast smoke checks of the batch path's scale properties over real HTTP (``benchmarks/run_all.py`` measures them).

Bounded concurrency, streaming (nothing is sent far ahead of the consumer; closing the iterator stops the
batch) and the client-side rate limit.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time

from airflow_provider_m2m.hooks.m2m import M2mHook


def test_batch_keeps_the_concurrency_bound(sb):
    sb.configure(latency=0.02)
    iccids = sb.fleet.iccids[:300]
    hook = M2mHook()
    records = list(hook.query_imeis(iccids, max_workers=8))
    stats = sb.stats()
    assert sorted(r.iccid for r in records) == sorted(iccids)
    assert all(r.error is None for r in records)
    assert stats["requests"] == 300
    assert 2 <= stats["max_in_flight"] <= 8


def test_batch_streams_and_stops_when_closed(sb):
    sb.configure(latency=0.02)
    iccids = (sb.fleet.iccids * 2)[:2000]
    records = M2mHook().query_imeis(iccids, max_workers=16)
    first = next(records)
    assert first.iccid in iccids
    sent = sb.stats()["requests"]
    assert sent < 200, f"{sent} requests sent before the first record was consumed: the batch does not stream"
    records.close()  # cancels what is in flight and closes the session
    time.sleep(0.3)  # requests already on the wire may still arrive
    settled = sb.stats()["requests"]
    assert settled <= sent + 16
    time.sleep(0.5)
    assert sb.stats()["requests"] == settled, "requests kept arriving after the iterator was closed"


def test_rate_limiter_keeps_under_the_platform_limit(sb, monkeypatch):
    sb.configure(rate_limit=100)  # the platform: 100 requests/s, a burst of 10, then 429 with Retry-After
    conn = json.loads(sb.conn_env()["AIRFLOW_CONN_M2M_DEFAULT"])
    conn["extra"]["max_requests_per_second"] = 95  # a little below the platform's limit: arrivals jitter
    monkeypatch.setenv("AIRFLOW_CONN_M2M_DEFAULT", json.dumps(conn))
    iccids = sb.fleet.iccids[:200]
    started = time.monotonic()
    records = list(M2mHook().query_imeis(iccids, max_workers=16))
    elapsed = time.monotonic() - started
    stats = sb.stats()
    assert stats["rate_limited"] == 0
    assert sorted(r.iccid for r in records) == sorted(iccids)
    assert all(r.error is None for r in records)
    assert elapsed >= 199 / 95 * 0.95  # the limit was applied, not just lucky timing


def test_a_batch_logs_what_the_limit_cost_it(sb, monkeypatch, caplog, capsys):
    """The batch's last log line says where its time at the limit went: here one 429, one pause of its Retry-After."""
    conn = json.loads(sb.conn_env()["AIRFLOW_CONN_M2M_DEFAULT"])
    conn["extra"]["max_requests_per_second"] = 100
    monkeypatch.setenv("AIRFLOW_CONN_M2M_DEFAULT", json.dumps(conn))
    sb.inject("429", count=1, retry_after=1)
    caplog.set_level(logging.INFO)
    hook = M2mHook()
    records = list(hook.query_imeis(sb.fleet.iccids[:20], max_workers=4))
    assert all(r.error is None for r in records) and sb.stats()["by_status"][429] == 1
    list(hook.query_imeis(sb.fleet.iccids[20:30], max_workers=4))  # the same hook's next batch: its own share
    logged = caplog.text + capsys.readouterr().out  # Airflow's logging goes to either, by version
    # How many calls woke late depends on this machine's load; the pause does not.
    line = r"The batch was paced at 100/s; late wakes .*: \d+; pauses for a 429: (\d+) \(([\d.]+) s\)"
    assert re.findall(line, logged) == [("1", "1.0"), ("0", "0.0")], logged[-2000:]


def test_batches_at_once_each_paced_at_its_share_stay_within_the_platform_limit(monkeypatch):
    """
    The fleet DAG's pool runs ``slots`` batches at once, each task paced at the platform's limit / slots (the
    README's sizing rule 2): together they send at the limit itself, evenly spaced, and the platform's burst
    allowance absorbs the jitter of arrivals, so every SIM is answered exactly once with few 429s.
    """
    from airflow_provider_m2m.sandbox import Sandbox

    limit, slots, per_batch = 200, 4, 150
    with Sandbox.spawn(fleet=slots * per_batch, latency=0.02, rate_limit=limit) as sb:
        conn = json.loads(sb.conn_env()["AIRFLOW_CONN_M2M_DEFAULT"])
        conn["extra"]["max_requests_per_second"] = limit / slots
        monkeypatch.setenv("AIRFLOW_CONN_M2M_DEFAULT", json.dumps(conn))
        batches = [sb.fleet.iccids[n * per_batch : (n + 1) * per_batch] for n in range(slots)]
        answered: list[list[str]] = [[] for _ in batches]

        def run(n: int) -> None:  # one batch task: its own hook, session and rate limiter
            answered[n] = [r.iccid for r in M2mHook().query_imeis(batches[n], max_workers=8) if r.error is None]

        time.sleep(0.5)  # the platform's bucket full after start-up
        started = time.monotonic()
        threads = [threading.Thread(target=run, args=(n,)) for n in range(slots)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        stats = sb.stats()
    sent = slots * per_batch
    print(f"{slots} batches at {limit / slots:.0f}/s each: {sent / elapsed:.0f}/s against a limit of {limit}/s, "
          f"{stats['rate_limited']} x 429")  # fmt: skip
    assert [sorted(a) for a in answered] == [sorted(b) for b in batches]  # none lost, none twice
    # the platform answered each SIM once (a 429 is refused before the query, then asked again)
    assert stats["imei_queries_per_iccid"] == dict.fromkeys(sb.fleet.iccids, 1)
    assert stats["rate_limited"] <= 3
    assert elapsed >= (sent - 20) / limit * 0.95  # paced, not just lucky timing (20: the platform's burst)
