"""
The ``quarantine_moved_sims`` example DAG under ``dag.test()``, its approval answered the way a person's is:
through Airflow's public REST API (the api-server app, in this process, on the same metadata DB), or left
unanswered until the timeout resolves it: on Airflow 3.3 the scheduler's own sweep, before 3.3 the HITL
trigger's own deadline.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, load_dag
from test_m2m_operators import states, xcom

DAG_FILE = ROOT / "airflow_provider_m2m" / "example_dags" / "quarantine_moved_sims.py"
DAG_ID = "quarantine_moved_sims"
REVIEWER, REVIEWER_PASSWORD = "reviewer", "reviewer-password"

pytestmark = pytest.mark.airflow


@pytest.fixture(autouse=True)
def hitl_trigger_answered_in_dag_test(monkeypatch):
    """
    Give ``dag.test()`` what a running Airflow has, and tell the approval step so (``DAG_TEST_ANSWERED``;
    without it the step fails at once under ``dag.test()``, see ``test_dags_test_of_the_approval_fails_at_once``).

    Before Airflow 3.3 a HITL step defers to ``HITLTrigger``, which reads and writes the answer through two
    messages only the triggerer's supervisor handles (``GetHITLDetailResponse``, ``UpdateHITLDetail``).
    ``dag.test()`` runs the trigger in-process, and its in-process supervisor answers neither (the trigger
    then fails on ``None``). Give it the triggerer's own handling: the same execution-API calls, so the
    answer still travels REST API -> metadata DB -> execution API -> trigger. On Airflow 3.3 the step waits
    in ``awaiting_input`` with no trigger; the answer comes through the REST API, and the test that lets the
    request time out sweeps as the scheduler does.
    """
    from airflow_provider_m2m.operators import approval
    from airflow_provider_m2m.utils.version_compat import AIRFLOW_V_3_3_PLUS

    monkeypatch.setattr(approval, "DAG_TEST_ANSWERED", True)
    if AIRFLOW_V_3_3_PLUS:
        return
    from airflow.jobs.triggerer_job_runner import HITLDetailResponseResult
    from airflow.sdk.execution_time.comms import GetHITLDetailResponse, UpdateHITLDetail
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    handle = InProcessTestSupervisor._handle_request

    def handle_like_the_triggerer(self, msg, log, req_id, *args, **kwargs):
        if isinstance(msg, GetHITLDetailResponse):
            answer = self.client.hitl.get_detail_response(ti_id=msg.ti_id)
        elif isinstance(msg, UpdateHITLDetail):
            answer = self.client.hitl.update_response(
                ti_id=msg.ti_id, chosen_options=msg.chosen_options, params_input=msg.params_input
            )
        else:
            return handle(self, msg, log, req_id, *args, **kwargs)
        self.send_msg(HITLDetailResponseResult.from_api_response(response=answer), request_id=req_id)

    monkeypatch.setattr(InProcessTestSupervisor, "_handle_request", handle_like_the_triggerer)


@pytest.fixture
def api(airflow_db, tmp_path, monkeypatch):
    """A client of the api-server's public API, logged in as the user ``reviewer``."""
    from fastapi.testclient import TestClient

    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({REVIEWER: REVIEWER_PASSWORD}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"{REVIEWER}:admin")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    from airflow.api_fastapi.app import create_app

    client = TestClient(create_app(apps="core"))
    answer = client.post("/auth/token", json={"username": REVIEWER, "password": REVIEWER_PASSWORD})
    assert answer.status_code == 201, answer.text
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return client


