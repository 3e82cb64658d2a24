"""
Suite 2, crash-resume: a worker SIGKILLed part-way, then retried by Airflow, sends no SMS twice, and a query
batch resumes from the answers it flushed instead of asking every SIM again, its report exact.

The DAG runs in a subprocess with ``dag.test(use_executor=True)``: the LocalExecutor forks a supervisor
per task, which forks the task process; Airflow 3.3's execution API (which also serves the task state
store the SMS ledger uses) runs in a thread of that subprocess, as ``airflow api-server`` would. The test
process hosts the sandbox, watches its counters and SIGKILLs the task process (its pid comes from an
``on_execute_callback``). The supervisor sees the kill, marks the try ``up_for_retry`` and Airflow runs
try 2 in a fresh process.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from conftest import ROOT

from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.sms.sending import window_size
from airflow_provider_m2m.utils.version_compat import HAS_TASK_STATE_STORE

pytestmark = pytest.mark.airflow

SMS_SIMS, SMS_KILL_AT = 800, 400  # 16 in flight: ledger windows of 256, the kill lands in the second
NO_STORE_SIMS, NO_STORE_KILL_AT = 200, 60
AUDIT_SIMS, AUDIT_KILL_AT = 400, 150
AUDIT_WORKERS, AUDIT_PART_ROWS = 2, 25  # parts of 25 answers: several are flushed before the kill

DAG_SOURCE = """
import datetime as dt
import os
from airflow.sdk import DAG
from airflow_provider_m2m.operators.m2m import QueryImeiOperator, SendSmsOperator
from airflow_provider_m2m.utils import batch_progress

# Parsed again in each task process: the audit flushes its answers in small parts, by count only.
batch_progress.PART_ROWS, batch_progress.PART_SECONDS = {part_rows!r}, 3600.0


def record_pid(context):
    ti = context["ti"]
    with open({pidfile!r}, "a") as f:
        f.write(f"{{ti.task_id}} {{ti.try_number}} {{os.getpid()}}\\n")


class NoStoreSendSmsOperator(SendSmsOperator):
    # What the operator sees on Airflow 3.1 / 3.2: a context without a task state store.
    def execute(self, context):
        return super().execute({{k: v for k, v in context.items() if k != "task_state_store"}})


