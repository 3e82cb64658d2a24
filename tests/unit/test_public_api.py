"""Each public module lists exactly its public API in ``__all__`` (DESIGN's names), and every name resolves."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "airflow_provider_m2m.hooks.m2m": {"M2mHook", "ImeiRecord", "SmsReceipt", "SimStatus", "StatusChange"},
    "airflow_provider_m2m.hooks.daraja": {"DarajaHook", "SimSwapRecord"},
    "airflow_provider_m2m.operators.m2m": {"QueryImeiOperator", "SendSmsOperator", "SetSimStatusOperator"},
    "airflow_provider_m2m.operators.sim_status": {"SetSimStatusOperator"},
    "airflow_provider_m2m.operators.approval": {"ApproveSimsOperator"},
    "airflow_provider_m2m.sensors.m2m": {"SmsDeliverySensor"},
    "airflow_provider_m2m.triggers.m2m": {"SmsDeliveryTrigger"},
    "airflow_provider_m2m.exceptions": {"InvalidRequestError", "AuthenticationError", "RetryToSettleError"},
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_lists_the_public_api_and_resolves(module):
    loaded = importlib.import_module(module)
    assert PUBLIC[module] <= set(loaded.__all__)
    assert all(hasattr(loaded, name) for name in loaded.__all__)
    assert not [name for name in loaded.__all__ if name.startswith("_")]


def test_set_sim_status_operator_is_one_class_under_both_paths():
    from airflow_provider_m2m.operators.m2m import SetSimStatusOperator
    from airflow_provider_m2m.operators.sim_status import SetSimStatusOperator as Defined

    assert SetSimStatusOperator is Defined


def test_the_retryable_task_failure_is_an_airflow_exception_and_the_provider_s_own():
    from airflow_provider_m2m.exceptions import M2mProviderError, RetryToSettleError
    from airflow_provider_m2m.utils.version_compat import AirflowException, AirflowFailException

    assert issubclass(RetryToSettleError, AirflowException) and issubclass(RetryToSettleError, M2mProviderError)
    assert not issubclass(RetryToSettleError, AirflowFailException)  # Airflow retries it


def test_every_operator_builds_its_hook_from_its_connection_id_lazily():
    from airflow_provider_m2m.hooks.m2m import M2mHook
    from airflow_provider_m2m.operators.m2m import QueryImeiOperator, SendSmsOperator, SetSimStatusOperator
    from airflow_provider_m2m.sensors.m2m import SmsDeliverySensor

    ops = [
        QueryImeiOperator(task_id="q", iccids=[], m2m_conn_id="c1"),
        SendSmsOperator(task_id="s", iccids=[], message_text="hi", m2m_conn_id="c1"),
        SetSimStatusOperator(task_id="t", iccids=[], status="active", m2m_conn_id="c1"),
        SmsDeliverySensor(task_id="d", messages=[], m2m_conn_id="c1"),
    ]
    for op in ops:
        assert "hook" not in vars(op)  # nothing built at parse time
        assert isinstance(op.hook, M2mHook) and op.hook.m2m_conn_id == "c1" and op.hook is op.hook


def test_the_protocol_code_and_the_exceptions_load_without_airflow():
    """The named task failure subclasses Airflow's; importing the exceptions (as the protocol does) loads no Airflow."""
    import subprocess
    import sys

    code = (
        "import sys, airflow_provider_m2m.protocol.iccid, airflow_provider_m2m.exceptions as e; "
        "print('airflow' in sys.modules, e.RetryToSettleError.__module__, 'airflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "airflow_provider_m2m.exceptions", "True"], result.stderr[-2000:]
