"""SmsDeliverySensor in real DAG runs (dag.test()): deferrable and poke modes, timeouts, soft_fail, bad input."""

from __future__ import annotations

import json

import pytest
from conftest import load_dag

DAG_TEMPLATE = """
import datetime as dt
import json
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_m2m.operators.m2m import SendSmsOperator
from airflow_provider_m2m.sensors.m2m import SmsDeliverySensor

with DAG("{dag_id}", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False):
    sent = SendSmsOperator(task_id="send", iccids={iccids!r}, message_text="Delivery test")
    delivered = SmsDeliverySensor(task_id="wait", messages={messages}, {sensor_args})

    @task(trigger_rule="all_done")
    def report(ti=None):
        rows = ti.xcom_pull(task_ids="wait")
        Path({out!r}).write_text(json.dumps(rows))

    sent >> delivered >> report()
"""


def _run(sb, dags_folder, tmp_path, iccids, sensor_args, messages="sent.output", dag_id="delivery_test"):
    out = tmp_path / "deliveries.json"
    source = DAG_TEMPLATE.format(dag_id=dag_id, iccids=iccids, messages=messages, sensor_args=sensor_args, out=str(out))
    dag = load_dag(dags_folder, source, dag_id)
    dag_run = dag.test()
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    rows = json.loads(out.read_text()) if out.exists() else None
    return dag_run, states, rows


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_sensor_waits_for_delivered_and_failed(sb, dags_folder, tmp_path, deferrable):
    sb.configure(sms_delivery_delay=1.0)
    cases = sb.fleet.sms_edge_cases
    iccids = [cases["delivered"], cases["failed"]]
    args = f"deferrable={deferrable}, poke_interval=0.5, timeout=60"
    dag_run, states, rows = _run(sb, dags_folder, tmp_path, iccids, args)
    assert dag_run.state == "success", states
    assert states["wait"] == "success"
    assert [(r["iccid"], r["state"]) for r in rows] == [(cases["delivered"], "delivered"), (cases["failed"], "failed")]
    sent = {e["iccid"]: e["sms_uid"] for e in sb.received("send_sms")}
    assert {r["iccid"]: r["sms_uid"] for r in rows} == sent  # matched by sms_uid
    assert rows[0]["delivered_at"] and rows[0]["sent_at"] and rows[1]["delivered_at"] is None
    asked = sb.stats()["by_command"]["query_sms_mt_details"]
    assert 2 <= asked <= 2 * 8  # a few rounds of two queries, not a busy loop


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_timeout_with_soft_fail_skips_and_keeps_the_report(sb, dags_folder, tmp_path, deferrable):
    sb.configure(sms_delivery_delay=0)
    cases = sb.fleet.sms_edge_cases
    iccids = [cases["delivered"], cases["pending"]]
    args = f"deferrable={deferrable}, poke_interval=0.5, timeout=2, soft_fail=True"
    dag_run, states, rows = _run(sb, dags_folder, tmp_path, iccids, args)
    assert states["wait"] == "skipped", states
    assert dag_run.state == "success", states
    assert [(r["iccid"], r["state"]) for r in rows] == [
        (cases["delivered"], "delivered"),
        (cases["pending"], "pending"),
    ]


def test_timeout_without_soft_fail_fails_and_keeps_the_report(sb, dags_folder, tmp_path):
    sb.configure(sms_delivery_delay=0)
    iccids = [sb.fleet.sms_edge_cases["pending"]]
    _, states, rows = _run(sb, dags_folder, tmp_path, iccids, "deferrable=True, poke_interval=0.5, timeout=1")
    assert states["wait"] == "failed", states
    assert [r["state"] for r in rows] == ["pending"]


def test_reschedule_mode_carries_what_it_learnt(sb, dags_folder, tmp_path):
    sb.configure(sms_delivery_delay=0)
    cases = sb.fleet.sms_edge_cases
    iccids = [cases["delivered"], cases["failed"]]
    # One SIM per poke: a reschedule that forgot the first SIM was final would ask it again, never the second.
    args = 'mode="reschedule", poke_interval=0.2, timeout=30, max_requests_per_poke=1'
    dag_run, states, rows = _run(sb, dags_folder, tmp_path, iccids, args)
    assert dag_run.state == "success", states
    assert [r["state"] for r in rows] == ["delivered", "failed"]
    assert [e["iccid"] for e in sb.received("query_sms_mt_details")] == iccids