def write_report(path: Path, sb, sims: list[str]) -> str:
    """A night's imei_changes.csv as fleet_imei_change_report writes it: changed SIMs, then a failed one."""
    columns = ["iccid", "asset_name", "status", "current_imei", "previous_imei", "last_change", "error"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        out = csv.DictWriter(fh, columns)
        out.writeheader()
        for n, iccid in enumerate(sims):
            sim = sb.fleet.by_iccid[iccid]
            out.writerow(
                {
                    "iccid": iccid,
                    "asset_name": f"pump-{n:03d}",
                    "status": "changed",
                    "current_imei": sim.normalized_imei,
                    "previous_imei": sim.previous_imei,
                    "last_change": sim.last_change.isoformat() if sim.last_change else "",
                }
            )
        out.writerow({"iccid": sb.fleet.iccids[-1], "status": "failed", "error": "query failed"})
    return path.as_uri()


class Reviewer(threading.Thread):
    """Waits for the approval request, checks what it shows, then answers it through the public API."""

    def __init__(self, api, answer: dict | None, timeout: float = 120) -> None:
        super().__init__(daemon=True)
        self.api, self.answer, self.timeout = api, answer, timeout
        self.request: dict | None = None
        self.status: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.timeout
            while self.request is None and time.monotonic() < deadline:
                found = self.api.get(
                    f"/api/v2/dags/{DAG_ID}/dagRuns/~/hitlDetails", params={"response_received": False}
                )
                details = found.json()["hitl_details"] if found.status_code == 200 else []
                self.request = details[0] if details else None
                time.sleep(0.5)
            if self.request is None or self.answer is None:
                return
            ti = self.request["task_instance"]
            path = f"/api/v2/dags/{DAG_ID}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/-1/hitlDetails"
            self.status = self.api.patch(path, json=self.answer).status_code
        except BaseException as exc:  # reported by the test on the main thread
            self.error = exc


def run_dag(dags_folder, report_uri: str, reviewer: Reviewer, source: str | None = None):
    dag = load_dag(dags_folder, source or DAG_FILE.read_text(), DAG_ID)
    reviewer.start()
    dr = dag.test(run_conf={"report_csv": report_uri})
    reviewer.join(5)
    assert reviewer.error is None, reviewer.error
    return dr


def actions(report_uri: str) -> dict:
    return json.loads((Path(report_uri.removeprefix("file://")).parent / "quarantine_actions.json").read_text())


def active_sims(sb, count: int) -> list[str]:
    """Active SIMs that did change device (old and new IMEI and the time are known)."""
    active = sb.state.statuses.with_status(sb.fleet.iccids, "active")
    return [i for i in active if sb.fleet.by_iccid[i].previous_imei and sb.fleet.by_iccid[i].last_change][:count]


def test_approve_some_deactivates_exactly_those(sb, dags_folder, tmp_path, api):
    sims = active_sims(sb, 3)
    report = write_report(tmp_path / "night" / "imei_changes.csv", sb, sims)
    chosen = [sims[0], sims[2]]
    reviewer = Reviewer(api, {"chosen_options": ["Approve"], "params_input": {"iccids": chosen}})
    dr = run_dag(dags_folder, report, reviewer)

    assert states(dr) == {
        (t, -1): "success" for t in ("read_report", "approve_suspension", "suspend", "report_actions")
    }
    assert reviewer.status == 200
    # What the person saw: every changed SIM with its asset, old -> new IMEI and time, and a choice of them.
    body, offered = reviewer.request["body"], reviewer.request["params"]["iccids"]
    for n, iccid in enumerate(sims):
        sim = sb.fleet.by_iccid[iccid]
        assert iccid in body and f"pump-{n:03d}" in body and sim.previous_imei in body and sim.normalized_imei in body
        assert sim.last_change.isoformat() in body
    assert sb.fleet.iccids[-1] not in body  # a failed query is not a finding
    assert offered["schema"]["examples"] == sims and offered["value"] == []
    assert sorted(reviewer.request["options"]) == ["Approve", "Reject"] and reviewer.request["defaults"] == ["Reject"]

    assert [sb.state.statuses.get(i) for i in sims] == ["deactivated", "active", "deactivated"]
    assert [e["iccid"] for e in sb.received("set_status")] == chosen
    assert [row["outcome"] for row in xcom(dr, "suspend")] == ["changed", "changed"]
    done = actions(report)
    assert done["decision"] == f"Approve by {REVIEWER}" and done["approved"] == chosen
    assert done["offered"] == sims and [row["iccid"] for row in done["outcomes"]] == chosen


def test_reject_suspends_nothing(sb, dags_folder, tmp_path, api):
    sims = active_sims(sb, 3)
    report = write_report(tmp_path / "night" / "imei_changes.csv", sb, sims)
    reviewer = Reviewer(api, {"chosen_options": ["Reject"], "params_input": {"iccids": sims}})
    dr = run_dag(dags_folder, report, reviewer)

    assert reviewer.status == 200
    assert states(dr)[("suspend", -1)] == "skipped" and states(dr)[("report_actions", -1)] == "success"
    assert sb.received("set_status") == [] and all(sb.state.statuses.get(i) == "active" for i in sims)
    done = actions(report)
    assert done["decision"] == f"Reject by {REVIEWER}" and done["approved"] == [] and done["outcomes"] == []


def test_no_answer_before_the_timeout_suspends_nothing(sb, dags_folder, tmp_path, api):
    """
    A request past its deadline resolves to the default (Reject). On Airflow 3.3 the scheduler's sweep does
    it, and ``dag.test()`` runs no scheduler, so the test sweeps as the scheduler does; before 3.3 the HITL
    trigger itself applies the timeout.
    """
    from airflow_provider_m2m.utils.version_compat import AIRFLOW_V_3_3_PLUS

    sims = active_sims(sb, 2)
    report = write_report(tmp_path / "night" / "imei_changes.csv", sb, sims)
    source = DAG_FILE.read_text().replace("dt.timedelta(hours=12)", "dt.timedelta(seconds=1)")
    assert source != DAG_FILE.read_text()
    reviewer = Reviewer(api, None)

    finished, failures = threading.Event(), []

    def sweep_like_the_scheduler() -> None:
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

        while not finished.wait(0.5):
            try:
                SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()
            except Exception as exc:  # reported by the test on the main thread
                failures.append(exc)
                return

    sweeper = threading.Thread(target=sweep_like_the_scheduler, daemon=True)
    if AIRFLOW_V_3_3_PLUS:
        sweeper.start()
    try:
        dr = run_dag(dags_folder, report, reviewer, source)
    finally:
        finished.set()
        if sweeper.is_alive():
            sweeper.join(5)
    assert failures == []

    assert reviewer.request is not None  # the request was there, and nobody answered it
    assert states(dr)[("suspend", -1)] == "skipped" and states(dr)[("report_actions", -1)] == "success"
    assert sb.received() == [] and all(sb.state.statuses.get(i) == "active" for i in sims)
    done = actions(report)
    assert done["decision"] == "no answer before the timeout: nothing suspended" and done["approved"] == []


def test_a_night_without_changes_asks_nobody_and_suspends_nothing(sb, dags_folder, tmp_path, api):
    report = write_report(tmp_path / "night" / "imei_changes.csv", sb, [])
    reviewer = Reviewer(api, None, timeout=0)
    dr = run_dag(dags_folder, report, reviewer)
    assert set(states(dr).values()) == {"success"}
    assert sb.received() == []
    assert actions(report)["decision"] == "nothing to decide: no SIM changed device"


def test_at_most_max_offered_sims_are_offered_and_the_rest_listed(sb, dags_folder, tmp_path, api, capfd):
    """Past ``max_offered`` the SIMs are not offered: listed under ``not_offered``, with a warning, never suspended."""
    sims = active_sims(sb, 3)
    report = write_report(tmp_path / "night" / "imei_changes.csv", sb, sims)
    source = DAG_FILE.read_text().replace("max_offered=200", "max_offered=2")
    assert source != DAG_FILE.read_text()
    reviewer = Reviewer(api, {"chosen_options": ["Approve"], "params_input": {"iccids": sims}})  # asks for all 3
    dr = run_dag(dags_folder, report, reviewer, source)

    assert reviewer.request["params"]["iccids"]["schema"]["examples"] == sims[:2]
    assert sims[2] not in reviewer.request["body"]
    assert xcom(dr, "approve_suspension", key="not_offered") == [sims[2]]
    assert [e["iccid"] for e in sb.received("set_status")] == sims[:2]  # an unoffered SIM cannot be approved
    assert sb.state.statuses.get(sims[2]) == "active"
    done = actions(report)
    assert done["offered"] == sims[:2] and done["not_offered"] == [sims[2]] and done["approved"] == sims[:2]
    out = capfd.readouterr()  # task logs go through structlog to stdout
    assert "3 SIMs listed, only the first 2 offered (max_offered)" in out.out + out.err


@pytest.mark.parametrize("value", [0, 1001, "many"])
def test_max_offered_is_checked_before_anyone_is_asked(value):
    from airflow_provider_m2m.operators.approval import ApproveSimsOperator
    from airflow_provider_m2m.utils.version_compat import AirflowFailException

    op = ApproveSimsOperator(task_id="a", sims=[{"iccid": "8925401000000000001"}], subject="s", max_offered=value)
    with pytest.raises(AirflowFailException, match=r"^max_offered: must be an integer from 1 to 1000"):
        op.execute({"ti": None})


def test_dags_test_of_the_approval_fails_at_once(sb, dags_folder, tmp_path, airflow_db):
    """
    ``airflow dags test`` (the real CLI, in its own process, without this module's fixture) fails the approval
    step at once, saying how to try it; nothing is asked, approved or suspended.
    """
    import os
    import subprocess
    import sys

    sims = active_sims(sb, 2)
    report = write_report(tmp_path / "night" / "imei_changes.csv", sb, sims)
    load_dag(dags_folder, DAG_FILE.read_text(), DAG_ID)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "-c", json.dumps({"report_csv": report})],
        capture_output=True,
        text=True,
        timeout=240,
        env=os.environ,
    )
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert "cannot ask a person under `airflow dags test`" in output, output[-3000:]
    assert "`airflow standalone`" in output and "a triggerer" in output
    assert took < 120, took  # at once: no waiting for an answer nobody can give
    assert sb.received("set_status") == [] and all(sb.state.statuses.get(i) == "active" for i in sims)
    assert json.loads(Path(report.removeprefix("file://")).with_name("quarantine_actions.json").read_text())[
        "outcomes"
    ] == []
