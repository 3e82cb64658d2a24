"""SetSimStatusOperator in real ``dag.test()`` runs against the sandbox: each outcome, bad input, faults."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from conftest import load_dag
from test_m2m_operators import states, xcom

from airflow_provider_m2m.operators.m2m import SetSimStatusOperator

DAG_SOURCE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_m2m.operators.m2m import SetSimStatusOperator

with DAG("{dag_id}", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
{tasks}
"""


def run(dags_folder, dag_id: str, tasks: dict[str, str]):
    body = "\n".join(f"    SetSimStatusOperator(task_id={task_id!r}, {kwargs})" for task_id, kwargs in tasks.items())
    return load_dag(dags_folder, DAG_SOURCE.format(dag_id=dag_id, tasks=body), dag_id).test()


def short_timeout_connection(monkeypatch, sb, conn_id: str = "m2m_short_timeout") -> str:
    """An m2m connection to the sandbox whose client gives up after half a second."""
    creds = sb.credentials
    extra = {"api_id": creds["m2m_api_id"], "timeout": 0.5}
    conn = {"conn_type": "m2m", "host": sb.url, "login": creds["m2m_username"], "password": creds["m2m_password"]}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({**conn, "extra": extra}))
    return conn_id


def sims(sb, status: str, count: int, skip: int = 0) -> list[str]:
    return sb.state.statuses.with_status(sb.fleet.iccids, status)[skip : skip + count]


def processed_sets(sb) -> Counter:
    """set_status commands the sandbox carried out, per ICCID."""
    return Counter(e["iccid"] for e in sb.received("set_status") if e.get("outcome") == "success")


def test_each_outcome_per_sim_in_xcom_and_closed_sims_never_touched(sb, dags_folder):
    active, deactivated, closed = sims(sb, "active", 2), sims(sb, "deactivated", 2), sims(sb, "closed", 1)
    untouched = sims(sb, "active", 1, skip=5)[0]
    dr = run(
        dags_folder,
        "set_status_outcomes",
        {
            "suspend": f"iccids={[*active, deactivated[0], *closed, active[0]]!r}, status='deactivated'",
            "reactivate": f"iccids={deactivated[1]!r}, status='Active'",
            "nothing": "iccids=[], status='deactivated'",
            "bad_status": f"iccids={[untouched]!r}, status='closed'",
            "bad_iccid": f"iccids={[untouched, '12345']!r}, status='deactivated'",
        },
    )
    assert states(dr) == {
        ("suspend", -1): "success",
        ("reactivate", -1): "success",
        ("nothing", -1): "success",
        ("bad_status", -1): "failed",
        ("bad_iccid", -1): "failed",
    }
    assert xcom(dr, "suspend") == [
        {"iccid": active[0], "previous_status": "active", "status": "deactivated", "outcome": "changed", "error": None},
        {"iccid": active[1], "previous_status": "active", "status": "deactivated", "outcome": "changed", "error": None},
        {
            "iccid": deactivated[0],
            "previous_status": "deactivated",
            "status": "deactivated",
            "outcome": "unchanged",
            "error": None,
        },
        {"iccid": closed[0], "previous_status": "closed", "status": "closed", "outcome": "skipped", "error": None},
    ]  # the repeated ICCID got one row and one command
    assert xcom(dr, "reactivate")[0]["outcome"] == "changed" and sb.state.statuses.get(deactivated[1]) == "active"
    assert xcom(dr, "nothing") == []
    # Commands went only to the SIMs that needed them; the closed SIM got no set_status at all.
    assert processed_sets(sb) == Counter({active[0]: 1, active[1]: 1, deactivated[1]: 1})
    assert [e for e in sb.received("set_status") if e["iccid"] in (closed[0], deactivated[0])] == []
    # Bad input failed its task before anything was sent, not even for its valid SIM.
    assert [e for e in sb.received() if e.get("iccid") == untouched] == []
    assert sb.state.statuses.get(untouched) == "active"


def test_unknown_outcome_is_settled_by_reading_the_status_back(sb, dags_folder, monkeypatch):
    conn_id = short_timeout_connection(monkeypatch, sb)
    (iccid,) = sims(sb, "active", 1)
    sb.state.statuses.answer_late(1.5)  # carried out, but answered after the client gave up
    task = f"iccids={[iccid]!r}, status='deactivated', m2m_conn_id={conn_id!r}"
    dr = run(dags_folder, "set_status_unknown", {"suspend": task})
    assert states(dr) == {("suspend", -1): "success"}
    assert xcom(dr, "suspend")[0] == {
        "iccid": iccid,
        "previous_status": "active",
        "status": "deactivated",
        "outcome": "changed",
        "error": None,
    }
    deadline = time.monotonic() + 5
    while not sb.received("set_status") and time.monotonic() < deadline:  # logged once its late answer went
        time.sleep(0.05)
    assert len(sb.received("set_status")) == 1  # read back, not resent
    assert sorted(e["command"] for e in sb.received()) == ["query_status", "query_status", "set_status"]


def test_faults_change_no_sim_twice_and_a_rerun_finishes_the_job(sb, dags_folder):
    iccids = sims(sb, "active", 30)
    sb.inject("429", count=1, retry_after=1)
    sb.inject("503", rate=0.1)
    sb.inject("drop", rate=0.1)
    sb.inject("drop_after", rate=0.1)
    first = run(dags_folder, "set_status_faults", {"suspend": f"iccids={iccids!r}, status='deactivated'"})
    rows = (
        xcom(first, "suspend", key="outcomes") if states(first)[("suspend", -1)] == "failed" else xcom(first, "suspend")
    )
    assert [row["iccid"] for row in rows] == iccids  # every SIM accounted for, failures included
    for row in rows:  # what a row says is what the platform holds
        assert sb.state.statuses.get(row["iccid"]) == ("deactivated" if row["outcome"] == "changed" else "active")
        assert row["outcome"] in ("changed", "failed") and (row["error"] is None) == (row["outcome"] == "changed")
    sb.clear_faults()
    second = run(dags_folder, "set_status_faults", {"suspend": f"iccids={iccids!r}, status='deactivated'"})
    assert states(second) == {("suspend", -1): "success"}
    again = {row["iccid"]: row["outcome"] for row in xcom(second, "suspend")}
    assert again == {row["iccid"]: "unchanged" if row["outcome"] == "changed" else "changed" for row in rows}
    assert all(sb.state.statuses.get(i) == "deactivated" for i in iccids)
    assert max(processed_sets(sb).values()) == 1  # no SIM was changed twice


def test_status_is_required_and_templated():
    """Written without ``status``, the task fails to parse, naming the field: it never suspends SIMs by default."""
    with pytest.raises(TypeError, match="missing keyword argument 'status'"):
        SetSimStatusOperator(task_id="t", iccids="{{ params.iccids }}")
    op = SetSimStatusOperator(task_id="t", iccids="{{ params.iccids }}", status="{{ params.status }}")
    assert {"iccids", "status", "m2m_conn_id", "max_workers"} <= set(op.template_fields)
