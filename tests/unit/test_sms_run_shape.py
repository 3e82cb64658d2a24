"""SmsRun's shape as the DAG processor sees it: the lazy export, the tasks, the concurrency cap, the output."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest


def test_the_sms_package_exports_smsrun_lazily_without_a_circular_import():
    code = (
        "import sys\n"
        "import airflow_provider_m2m.sms\n"
        "assert 'airflow_provider_m2m.sms.run' not in sys.modules\n"
        "import airflow_provider_m2m.sms.ledger, airflow_provider_m2m.sms.delivery\n"
        "from airflow_provider_m2m.operators.m2m import SendSmsOperator\n"
        "from airflow_provider_m2m.sms import SmsRun, __all__\n"
        "assert __all__ == ['SmsRun'] and SmsRun.__module__ == 'airflow_provider_m2m.sms.run'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def _build(**kwargs):
    from airflow.sdk import DAG

    from airflow_provider_m2m.sms import SmsRun

    with DAG("shape", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) as dag:
        run = SmsRun(group_id="notify", iccids=["8925401551663717897"], message_text="Hi", **kwargs)
    return dag, run


def test_tasks_and_output():
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    dag, run = _build()
    assert set(dag.task_ids) == {
        f"notify.{task}"
        for task in ("validate_and_plan", "batches_to_send", "send_sms", "delivery_wait", "wait_for_delivery",
                     "write_report")
    }  # fmt: skip
    assert isinstance(run.report, PlainXComArg) and run.report.operator.task_id == "notify.write_report"
    assert dag.get_task("notify.wait_for_delivery").partial_kwargs["deferrable"] is True
    assert {t.task_id for t in run.get_leaves()} == {"notify.write_report"}


@pytest.mark.parametrize(
    ("kwargs", "pool", "at_once"),
    [({}, "default_pool", 4), ({"pool": "m2m_platform", "max_active_batches": 2}, "m2m_platform", 2)],
    ids=["no-pool", "pool"],
)
def test_batches_at_once_are_capped_with_or_without_a_pool(kwargs, pool, at_once):
    dag, _ = _build(**kwargs)
    send = dag.get_task("notify.send_sms")
    assert send.partial_kwargs.get("pool", "default_pool") == pool
    assert send.partial_kwargs["max_active_tis_per_dagrun"] == at_once
