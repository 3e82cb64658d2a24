"""
The Airflow UI as a new user meets it, in a real browser (headless Chromium) against a real Airflow.

In order, sharing one logged-in tab: create ``m2m_default`` and ``daraja_default`` through the connection form,
pointing at the session sandbox; trigger ``sms_notification_run`` from its trigger form (three ICCIDs, dry run off)
and check the sandbox received exactly those three messages; trigger it with a character outside the GSM 7-bit
alphabet and check the run fails with the validation message in the task log and nothing reaches the sandbox; look
at the screening run's trigger form.
Screenshots of the forms go to the folder printed at the end of the session.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

DAG_ID = "sms_notification_run"
GROUP = "notify"  # the DAG's SmsRun task group: its task ids are "notify.<task>"
SEND_TEXT = "UI test: your tracker gets a new firmware tonight at 22:00. Reply STOP to opt out."
# U+2019, the apostrophe a word processor puts in "We'll": outside the GSM 7-bit alphabet.
NON_GSM_TEXT = "We\u2019ll update your tracker tonight."
NON_GSM_ERROR = (
    "Nothing sent: message_text: character '\u2019' (U+2019) at position 2 is not in the GSM 7-bit default alphabet"
)
RUN_TIMEOUT = 150  # s; a run takes about 20 s here


def sms_target_iccids(fleet, count: int = 3) -> list[str]:
    """
    The SIMs the SMS run test sends to: ordinary SIMs of the sandbox fleet (past the fixed edge cases 0-6).

    The one place to change if the sandbox's delivery model makes messages to some SIMs stay pending or fail.
    """
    return [sim.iccid for sim in fleet.sims[10 : 10 + count]]


# ---------------------------------------------------------------------- 1. the connection forms


def _open_connection_form(page: Page, conn_id: str, type_name: str):
    page.goto("/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name="Add Connection")).to_be_visible()
    dialog.get_by_label("Connection ID").fill(conn_id)
    dialog.get_by_label("Connection Type").fill(type_name)  # the type picker filters as one types
    page.get_by_role("option", name=type_name, exact=True).click()
    expect(dialog.get_by_text("Standard Fields", exact=True)).to_be_visible()
    return dialog


def _expect_standard_fields(dialog, fields: dict[str, str]) -> None:
    """The relabelled standard fields are shown with their placeholders; the generic ones are not."""
    for label, placeholder in fields.items():
        field = dialog.get_by_label(label, exact=True)
        expect(field).to_be_visible()
        expect(field).to_have_attribute("placeholder", placeholder)
    for generic in ("Host", "Login", "Password", "Port", "Schema"):
        expect(dialog.get_by_label(generic, exact=True)).to_have_count(0)


def _expect_extra_fields(dialog, labels: list[str]) -> None:
    dialog.get_by_text("Extra Fields", exact=True).click()
    for label in labels:
        expect(dialog.locator("label").filter(has_text=label).first).to_be_visible()


def _fill_secret(field, value: str) -> None:
    """Fill a password field; a failure's message (Playwright's call log echoes ``fill("...")``) never holds it."""
    try:
        field.fill(value)
    except PlaywrightError as exc:
        raise AssertionError(str(exc).replace(value, "***")) from None


def _save_connection(page: Page, dialog, conn_id: str) -> None:
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_text(conn_id, exact=True)).to_be_visible()


def _stored_connection(airflow_server, conn_id: str) -> dict:
    status, body = airflow_server.api("GET", f"/api/v2/connections/{conn_id}")
    assert status == 200, f"{conn_id} was not stored: HTTP {status}"
    return body


def test_m2m_connection_form(page, airflow_server, sandbox, screenshots):
    creds = sandbox.credentials
    dialog = _open_connection_form(page, "m2m_default", "SIM Insight M2M")
    _expect_standard_fields(
        dialog,
        {
            "Base URL": "https://api.m2miportal.com",
            "API username": "SIM Insight API username",
            "API password": "SIM Insight API password",
        },
    )
    password = dialog.get_by_label("API password", exact=True)
    expect(password).to_have_attribute("type", "password")  # masked, also in the screenshots
    dialog.get_by_label("Base URL", exact=True).fill(sandbox.url)
    dialog.get_by_label("API username", exact=True).fill(creds["m2m_username"])
    _fill_secret(password, creds["m2m_password"])
    page.screenshot(path=screenshots / "01-m2m-connection-standard-fields.png")

    _expect_extra_fields(dialog, ["API ID", "Timeout (s)", "Verify TLS", "Max requests per second", "Test ICCID"])
    api_id = dialog.locator("#element_api_id")
    expect(api_id).to_be_visible()
    expect(dialog.get_by_text("This field is required")).to_be_visible()  # API ID is required
    api_id.fill(creds["m2m_api_id"])
    expect(dialog.get_by_text("This field is required")).to_have_count(0)
    expect(dialog.get_by_role("spinbutton", name="Timeout (s)")).to_have_value("30")
    expect(dialog.get_by_role("checkbox", name="Verify TLS")).to_be_checked()
    page.screenshot(path=screenshots / "02-m2m-connection-extra-fields.png")
    _save_connection(page, dialog, "m2m_default")

    stored = _stored_connection(airflow_server, "m2m_default")
    assert (stored["conn_type"], stored["host"], stored["login"]) == ("m2m", sandbox.url, creds["m2m_username"])
    extra = json.loads(stored["extra"])
    assert extra["api_id"] == creds["m2m_api_id"], extra
    assert extra["timeout"] == 30, extra


def test_daraja_connection_form(page, airflow_server, sandbox, screenshots):
    creds = sandbox.credentials
    dialog = _open_connection_form(page, "daraja_default", "Safaricom Daraja")
    _expect_standard_fields(
        dialog,
        {
            "Base URL": "https://sandbox.safaricom.co.ke or https://api.safaricom.co.ke",
            "Consumer key": "Daraja app consumer key",
            "Consumer secret": "Daraja app consumer secret",
        },
    )
    secret = dialog.get_by_label("Consumer secret", exact=True)
    expect(secret).to_have_attribute("type", "password")
    dialog.get_by_label("Base URL", exact=True).fill(sandbox.url)
    dialog.get_by_label("Consumer key", exact=True).fill(creds["daraja_key"])
    _fill_secret(secret, creds["daraja_secret"])
    _expect_extra_fields(dialog, ["Timeout (s)", "Max requests per second"])
    expect(dialog.locator("#element_api_id")).to_have_count(0)  # a SIM Insight field only
    page.screenshot(path=screenshots / "03-daraja-connection.png")
    _save_connection(page, dialog, "daraja_default")

    stored = _stored_connection(airflow_server, "daraja_default")
    assert (stored["conn_type"], stored["host"], stored["login"]) == ("daraja", sandbox.url, creds["daraja_key"])


# ---------------------------------------------------------------------- 2, 3. the SMS run's trigger form

# The form's fields as the user reads them, in order (fields added later may sit anywhere between them).
SMS_PARAM_TITLES = [
    "ICCIDs",
    "Fleet file (optional)",
    "Message",
    "Data coding",
    "Dry run",
    "SIMs per batch",
    "Report folder",
]
SCREENING_PARAM_TITLES = ["Phone numbers", "Window (days)"]


def _run_ids(airflow_server) -> set[str]:
    status, body = airflow_server.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")
    assert status == 200, body
    return {run["dag_run_id"] for run in body["dag_runs"]}


def _open_trigger_form(page: Page, dag_id: str, titles: list[str]):
    """Open a DAG's trigger form; check its fields' titles are shown, in this order."""
    page.goto(f"/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name=f"Trigger Dag - {dag_id}")).to_be_visible()
    expect(dialog.get_by_text("Run Parameters", exact=True)).to_be_visible()
    for title in titles:
        expect(dialog.locator("label").filter(has_text=title).first).to_be_visible()
    labels = [text.strip(" *\n") for text in dialog.locator("label").all_inner_texts()]
    assert [label for label in labels if label in titles] == titles, f"the form's labels, in order: {labels}"
    return dialog


def _trigger_sms_run(page: Page, airflow_server, iccids: list[str], message: str, screenshots=None) -> dict:
    """Fill the trigger form as a user would (dry run off), trigger, and return the new run (from the API)."""
    before = _run_ids(airflow_server)
    dialog = _open_trigger_form(page, DAG_ID, SMS_PARAM_TITLES)
    expect(dialog.get_by_text("Turn it off to send the SMS.")).to_be_visible()
    if screenshots:
        page.screenshot(path=screenshots / "04-sms-trigger-form-defaults.png")

    dialog.locator("#element_iccids").fill("\n".join(iccids))
    dialog.locator("#element_message_text").fill(message)
    dry_run = dialog.locator("[name=element_dry_run]")
    expect(dry_run).to_be_checked()  # dry run is the default: a real send takes a deliberate click
    dialog.locator('[id="switch:element_dry_run"]').click()
    expect(dry_run).not_to_be_checked()
    status, dag = airflow_server.api("GET", f"/api/v2/dags/{DAG_ID}")
    if dag["is_paused"]:  # new DAGs start paused: the form offers to unpause, ticked
        expect(dialog.get_by_label(f"Unpause {DAG_ID} on trigger")).to_be_checked()
    if screenshots:
        page.screenshot(path=screenshots / "05-sms-trigger-form-filled.png")
    dialog.get_by_role("button", name="Trigger").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_text("Dag Run Triggered").first).to_be_visible()  # the toast (drawn twice while it enters)

    new = airflow_server.wait_until(lambda: _run_ids(airflow_server) - before, 30, "the triggered run")
    assert len(new) == 1, new
    (run_id,) = new
    status, run = airflow_server.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")
    assert status == 200, run
    conf = run["conf"]
    assert (conf["iccids"], conf["message_text"], conf["dry_run"]) == (iccids, message, False), conf
    return run


def _finished_run(airflow_server, run_id: str) -> dict:
    """Poll the API until the run is no longer queued or running."""

    def finished():
        status, run = airflow_server.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")
        return run if status == 200 and run["state"] in ("success", "failed") else None

    return airflow_server.wait_until(finished, RUN_TIMEOUT, f"run {run_id} to finish", interval=1)


def _task_states(airflow_server, run_id: str) -> dict[str, str]:
    status, body = airflow_server.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances")
    assert status == 200, body
    return {
        ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
        for ti in body["task_instances"]
    }


def _expect_run_state_in_ui(page: Page, run_id: str, state: str) -> None:
    page.goto(f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
    header = page.get_by_role("heading", name=run_id, exact=True).locator("xpath=..")
    expect(header.get_by_test_id("state-badge")).to_have_text(state)


def test_sms_run_from_trigger_form_sends_three_messages(page, airflow_server, sandbox, screenshots):
    _stored_connection(airflow_server, "m2m_default")  # made through the form by test_m2m_connection_form
    iccids = sms_target_iccids(sandbox.fleet)
    sandbox.reset()
    started = time.monotonic()
    run = _trigger_sms_run(page, airflow_server, iccids, SEND_TEXT, screenshots)
    run = _finished_run(airflow_server, run["dag_run_id"])
    states = _task_states(airflow_server, run["dag_run_id"])
    assert run["state"] == "success", f"run {run['dag_run_id']} {run['state']}: {states}"
    print(f"run {run['dag_run_id']} succeeded in {time.monotonic() - started:.0f} s: {states}")
    _expect_run_state_in_ui(page, run["dag_run_id"], "Success")
    page.screenshot(path=screenshots / "06-sms-run-succeeded.png")

    sent = sandbox.received("send_sms")
    assert len(sent) == 3, f"{len(sent)} send_sms requests: {[(e['iccid'], e['status']) for e in sent]}"
    assert sorted(e["iccid"] for e in sent) == sorted(iccids)
    assert [e["message_text"] for e in sent] == [SEND_TEXT] * 3
    assert [e["status"] for e in sent] == [200] * 3


def test_non_gsm_message_fails_before_sending(page, airflow_server, sandbox, screenshots):
    iccids = sms_target_iccids(sandbox.fleet)
    sandbox.reset()
    run = _trigger_sms_run(page, airflow_server, iccids, NON_GSM_TEXT)
    run = _finished_run(airflow_server, run["dag_run_id"])
    states = _task_states(airflow_server, run["dag_run_id"])
    assert run["state"] == "failed", f"run {run['dag_run_id']} {run['state']}: {states}"
    assert states[f"{GROUP}.validate_and_plan"] == "failed", states
    sent = [task for task, state in states.items() if task.startswith(f"{GROUP}.send_sms") and state == "success"]
    assert not sent, states

    # The task log, as the UI shows it, names the field, the character and the rule. The log view does not wrap
    # long lines by default (this one runs past the panel's edge): turn wrapping on, as a reader would.
    page.goto(f"/dags/{DAG_ID}/runs/{quote(run['dag_run_id'], safe='')}/tasks/{GROUP}.validate_and_plan")
    message = page.get_by_text(NON_GSM_ERROR).first
    expect(message).to_be_visible()
    page.get_by_role("button", name="Log Settings").click()
    page.get_by_role("menuitem", name="Wrap").click()
    expect(message).to_be_in_viewport(ratio=1)
    page.screenshot(path=screenshots / "07-non-gsm-message-task-log.png")

    assert sandbox.received() == [], "the sandbox received requests although the message was invalid"


def test_sim_swap_screening_trigger_form(page, screenshots):
    dialog = _open_trigger_form(page, "sim_swap_screening", SCREENING_PARAM_TITLES)
    expect(dialog.locator("#element_msisdns")).to_have_value(re.compile(r"^254\d{9}\n"))
    expect(dialog.locator("[name=element_within_days]")).to_have_value("30")  # a number field: name, not id
    page.screenshot(path=screenshots / "08-sim-swap-screening-trigger-form.png")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
