"""OpenLineage: a real ``dag.test()`` run with the OpenLineage provider's file transport, read back event by event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from conftest import M2M_PASSWORD

pytest.importorskip("airflow.providers.openlineage", reason="the openlineage extra is part of the test install")

DAG_SOURCE = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator
from airflow_provider_m2m.operators.m2m import QueryImeiOperator, SendSmsOperator

with DAG("lineage_test", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    QueryImeiOperator(task_id="query", iccids={iccids!r}, output_uri={uri!r})
    QueryImeiOperator(task_id="query_to_xcom", iccids={iccids!r})
    SendSmsOperator(task_id="send", iccids={iccids!r}, message_text="Maintenance tonight")
    CheckSimSwapOperator(task_id="swap", msisdns={msisdns!r}, on_recent_swap="continue")
"""

# dag.test() in a fresh interpreter: the OpenLineage listener reads its settings once per process, and the
# rest of the suite runs with OpenLineage off (tests/conftest.py).
RUN = """
import sys
from airflow_provider_m2m.sandbox.airflow_home import dag_bag
dag = dag_bag(sys.argv[1]).get_dag("lineage_test")
print("STATE", dag.test().state)
"""


def _completed(events: list[dict]) -> dict[str, dict]:
    """The COMPLETE event of each task, by task id (the job name is ``<dag_id>.<task_id>``)."""
    done = [e for e in events if e["eventType"] == "COMPLETE" and "." in e["job"]["name"]]
    return {e["job"]["name"].split(".", 1)[1]: e for e in done}


@pytest.mark.airflow
def test_operators_report_platform_and_files_as_datasets(sb, dags_folder, tmp_path):
    iccids = sb.fleet.iccids[:3]
    out = tmp_path / "batches" / "batch-00000.csv"
    source = DAG_SOURCE.format(iccids=iccids, uri=out.as_uri(), msisdns=[s.msisdn for s in sb.fleet.sims[:2]])
    (dags_folder / "lineage_test.py").write_text(source)
    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "m2m-tests",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
    }
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(dags_folder / "lineage_test.py")],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert "STATE success" in result.stdout, (result.stdout + result.stderr)[-3000:]
    raw = events_file.read_text()
    assert M2M_PASSWORD not in raw and "api_password" not in raw
    tasks = _completed([json.loads(line) for line in raw.splitlines() if line.strip()])
    assert {"query", "query_to_xcom", "send", "swap"} <= set(tasks)

    platform = "http://" + urlsplit(sb.url).netloc  # the connections' host: scheme, host and port only
    assert tasks["query"]["inputs"][0]["namespace"] == platform
    assert tasks["query"]["inputs"][0]["name"] == "query_imei"
    assert tasks["query"]["inputs"][0]["facets"]["dataSource"]["uri"] == platform
    assert [(d["namespace"], d["name"]) for d in tasks["query"]["outputs"]] == [("file", str(out).lstrip("/"))]
    assert tasks["query_to_xcom"]["outputs"] == []
    assert [(d["namespace"], d["name"]) for d in tasks["send"]["outputs"]] == [(platform, "send_sms")]
    assert tasks["send"]["inputs"] == []
    assert [(d["namespace"], d["name"]) for d in tasks["swap"]["inputs"]] == [(platform, "imsi/v1/checkATI")]
