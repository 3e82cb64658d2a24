"""
The human-in-the-loop step of ``quarantine_moved_sims`` in a real browser: a night's report with three SIMs that
moved, the approval request in the UI listing them, two of the three chosen and approved, and exactly those two
deactivated in the sandbox. Runs after test_ui.py (which creates ``m2m_default`` through the connection form).
"""

from __future__ import annotations

import csv
import shutil
from urllib.parse import quote

from playwright.sync_api import expect
from ui_airflow import ROOT

DAG_ID = "quarantine_moved_sims"
TASK_ID = "approve_suspension"
RUN_TIMEOUT = 150  # s


def _write_report(path, sandbox, iccids: list[str]) -> str:
    with path.open("w", newline="") as fh:
        out = csv.DictWriter(
            fh, ["iccid", "asset_name", "status", "current_imei", "previous_imei", "last_change", "error"]
        )
        out.writeheader()
        for n, iccid in enumerate(iccids):
            sim = sandbox.fleet.by_iccid[iccid]
            out.writerow(
                {
                    "iccid": iccid,
                    "asset_name": f"cold-store-{n + 1}",
                    "status": "changed",
                    "current_imei": sim.normalized_imei,
                    "previous_imei": sim.previous_imei,
                    "last_change": sim.last_change.isoformat() if sim.last_change else "",
                }
            )
    return path.as_uri()


def _run(airflow_server, run_id: str) -> dict:
    status, run = airflow_server.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")
    assert status == 200, run
    return run


def test_approval_in_the_ui_deactivates_exactly_the_chosen_sims(page, airflow_server, sandbox, screenshots, tmp_path):
    status, _ = airflow_server.api("GET", "/api/v2/connections/m2m_default")
    assert status == 200, "m2m_default is made through the connection form by test_ui.py, which runs first"
    sandbox.reset()
    active = sandbox.state.statuses.with_status(sandbox.fleet.iccids, "active")
    sims = [i for i in active if sandbox.fleet.by_iccid[i].previous_imei and sandbox.fleet.by_iccid[i].last_change][:3]
    report = _write_report(tmp_path / "imei_changes.csv", sandbox, sims)

    airflow_server.wait_until(lambda: airflow_server.api("GET", f"/api/v2/dags/{DAG_ID}")[0] == 200, 60, "the DAG")
    assert airflow_server.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})[0] == 200
    status, run = airflow_server.api(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"report_csv": report}}
    )
    assert status == 200, run
    run_id = run["dag_run_id"]
    hitl = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{TASK_ID}/-1/hitlDetails"
    airflow_server.wait_until(lambda: airflow_server.api("GET", hitl)[0] == 200, RUN_TIMEOUT, "the approval request")

    # The request as a person meets it: the subject, then every SIM with its asset and old -> new IMEI.
    page.goto(f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/{TASK_ID}/required_actions")
    expect(page.get_by_text("Suspend SIMs that moved to another device?").first).to_be_visible()
    for n, iccid in enumerate(sims):
        sim = sandbox.fleet.by_iccid[iccid]
        row = page.get_by_role("row").filter(has_text=iccid)
        expect(row).to_contain_text(f"cold-store-{n + 1}")
        expect(row).to_contain_text(sim.previous_imei)
        expect(row).to_contain_text(sim.normalized_imei)
    chosen = [sims[0], sims[2]]
    field = page.get_by_label("Select one or multiple values")  # the multi-select's input
    for iccid in chosen:  # type to filter, Enter takes the option
        field.click()
        page.keyboard.type(iccid)
        page.keyboard.press("Enter")
        expect(page.get_by_text(f"{iccid} / cold-store-").first).to_be_visible()
    page.keyboard.press("Escape")
    page.screenshot(path=screenshots / "09-quarantine-approval.png", full_page=True)
    shutil.copy(screenshots / "09-quarantine-approval.png", ROOT / "docs" / "quarantine_moved_sims_approval.png")
    page.get_by_role("button", name="Approve").click()

    def finished():
        run = _run(airflow_server, run_id)
        return run if run["state"] in ("success", "failed") else None

    run = airflow_server.wait_until(finished, RUN_TIMEOUT, f"run {run_id} to finish", interval=1)
    assert run["state"] == "success", run
    status, answer = airflow_server.api("GET", hitl)
    assert answer["chosen_options"] == ["Approve"] and sorted(answer["params_input"]["iccids"]) == sorted(chosen)
    assert [sandbox.state.statuses.get(i) for i in sims] == ["deactivated", "active", "deactivated"]
    assert sorted(e["iccid"] for e in sandbox.received("set_status")) == sorted(chosen)
