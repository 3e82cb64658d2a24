"""
Suite 5, secrets: the distinctive password, consumer secret and every access token the sandbox issued
never appear in exception text, logs, XCom, rendered templates or task logs. (The autouse guards at the
end of tests/conftest.py check caplog and stdout/stderr after every test of the whole suite, and scan the
Airflow home at the end of the session; this file drives the paths where a leak would be likeliest.)
"""

from __future__ import annotations

import json
import logging

import pytest
from conftest import _HOME, DARAJA_SECRET, M2M_PASSWORD, SECRETS, _scan_airflow_home_for_secrets, load_dag

from airflow_provider_m2m.exceptions import M2mProviderError
from airflow_provider_m2m.hooks.daraja import DarajaHook, clear_token_cache
from airflow_provider_m2m.hooks.m2m import M2mHook

DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator
from airflow_provider_m2m.operators.m2m import QueryImeiOperator, SendSmsOperator

with DAG("secrets_run", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    CheckSimSwapOperator(task_id="swap", msisdns={msisdns!r}, on_recent_swap="continue")
    QueryImeiOperator(task_id="imei", iccids={iccids!r})
    SendSmsOperator(task_id="sms", iccids={iccids!r}, message_text="pw check {{{{ ds }}}}")
    QueryImeiOperator(task_id="imei_bad_password", iccids={iccids!r}, m2m_conn_id="m2m_wrong")
    CheckSimSwapOperator(task_id="swap_bad_secret", msisdns={msisdns!r}, daraja_conn_id="daraja_wrong")
"""


def wrong_conns(sb, monkeypatch) -> None:
    """Connections whose secrets contain the real ones: a leak of either shows up as the real secret."""
    env = sb.conn_env()
    m2m = json.loads(env["AIRFLOW_CONN_M2M_DEFAULT"])
    daraja = json.loads(env["AIRFLOW_CONN_DARAJA_DEFAULT"])
    m2m["password"] = M2M_PASSWORD + "-wrong"
    daraja["password"] = DARAJA_SECRET + "-wrong"
    monkeypatch.setenv("AIRFLOW_CONN_M2M_WRONG", json.dumps(m2m))
    monkeypatch.setenv("AIRFLOW_CONN_DARAJA_WRONG", json.dumps(daraja))


def test_exception_text_never_carries_secrets(sb, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_conns(sb, monkeypatch)
    clear_token_cache()
    texts = []
    for call in (
        lambda: M2mHook("m2m_wrong").query_imei(sb.fleet.iccids[0]),
        lambda: M2mHook("m2m_wrong").send_sms(sb.fleet.iccids[0], "hi"),
        lambda: list(M2mHook("m2m_wrong").query_imeis(sb.fleet.iccids[:3])),
        lambda: DarajaHook("daraja_wrong").check_sim_swap(sb.fleet.msisdns[0]),
        lambda: DarajaHook("daraja_wrong").get_access_token(),
    ):
        with pytest.raises(M2mProviderError) as info:
            call()
        texts += [str(info.value), repr(info.value), str(info.value.__cause__), str(info.value.__context__)]
    ok, message = M2mHook("m2m_wrong").test_connection()
    texts.append(message)
    # a revoked token: the hook renews it; neither token may surface
    hook = DarajaHook()
    hook.check_sim_swap(sb.fleet.msisdns[0])
    sb.revoke_tokens()
    hook.check_sim_swap(sb.fleet.msisdns[1])
    tokens = sb.issued_tokens()
    assert len(tokens) >= 2
    leaked = [s for s in (*SECRETS, *tokens) for t in texts if s in t]
    assert not leaked
    print(f"\n[secrets] {len(texts)} exception/result texts from refused credentials and a revoked token: no secret")


@pytest.mark.airflow
def test_dag_run_leaves_no_secret_in_xcom_rtif_or_task_logs(sb, dags_folder, monkeypatch):
    wrong_conns(sb, monkeypatch)
    clear_token_cache()
    fleet = sb.fleet
    source = DAG.format(msisdns=fleet.msisdns[:5], iccids=fleet.iccids[:5])
    dr = load_dag(dags_folder, source, "secrets_run").test()
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states == {
        "swap": "success",
        "imei": "success",
        "sms": "success",
        "imei_bad_password": "failed",
        "swap_bad_secret": "failed",
    }, states
    tokens = sb.issued_tokens()
    assert tokens, "the Daraja task fetched a token"
    found = _scan_airflow_home_for_secrets(_HOME, (*SECRETS, *tokens))
    assert not found, found
    logs = [p for p in (_HOME / "logs").rglob("*") if p.is_file()] if (_HOME / "logs").is_dir() else []
    print(
        f"[secrets] dag.test() run with 5 tasks (2 refused credentials): {len(SECRETS)} secrets + {len(tokens)} "
        f"issued token(s) absent from {len(logs)} task log file(s), the XCom, rendered-fields and state-store tables"
    )