common = dict(retries=1, retry_delay=dt.timedelta(0), on_execute_callback=record_pid)
sms = NoStoreSendSmsOperator if {no_store!r} else SendSmsOperator
with DAG("crash_resume", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    sms(task_id="sms", iccids={sms_iccids!r}, message_text="Service window tonight 22:00-23:00", max_workers=16,
        **common)
    if {audit_iccids!r}:
        QueryImeiOperator(task_id="audit", iccids={audit_iccids!r}, output_uri={uri!r}, max_workers={workers!r},
                          **common)
"""

DRIVER = """
import json, os, sys, threading, time
import uvicorn
from airflow.api_fastapi.app import create_app

server = uvicorn.Server(uvicorn.Config(create_app(apps="execution"), host="127.0.0.1", port=int(sys.argv[2]),
                                       log_level="warning"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
from airflow_provider_m2m.sandbox.airflow_home import dag_bag

dag = dag_bag(sys.argv[1]).get_dag("crash_resume")
dr = dag.test(use_executor=True)
tis = {ti.task_id: [ti.state, ti.try_number] for ti in dr.get_task_instances()}
print("RESULT " + json.dumps({"state": dr.state, "tis": tis, "run_id": dr.run_id}), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_killed(sb, dags_folder, tmp_path, targets: dict[str, tuple[str, int]], **dag_args):
    """
    Run the DAG under LocalExecutor in a subprocess, SIGKILL each target task's first try once the sandbox
    has counted ``at`` requests of its command, and return (result, killed, elapsed, driver output).
    """
    pidfile = tmp_path / "pids"
    dag_file = dags_folder / "crash_resume.py"
    dag_file.write_text(
        DAG_SOURCE.format(pidfile=str(pidfile), part_rows=AUDIT_PART_ROWS, workers=AUDIT_WORKERS, **dag_args)
    )
    (tmp_path / "driver.py").write_text(DRIVER)
    sb.configure(latency=0.01)  # so the watcher can catch the tasks part-way
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": "reliability-suite-jwt-secret-0123456789",
        "PYTHONPATH": str(ROOT),
    }
    killed: dict[str, tuple[int, int]] = {}  # task -> (pid, counter when killed)

    def watch(stop: threading.Event) -> None:
        while not stop.is_set() and len(killed) < len(targets):
            pids = {}
            if pidfile.exists():
                for line in pidfile.read_text().splitlines():
                    task, try_number, pid = line.split()
                    if try_number == "1":
                        pids[task] = int(pid)
            counts = sb.stats()["by_command"]
            for task, (command, at) in targets.items():
                if task in pids and task not in killed and counts.get(command, 0) >= at:
                    os.kill(pids[task], signal.SIGKILL)
                    killed[task] = (pids[task], counts.get(command, 0))
            time.sleep(0.005)

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,), daemon=True)
    watcher.start()
    started = time.monotonic()
    log_path = tmp_path / "driver.log"
    with log_path.open("w") as log:
        proc = subprocess.run(
            [sys.executable, str(tmp_path / "driver.py"), str(dag_file), str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=150,
        )
    stop.set()
    watcher.join(2)
    elapsed = time.monotonic() - started
    output = log_path.read_text()
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, output[-4000:]
    assert set(killed) == set(targets), (killed, output[-3000:])
    return json.loads(lines[-1][len("RESULT ") :]), killed, elapsed, output


def in_flight_at_kill(sb, sims: list[str], first_try_sends: int) -> set[str]:
    """The SIMs whose message the platform received among the first ``first_try_sends`` send requests."""
    return {e["iccid"] for e in sb.received("send_sms")[:first_try_sends]} & set(sims)


def test_sigkill_then_retry_sends_once_and_resumes_the_report(sb, dags_folder, tmp_path):
    fleet = sb.fleet.iccids
    sms_iccids, audit_iccids = fleet[:SMS_SIMS], fleet[-AUDIT_SIMS:]
    report = tmp_path / "out" / "audit.csv"
    result, killed, elapsed, _ = run_killed(
        sb,
        dags_folder,
        tmp_path,
        {"sms": ("send_sms", SMS_KILL_AT), "audit": ("query_imei", AUDIT_KILL_AT)},
        no_store=False,
        sms_iccids=sms_iccids,
        audit_iccids=audit_iccids,
        uri=report.as_uri(),
    )
    stats = sb.stats()
    assert result["state"] == "success", result
    assert result["tis"] == {"sms": ["success", 2], "audit": ["success", 2]}, result

    # SMS, 16 in flight: every SIM exactly one message, none twice, across the killed try and the retry; the
    # SIMs left pending at the kill (at most one ledger window plus those in flight) were looked up, not resent.
    per_sim = stats["sms_per_iccid"]
    assert per_sim == dict.fromkeys(sms_iccids, 1), {k: v for k, v in per_sim.items() if v != 1}
    history_lookups = stats["by_command"].get("query_sms_mt_details", 0)
    if HAS_TASK_STATE_STORE:
        assert 0 < history_lookups <= window_size(16) + 16 < SMS_SIMS  # the store spared the closed windows
    else:  # Airflow 3.1 / 3.2: nothing survives a try, so the retry looks every SIM up before sending
        assert history_lookups == SMS_SIMS
    looked_up = {e["iccid"] for e in sb.received("query_sms_mt_details")}
    sent_before_kill = in_flight_at_kill(sb, sms_iccids, killed["sms"][1])
    resent = [e["iccid"] for e in sb.received("send_sms")[killed["sms"][1] :] if e["iccid"] in sent_before_kill]
    assert resent == [] and looked_up & sent_before_kill, "SIMs reached before the kill were settled, not resent"
    assert stats["max_in_flight"] > 2  # the sends really overlapped

    # Audit: the retry resumed from the parts the killed try flushed. Each SIM was asked once, except those
    # answered after the last whole part (fewer than a part) or in flight at the kill: the first try's queries
    # plus the retry's are the batch's SIMs within that window, and far fewer than a restart's.
    queries = Counter({i: n for i, n in stats["imei_queries_per_iccid"].items() if i in set(audit_iccids)})
    asked_again = sum(queries.values()) - AUDIT_SIMS
    in_flight_window = AUDIT_PART_ROWS + AUDIT_WORKERS + 4  # 4: the watcher's polling lag at 200 answers/s
    assert set(queries) == set(audit_iccids) and 0 <= asked_again <= in_flight_window, (asked_again, killed)
    assert sum(queries.values()) < AUDIT_SIMS + killed["audit"][1] - in_flight_window  # less than a restart
    # The report is exact: every ICCID once, the rows a clean run gives, no part or half-written file left.
    with report.open(newline="") as f:
        rows = list(csv.DictReader(f))
    clean = {r.iccid: {k: v or "" for k, v in r.as_dict().items()} for r in M2mHook().query_imeis(audit_iccids)}
    assert Counter(r["iccid"] for r in rows) == Counter(audit_iccids)
    assert {r["iccid"]: r for r in rows} == clean
    assert not list(report.parent.glob("*.partial")) and not (tmp_path / "out" / "audit.csv.parts").exists()

    print(
        f"\n[crash-resume] dag.test(use_executor=True) in {elapsed:.1f}s; "
        f"SMS task (16 in flight) SIGKILLed (pid {killed['sms'][0]}) after {killed['sms'][1]} of {SMS_SIMS} sends, "
        f"retried: {sum(per_sim.values())} messages to {len(per_sim)} SIMs, max per SIM {max(per_sim.values())}, "
        f"{stats['by_command'].get('send_sms', 0)} send_sms requests, {history_lookups} history lookup(s) "
        f"for SIMs left 'pending' in the task state store"
    )
    print(
        f"[crash-resume] audit task SIGKILLed (pid {killed['audit'][0]}) after {killed['audit'][1]} queries, "
        f"retried: it resumed from the flushed parts, {asked_again} SIMs asked twice (window {in_flight_window}); "
        f"report has {len(rows)} rows for {AUDIT_SIMS} SIMs, each ICCID once, equal to a clean run's"
    )


def test_sigkill_then_retry_without_a_task_state_store_looks_every_sim_up(sb, dags_folder, tmp_path):
    """Airflow 3.1 / 3.2 have no task state store: the retry settles every SIM from the SMS history."""
    sms_iccids = sb.fleet.iccids[:NO_STORE_SIMS]
    result, killed, elapsed, _ = run_killed(
        sb,
        dags_folder,
        tmp_path,
        {"sms": ("send_sms", NO_STORE_KILL_AT)},
        no_store=True,
        sms_iccids=sms_iccids,
        audit_iccids=[],
        uri="",
    )
    stats = sb.stats()
    assert result["state"] == "success", result
    assert result["tis"] == {"sms": ["success", 2]}, result
    per_sim = stats["sms_per_iccid"]
    assert per_sim == dict.fromkeys(sms_iccids, 1), {k: v for k, v in per_sim.items() if v != 1}
    lookups = [e["iccid"] for e in sb.received("query_sms_mt_details")]
    assert sorted(lookups) == sorted(sms_iccids)  # the retry, and only the retry, asked about each SIM once
    first_try_sends = killed["sms"][1]
    retry_sends = sb.received("send_sms")[first_try_sends:]
    assert all(e["iccid"] not in in_flight_at_kill(sb, sms_iccids, first_try_sends) for e in retry_sends)
    print(
        f"\n[crash-resume, no task state store] in {elapsed:.1f}s: SIGKILLed after {first_try_sends} of "
        f"{NO_STORE_SIMS} sends, retried: {sum(per_sim.values())} messages to {len(per_sim)} SIMs, max per SIM "
        f"{max(per_sim.values())}, {len(lookups)} history lookups (one per SIM, on the retry only)"
    )
