"""
Daraja's one-live-token rule on the production-shaped stack (``stack.py``): the sandbox enforces "each request
invalidates the previous token"; four chunks of a mapped ``CheckSimSwapOperator`` run at once on two Celery
workers and share the app's token through the metadata DB (an Airflow Variable, read and written by the tasks
through the execution API). Every chunk must succeed on its first try, with one token request for the app.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

DAG_ID, CHUNKS, PER_CHUNK = "prod_mapped_sim_swap_screening", 4, 25


@pytest.mark.timeout(600)
def test_parallel_mapped_screening_shares_one_daraja_token(stack):
    sandbox = stack.sandbox
    app = sandbox.credentials["daraja_key"]
    stack.airflow.wait_until(lambda: stack.api("GET", f"/api/v2/dags/{DAG_ID}")[0] == 200, 180,
                             f"the dag-processor to parse {DAG_ID}")  # fmt: skip
    status, body = stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    assert status == 200, f"unpausing {DAG_ID}: HTTP {status} {body}"

    numbers = list(sandbox.fleet.swaps)[: CHUNKS * PER_CHUNK]
    chunks = [numbers[i::CHUNKS] for i in range(CHUNKS)]
    before = sandbox.stats()
    began = time.monotonic()
    run_id = stack.trigger(DAG_ID, {"chunks": chunks}, logical_date=dt.datetime.now(dt.UTC))
    state = stack.wait_for_run(DAG_ID, run_id, timeout=400)
    wall = time.monotonic() - began
    screens = stack.task_instances(DAG_ID, run_id, "screen")
    assert state == "success", screens
    assert sorted(ti["map_index"] for ti in screens) == list(range(CHUNKS))
    assert {ti["state"] for ti in screens} == {"success"}
    assert [ti["try_number"] for ti in screens] == [1] * CHUNKS, "a chunk needed a retry"
    hosts = sorted(ti["hostname"] for ti in screens)
    starts = sorted(dt.datetime.fromisoformat(ti["start_date"]) for ti in screens)
    ends = sorted(dt.datetime.fromisoformat(ti["end_date"]) for ti in screens)
    overlapping = sum(start < ends[0] for start in starts)

    stats = sandbox.stats()
    tokens = stats["tokens_issued_per_app"].get(app, 0) - before["tokens_issued_per_app"].get(app, 0)
    refused = stats["by_status"].get(401, 0) - before["by_status"].get(401, 0)
    checks = stats["by_command"].get("checkATI", 0) - before["by_command"].get("checkATI", 0)
    for index, chunk in enumerate(chunks):
        rows, _ = stack.xcom(DAG_ID, run_id, "screen", map_index=index)
        assert sorted(row["msisdn"] for row in rows) == sorted(chunk)
        assert all(row["error"] is None for row in rows), rows
    print(
        f"\n{CHUNKS} mapped chunks of {PER_CHUNK} numbers on workers {hosts}, {overlapping} running at once at the "
        f"first end: {checks} checks, {tokens} token request(s) for the app, {refused} refused call(s), every chunk "
        f"on its first try; trigger to success {wall:.0f} s"
    )
    assert tokens == 1, f"{tokens} token requests for one app"
    assert refused == 0, f"{refused} calls were refused: a worker used a token another had knocked out"
    assert checks == len(numbers)

    # The shared token, as the REST API (and so the UI) shows the Variable: masked.
    status, listing = stack.api("GET", "/api/v2/variables?limit=100")
    assert status == 200, listing
    shared = [v for v in listing["variables"] if v["key"].startswith("daraja_access_token_")]
    assert len(shared) == 1, [v["key"] for v in listing["variables"]]
    status, variable = stack.api("GET", f"/api/v2/variables/{shared[0]['key']}")
    assert status == 200, variable
    issued = sandbox.issued_tokens()
    assert issued and not any(token in str(variable) for token in issued), "the token is shown in clear"
    assert "***" in variable["value"]
    shown, encrypted = variable["value"][:60], variable["is_encrypted"]
    print(f"  Variable {variable['key']}: value shown as {shown!r}, is_encrypted={encrypted}")

    # Nor in any XCom, rendered field or task log of the deployment.
    for table in ("xcom", "rendered_task_instance_fields"):
        rows = stack.postgres.query(f"SELECT count(*) FROM {table} t WHERE t::text LIKE ANY(%s)",  # names from above
                                    ([f"%{token}%" for token in issued],))  # fmt: skip
        assert rows[0][0] == 0, f"a Daraja token is in the {table} table"
    logs = stack.airflow.home / "logs"
    leaked = [p for p in logs.rglob("*") if p.is_file() and any(t in p.read_text("utf-8", "replace") for t in issued)]
    assert leaked == [], f"a Daraja token is in task logs: {leaked[:5]}"