def test_bad_messages_fail_the_sensor_before_any_query(sb, dags_folder, tmp_path):
    messages = repr([["8925401000000000012", "ok1"], ["89254", "ok2"]])
    args = "deferrable=True, poke_interval=0.5, timeout=5"
    _, states, rows = _run(sb, dags_folder, tmp_path, [sb.fleet.iccids[0]], args, messages=messages)
    assert states["wait"] == "failed", states
    assert sb.stats()["by_command"].get("query_sms_mt_details", 0) == 0
    assert rows is None  # nothing was pushed


def test_nothing_sent_means_nothing_to_wait_for(sb, dags_folder, tmp_path):
    messages = repr([{"iccid": "8925401000000000012", "sms_uid": "x1", "outcome": "failed"}])
    _, states, rows = _run(sb, dags_folder, tmp_path, [sb.fleet.iccids[0]], "timeout=5", messages=messages)
    assert states["wait"] == "success" and rows == []
    assert sb.stats()["by_command"].get("query_sms_mt_details", 0) == 0


@pytest.mark.airflow
def test_airflow_lists_the_trigger_and_the_sensor_module_is_registered():
    import importlib
    import os
    import subprocess
    import sys

    from airflow_provider_m2m import get_provider_info

    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "triggers", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ours = [t for t in json.loads(result.stdout) if t["package_name"] == "airflow-provider-m2m"]
    assert [t["class"] for t in ours] == ["airflow_provider_m2m.triggers.m2m"]
    [sensors] = get_provider_info()["sensors"]
    [module] = sensors["python-modules"]
    assert importlib.import_module(module).SmsDeliverySensor.__name__ == "SmsDeliverySensor"


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_500_pending_messages_stay_within_the_request_budget(sb, dags_folder, tmp_path, deferrable):
    sb.configure(sms_delivery_delay=3600)  # everything stays pending
    iccids = sb.fleet.iccids[:500]
    args = f"deferrable={deferrable}, poke_interval=0.4, timeout=2, soft_fail=True, max_requests_per_poke=100"
    _, states, rows = _run(sb, dags_folder, tmp_path, iccids, args)
    assert states["wait"] == "skipped", states
    asked = [e["iccid"] for e in sb.received("query_sms_mt_details")]
    pokes = len(asked) // 100
    assert len(asked) == 100 * pokes and 2 <= pokes <= 2 / 0.4 + 2  # whole pokes of 100, no retries on top
    assert len(set(asked[:500])) == min(500, len(asked))  # every SIM in turn
    assert {r["state"] for r in rows if r["iccid"] in set(asked)} == {"pending"}
    assert len(rows) == 500


def test_messages_from_files_and_rows_to_a_file_in_poke_mode(sb, dags_folder, tmp_path):
    """messages_uri / output_uri: no message or row passes through XCom, only the counts."""
    sb.configure(sms_delivery_delay=0)
    cases = sb.fleet.sms_edge_cases
    sent, out = (tmp_path / "sent.csv").as_uri(), (tmp_path / "deliveries.csv").as_uri()
    source = f"""
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_m2m.operators.m2m import SendSmsOperator
from airflow_provider_m2m.sensors.m2m import SmsDeliverySensor

with DAG("delivery_files", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)):
    SendSmsOperator(task_id="send", iccids={[cases["delivered"], cases["failed"]]!r}, message_text="Files",
                    output_uri={sent!r}) >> SmsDeliverySensor(
        task_id="wait", messages_uri={sent!r}, output_uri={out!r}, deferrable=False, poke_interval=0.5, timeout=30)
"""
    dag_run = load_dag(dags_folder, source, "delivery_files").test()
    states = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    assert dag_run.state == "success", states
    assert states["send"].xcom_pull(task_ids="send") == {"uri": sent, "total": 2, "success": 2, "failed": 0,
                                                         "unknown": 0}  # fmt: skip
    summary = states["wait"].xcom_pull(task_ids="wait")
    assert summary == {"uri": out, "messages": 2, "delivery": {"delivered": 1, "failed": 1}}
    lines = (tmp_path / "deliveries.csv").read_text().splitlines()
    assert lines[0] == "iccid,sms_uid,state,status,sent_at,delivered_at,error"
    received = sb.received("send_sms")
    expected = [[e["iccid"], e["sms_uid"], s] for e, s in zip(received, ["delivered", "failed"], strict=True)]
    assert [line.split(",")[:3] for line in lines[1:]] == expected
