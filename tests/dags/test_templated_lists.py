"""A list param templated into a list argument, as a new user writes it: ``iccids="{{ params.iccids }}"``."""

from __future__ import annotations

from conftest import load_dag

LIST_PARAM_DAG = """
import datetime as dt
from airflow.sdk import DAG, Param
from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator
from airflow_provider_m2m.operators.m2m import QueryImeiOperator

with DAG("list_params", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
         params={{"iccids": Param({iccids!r}, type="array"), "msisdns": Param({msisdns!r}, type="array")}}):
    QueryImeiOperator(task_id="query", iccids="{{{{ params.iccids }}}}")
    CheckSimSwapOperator(task_id="screen", msisdns="{{{{ params.msisdns }}}}", on_recent_swap="continue")
    QueryImeiOperator(task_id="not_a_list", iccids="{{{{ params.iccids[0] }}}},{{{{ params.iccids[1] }}}}", retries=2)
"""


def test_a_list_param_rendered_into_iccids_and_msisdns_is_read_as_that_list(sb, dags_folder, capfd):
    iccids, msisdns = sb.fleet.iccids[300:303], sb.fleet.msisdns[:2]
    dag = load_dag(dags_folder, LIST_PARAM_DAG.format(iccids=iccids, msisdns=msisdns), "list_params")
    dr = dag.test()
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert (tis["query"].state, tis["screen"].state) == ("success", "success")
    rows = tis["query"].xcom_pull(task_ids="query")
    assert sorted(r["iccid"] for r in rows) == sorted(iccids) and all(r["error"] is None for r in rows)
    screened = tis["screen"].xcom_pull(task_ids="screen")
    assert sorted(r["msisdn"] for r in screened) == sorted(msisdns)
    # A plain string stays one identifier, never split on commas: bad input, no retry, nothing sent for it.
    assert (tis["not_a_list"].state, tis["not_a_list"].try_number) == ("failed", 1)
    out = capfd.readouterr()
    assert "iccids: an ICCID has digits only" in out.out + out.err
    stats = sb.stats()
    assert stats["imei_queries_per_iccid"] == dict.fromkeys(iccids, 1)  # none for the task that failed
    assert stats["checks_per_msisdn"] == dict.fromkeys(msisdns, 1)
