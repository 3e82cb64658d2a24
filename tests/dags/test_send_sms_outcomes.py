"""
SendSmsOperator as a user meets it in real ``dag.test()`` runs against the sandbox: concurrent sends, a SIM the
platform refuses, duplicates, an empty list, and what the progress line says.
"""

from __future__ import annotations

from conftest import load_dag

from airflow_provider_m2m.utils.version_compat import HAS_TASK_STATE_STORE

NOT_IN_FLEET = "8900000000000000000"  # valid syntax, unknown to the platform: "invalid iccid"

SEND_DAG = """
import datetime as dt
from airflow.sdk import DAG, Param
from airflow_provider_m2m.operators.m2m import SendSmsOperator

with DAG("{dag_id}", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
         params={{"workers": Param(8, type="integer")}}):
    SendSmsOperator(task_id="send", iccids={iccids!r}, message_text="Service window tonight",
                    retries=2, retry_delay=dt.timedelta(0), {extra})
"""


def run_send(dags_folder, dag_id: str, iccids, extra: str = ""):
    dag = load_dag(dags_folder, SEND_DAG.format(dag_id=dag_id, iccids=iccids, extra=extra), dag_id)
    dr = dag.test()
    (ti,) = dr.get_task_instances()
    return dr, ti


def pushed(ti, key: str):
    return ti.xcom_pull(task_ids="send", key=key)


def test_concurrent_send_one_message_each_with_templated_workers(sb, dags_folder, capfd):
    sb.configure(latency=0.02)
    sims = sb.fleet.iccids[300:400]
    dr, ti = run_send(dags_folder, "sms_concurrent", sims, "max_workers='{{ params.workers }}'")
    assert dr.state == "success" and ti.try_number == 1
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(sims, 1)
    assert sb.stats()["max_in_flight"] > 1  # sends overlap
    assert sb.stats()["max_in_flight"] <= 8  # never more than max_workers
    rows = pushed(ti, "return_value")
    assert [r["iccid"] for r in rows] == sims  # input order, whatever order the answers came in
    assert {r["outcome"] for r in rows} == {"success"}
    out = capfd.readouterr().out
    assert "SMS: 100/100 (100 sent, 0 failed, 0 unknown)" in out and " - done" in out


def test_refused_sim_fails_the_task_without_retry_after_every_sim_was_tried(sb, dags_folder, capfd):
    sims = [*sb.fleet.iccids[400:405], NOT_IN_FLEET, *sb.fleet.iccids[405:410]]
    dr, ti = run_send(dags_folder, "sms_refused", sims)
    assert dr.state == "failed"
    assert ti.state == "failed" and ti.try_number == 1  # AirflowFailException: resending cannot help
    good = [s for s in sims if s != NOT_IN_FLEET]
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(good, 1)  # every other SIM was still tried
    assert [e["iccid"] for e in sb.received("send_sms")].count(NOT_IN_FLEET) == 1
    rows = {r["iccid"]: r for r in pushed(ti, "outcomes")}
    assert rows[NOT_IN_FLEET]["outcome"] == "failed"
    assert rows[NOT_IN_FLEET]["error"] == f"SIM Insight send_sms for SIM {NOT_IN_FLEET} failed: invalid iccid"
    assert all(rows[s]["outcome"] == "success" for s in good)
    out = capfd.readouterr().out
    assert "SMS: 11/11 (10 sent, 1 failed, 0 unknown) in" in out and "- finished, not all sent" in out
    assert "11/11 (11" not in out and "- done" not in out  # never "done" for a send that failed
    assert "1 of 11 SMS refused by the platform for good" in out and NOT_IN_FLEET in out


def test_refused_sim_is_never_resent_when_unknown_outcomes_force_a_retry(sb, dags_folder):
    sims = [sb.fleet.iccids[420], NOT_IN_FLEET, *sb.fleet.iccids[421:424]]
    # The first SIM's answer is lost after the platform stored its message: unknown, so the task fails
    # retryably; the retry settles it from the history and must not send to the refused SIM again.
    sb.inject("drop_after", count=1)
    dr, ti = run_send(dags_folder, "sms_refused_retry", sims)
    assert dr.state == "failed"
    assert ti.try_number == 2  # one retry for the unknown outcome, then final: only the refusal is left
    sends = [e["iccid"] for e in sb.received("send_sms")]
    assert sends.count(NOT_IN_FLEET) == 1  # the ledger remembered the refusal, or the history lookup was refused
    assert sorted(sends) == sorted(sims)  # nothing else sent twice either
    # settled from the history: the unknown one, or (no task state store, before Airflow 3.3) every SIM
    looked_up = [sims[0]] if HAS_TASK_STATE_STORE else sims
    assert sorted(e["iccid"] for e in sb.received("query_sms_mt_details")) == sorted(looked_up)
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys([s for s in sims if s != NOT_IN_FLEET], 1)
    rows = {r["iccid"]: r for r in pushed(ti, "outcomes")}
    assert rows[NOT_IN_FLEET]["outcome"] == "failed" and "not resent" in rows[NOT_IN_FLEET]["error"]
    assert rows[sims[0]]["outcome"] == "success"


def test_duplicates_collapse_into_one_message_and_the_log_says_how_many(sb, dags_folder, capfd):
    a, b = sb.fleet.iccids[430:432]
    dr, ti = run_send(dags_folder, "sms_duplicates", [a, b, a, a, "  " + b])
    assert dr.state == "success"
    assert sb.stats()["sms_per_iccid"] == {a: 1, b: 1}
    assert [r["iccid"] for r in pushed(ti, "return_value")] == [a, b]
    assert "3 duplicate ICCIDs dropped: 5 SIMs listed, one message each to 2 distinct SIMs" in capfd.readouterr().out


def test_empty_list_sends_nothing_and_succeeds(sb, dags_folder, capfd):
    dr, ti = run_send(dags_folder, "sms_nothing", [])
    assert dr.state == "success" and ti.try_number == 1
    assert pushed(ti, "return_value") == []
    assert sb.stats()["requests"] == 0
    assert "No SIMs to send to: nothing sent" in capfd.readouterr().out
