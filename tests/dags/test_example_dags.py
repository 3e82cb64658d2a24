"""
The example DAGs in ``dags/``: they parse cleanly and fast without touching connections or the DB, they
import only the public API, and each runs end to end under ``dag.test()`` against the sandbox with its
report checked against the sandbox fleet. Last, ``make demo``'s script runs and reports a match.
"""

from __future__ import annotations

import ast
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from conftest import ANCHOR, ROOT, load_dag

from airflow_provider_m2m.hooks.daraja import clear_token_cache

DAGS = ROOT / "airflow_provider_m2m" / "example_dags"
DAG_FILES = {
    "fleet_imei_change_report": DAGS / "fleet_imei_change_report.py",
    "fleet_audit_notify": DAGS / "fleet_audit_notify.py",
    "sms_notification_run": DAGS / "sms_notification_run.py",
    "sim_swap_screening": DAGS / "sim_swap_screening.py",
    "quarantine_moved_sims": DAGS / "quarantine_moved_sims.py",
    "device_replies": DAGS / "device_replies.py",
}
INTERVAL_START, INTERVAL_END = ANCHOR - dt.timedelta(days=1), ANCHOR

pytestmark = pytest.mark.airflow


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _states(dag_run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def _one(tmp_path: Path, name: str) -> Path:
    found = list(tmp_path.rglob(name))
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------------------------------------- parsing
def _dagbag(path: Path):
    from airflow_provider_m2m.sandbox.airflow_home import dag_bag

    return dag_bag(str(path))


def test_dagbag_imports_cleanly_and_fast():
    bag = _dagbag(DAGS)  # also the warm-up: Airflow and the provider are imported from here on
    assert bag.import_errors == {}
    assert set(DAG_FILES) <= set(bag.dag_ids), bag.dag_ids
    for dag_id, path in DAG_FILES.items():
        assert bag.dags[dag_id].fileloc == str(path)

    times = {}
    for dag_id, path in DAG_FILES.items():
        started = time.perf_counter()
        single = _dagbag(path)
        times[path.name] = time.perf_counter() - started
        assert single.import_errors == {} and single.dag_ids == [dag_id]
    print("parse times:", {name: f"{seconds * 1000:.0f} ms" for name, seconds in times.items()})
    assert all(seconds < 1.0 for seconds in times.values()), times


def test_parsing_touches_no_connection_and_no_db():
    """Parsing must not fetch a connection or query the metadata DB (the DAG processor parses often)."""
    from airflow.models.connection import Connection
    from airflow.sdk import BaseHook
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def refuse(*args, **kwargs):
        raise AssertionError(f"connection fetched at parse time: {args} {kwargs}")

    queries: list[str] = []

    def count(conn, cursor, statement, *args):
        queries.append(statement)

    from airflow import settings

    _dagbag(DAGS)  # warm-up, outside the check
    event.listen(Engine, "before_cursor_execute", count)
    try:
        with settings.engine.connect() as conn:  # the listener does see the metadata DB's queries
            conn.exec_driver_sql("SELECT 1")
        assert queries == ["SELECT 1"]
        queries.clear()
        with (
            mock.patch.object(BaseHook, "get_connection", side_effect=refuse) as get_connection,
            mock.patch.object(Connection, "get_connection_from_secrets", side_effect=refuse) as from_secrets,
        ):
            bag = _dagbag(DAGS)
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert bag.import_errors == {}
    assert set(DAG_FILES) <= set(bag.dag_ids)
    assert get_connection.call_count == 0 and from_secrets.call_count == 0
    assert queries == []


@pytest.mark.parametrize("path", DAG_FILES.values(), ids=DAG_FILES.keys())
def test_dag_file_imports_only_public_api(path: Path):
    allowed = ("airflow.sdk", "airflow_provider_m2m")
    private = {"airflow_provider_m2m.sandbox"}
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in ("airflow", "airflow_provider_m2m"):
                continue  # stdlib and third-party helpers are fine
            public = any(name == a or name.startswith(a + ".") for a in allowed)
            if not public or any(name == p or name.startswith(p + ".") for p in private):
                bad.append(f"line {node.lineno}: {name}")
    assert bad == [], f"{path.name} imports outside the public API: {bad}"


# ------------------------------------------------------------------------------------ fleet IMEI report
def _fleet_dag(dags_folder: Path):
    shutil.copytree(DAGS / "data", dags_folder / "data")
    return load_dag(dags_folder, DAG_FILES["fleet_imei_change_report"], "fleet_imei_change_report")


def _mismatches(fleet, cutoff: dt.datetime) -> set[str]:
    """The SIMs not in the device the inventory (the sample fleet file) lists, at the night's cutoff."""
    found = set()
    for sim in fleet.sims:
        moved_after = sim.last_change is not None and sim.last_change >= cutoff  # then in its previous device
        device = sim.previous_imei if moved_after else sim.normalized_imei
        if device and fleet.expected_imei(sim.iccid) and device != fleet.expected_imei(sim.iccid):
            found.add(sim.iccid)
    return found


def _report(tmp_path: Path) -> tuple[list[dict[str, str]], dict]:
    folder = tmp_path / "fleet_imei_change_report" / f"{INTERVAL_START:%Y-%m-%d}"
    return _rows(folder / "imei_changes.csv"), json.loads((folder / "summary.json").read_text())


def _assert_changed_rows(rows: list[dict[str, str]], sims) -> None:
    by_iccid = {row["iccid"]: row for row in rows if row["status"] == "changed"}
    assert set(by_iccid) == {sim.iccid for sim in sims}
    for sim in sims:
        row = by_iccid[sim.iccid]
        assert row["current_imei"] == sim.normalized_imei
        assert row["previous_imei"] == (sim.previous_imei or "")
        assert dt.datetime.fromisoformat(row["last_change"]) == sim.last_change
        assert (row["asset_name"], row["msisdn"]) == (sim.asset_name, sim.msisdn)
        assert row["error"] == ""


def test_fleet_report_matches_the_sandbox_fleet(sb, dags_folder, tmp_path):
    dag = _fleet_dag(dags_folder)
    dr = dag.test(logical_date=ANCHOR, run_conf={"report_base_uri": tmp_path.as_uri(), "batch_size": 300})
    states = _states(dr)
    assert dr.state == "success", states
    mapped = sorted(i for (task, i), s in states.items() if task == "imei_audit.query_imeis" and s == "success")
    assert mapped == [0, 1, 2, 3]

    rows, summary = _report(tmp_path)
    # The first audit (no state yet) takes the platform's dates: every change from the interval start to the
    # night's cutoff (its end); one at the cutoff belongs to the next night.
    expected = sb.fleet.changed_between(INTERVAL_START, INTERVAL_END)
    assert len(expected) > 50  # about 10 % of the fleet: the check below is not vacuous
    _assert_changed_rows(rows, expected)
    unknown_sims = {sim.iccid for sim in sb.fleet.sims if sim.last_change is None}
    mismatches = _mismatches(sb.fleet, INTERVAL_END)
    # The inventory's 5 and the SIM that moved at exactly the cutoff: at the cutoff it was in its previous device.
    assert mismatches == {*sb.fleet.inventory_mismatches, sb.fleet.edge_cases["interval_end"]}
    assert [row["status"] for row in rows] == (
        ["changed"] * len(expected) + ["inventory_mismatch"] * len(mismatches) + ["unknown"] * len(unknown_sims)
    )
    mismatch_rows = [row for row in rows if row["status"] == "inventory_mismatch"]
    assert [row["iccid"] for row in mismatch_rows] == sorted(mismatches)
    assert all(row["expected_imei"] != row["current_imei"] for row in mismatch_rows)
    unknown_rows = [row for row in rows if row["status"] == "unknown"]
    assert {row["iccid"] for row in unknown_rows} == unknown_sims  # listed in the report, not only in batch files
    assert all(row["current_imei"] == row["last_change"] == row["error"] == "" for row in unknown_rows)
    assert list(rows[0]) == [
        "iccid", "asset_name", "msisdn", "expected_imei", "status", "current_imei", "previous_imei", "last_change",
        "last_audited_imei", "error",
    ]  # fmt: skip

    reported = {row["iccid"] for row in rows}
    edge = sb.fleet.edge_cases
    assert {edge["interval_start"], edge["last_second"], edge["unknown"]} <= reported
    assert not {edge["just_before"], edge["never_changed"]} & reported
    # interval_end changed at exactly the cutoff: the next night's change, not this one's
    assert [row["status"] for row in rows if row["iccid"] == edge["interval_end"]] == ["inventory_mismatch"]

    assert dt.datetime.fromisoformat(summary["since"]) == INTERVAL_START
    assert dt.datetime.fromisoformat(summary["cutoff"]) == INTERVAL_END
    assert summary["night"] == f"{INTERVAL_START:%Y-%m-%d}"
    unknown = sum(1 for sim in sb.fleet.sims if sim.last_change is None)
    assert {
        k: summary[k] for k in ("fleet_size", "changed", "first_seen", "inventory_mismatch", "unknown", "failed")
    } == {
        "fleet_size": 1000,
        "changed": len(expected),
        "first_seen": 0,
        "inventory_mismatch": len(mismatches),
        "unknown": unknown,
        "failed": 0,
    }
    assert summary["missing_batches"] == []
    assert sb.stats()["by_command"] == {"query_imei": 1000}


# ------------------------------------------------------------------ nightly: SMS the SIMs that moved
@pytest.fixture
def notify(sb, dags_folder, tmp_path):
    """The fleet_audit_notify example DAG, fed the first 300 SIMs of the sandbox fleet."""
    sims = sb.fleet.sims[:300]
    fleet_file = tmp_path / "fleet.csv"
    with fleet_file.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iccid", "asset_name", "msisdn"])
        writer.writerows([sim.iccid, sim.asset_name, sim.msisdn] for sim in sims)
    shutil.copytree(DAGS / "data", dags_folder / "data")
    dag = load_dag(dags_folder, DAG_FILES["fleet_audit_notify"], "fleet_audit_notify")
    return dag, {"fleet_uri": fleet_file.as_uri(), "report_base_uri": tmp_path.as_uri()}, sims


def _moved(sims, start: dt.datetime, end: dt.datetime) -> set[str]:
    return {sim.iccid for sim in sims if sim.previous_imei and sim.last_change and start <= sim.last_change < end}


def test_notify_texts_each_moved_sim_once_scheduled_manual_and_backfill(sb, notify):
    dag, conf, sims = notify
    edge = sb.fleet.edge_cases
    day = dt.timedelta(days=1)

    # The scheduled run at ANCHOR's midnight (@daily: CronTriggerTimetable, an empty data interval).
    run = dag.test(logical_date=ANCHOR, run_conf=conf)
    assert run.state == "success", _states(run)
    first_night = _moved(sims, ANCHOR - day, ANCHOR)
    assert len(first_night) >= 10 and {edge["interval_start"], edge["last_second"]} <= first_night
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(first_night, 1)
    texts = {entry["message_text"] for entry in sb.received("send_sms")}
    assert texts == {"Your tracker's SIM moved to another device. Call us if that was not you."}

    # A manual run without a logical date, triggered the next day: the change at exactly midnight, once.
    run = dag.test(logical_date=None, run_after=ANCHOR + dt.timedelta(hours=7), run_conf=conf)
    assert run.state == "success" and run.logical_date is None, _states(run)
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(first_night | {edge["interval_end"]}, 1)

    # The next scheduled night: nothing moved since: a quiet night succeeds sending nothing.
    run = dag.test(logical_date=ANCHOR + day, run_conf=conf)
    assert run.state == "success", _states(run)
    (tell,) = [ti for ti in run.get_task_instances() if ti.task_id == "tell_drivers"]
    assert tell.state == "success" and tell.xcom_pull(task_ids="tell_drivers") == []
    assert sum(sb.stats()["sms_per_iccid"].values()) == len(first_night) + 1

    # A backfill of an earlier night in which SIMs moved (no state before it: its own first audit) texts them.
    earlier = next(end for n in range(2, 900) if _moved(sims, (end := ANCHOR - n * day) - day, end))
    run = dag.test(logical_date=earlier, run_conf=conf)
    assert run.state == "success", _states(run)
    then = _moved(sims, earlier - day, earlier)
    assert then and not then & first_night
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(first_night | {edge["interval_end"]} | then, 1)


def test_fleet_report_lists_failed_sims(sb, dags_folder, tmp_path):
    """SIMs the platform refuses (``invalid iccid``) are reported as failed, never silently dropped."""
    sims = sb.fleet.sims[:40]
    strangers = ["8925401000000000009", "8925401999999999990"]  # well-formed, not in the sandbox fleet
    assert not set(strangers) & set(sb.fleet.by_iccid)
    fleet_file = tmp_path / "fleet.csv"
    with fleet_file.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iccid", "asset_name", "msisdn"])
        writer.writerow([strangers[0], "stranger-a", ""])
        writer.writerows([sim.iccid, sim.asset_name, sim.msisdn] for sim in sims)
        writer.writerow([strangers[1], "stranger-b", ""])

    dag = _fleet_dag(dags_folder)
    conf = {"report_base_uri": tmp_path.as_uri(), "batch_size": 15, "fleet_uri": fleet_file.as_uri()}
    dr = dag.test(logical_date=ANCHOR, run_conf=conf)
    assert dr.state == "success", _states(dr)

    rows, summary = _report(tmp_path)
    failed = {row["iccid"]: row for row in rows if row["status"] == "failed"}
    assert set(failed) == set(strangers)
    assert all("invalid iccid" in row["error"] for row in failed.values()), failed
    assert {row["asset_name"] for row in failed.values()} == {"stranger-a", "stranger-b"}
    expected = [sim for sim in sims if INTERVAL_START <= (sim.last_change or INTERVAL_START - dt.timedelta(1)) < ANCHOR]
    assert {sb.fleet.edge_cases["interval_start"], sb.fleet.edge_cases["last_second"]} <= {s.iccid for s in expected}
    _assert_changed_rows(rows, expected)
    unknown = sum(1 for sim in sims if sim.last_change is None)
    assert unknown > 0
    assert [row["status"] for row in rows] == ["changed"] * len(expected) + ["unknown"] * unknown + ["failed"] * 2
    assert summary["fleet_size"] == len(sims) + 2  # every row of the fleet file is accounted for
    assert (summary["changed"], summary["unknown"], summary["failed"]) == (len(expected), unknown, 2)


# ---------------------------------------------------------------------------------------- SMS run
@pytest.fixture
def sms_dag(sb, dags_folder):
    return load_dag(dags_folder, DAG_FILES["sms_notification_run"], "sms_notification_run")


def test_sms_dry_run_sends_nothing(sb, sms_dag, tmp_path):
    dr = sms_dag.test(run_conf={"report_base_uri": tmp_path.as_uri()})
    assert dr.state == "success", _states(dr)
    assert sb.stats()["by_command"].get("send_sms", 0) == 0 and sb.received("send_sms") == []
    rows = _rows(_one(tmp_path, "outcomes.csv"))
    default = sms_dag.params["iccids"]
    assert len(default) == 2 and set(default) <= set(sb.fleet.by_iccid)
    assert [(row["iccid"], row["outcome"]) for row in rows] == [(i, "dry_run") for i in default]


def test_sms_real_run_sends_exactly_once_and_waits_for_delivery(sb, sms_dag, tmp_path):
    iccids = sb.fleet.with_sms_fate("delivered")[:2] + sb.fleet.with_sms_fate("failed")[:1]
    message = "Service notice: tracker update tonight at 23:00."
    conf = {
        "dry_run": False,
        "iccids": iccids,
        "report_base_uri": tmp_path.as_uri(),
        "message_text": message,
        "delivery_wait_minutes": 2,
    }
    dr = sms_dag.test(run_conf=conf)
    states = _states(dr)
    assert dr.state == "success", states
    assert states[("notify.wait_for_delivery", 0)] == "success"  # every message settled within the wait
    assert sb.stats()["sms_per_iccid"] == {i: 1 for i in iccids}
    rows = {row["iccid"]: row for row in _rows(_one(tmp_path, "outcomes.csv"))}
    assert set(rows) == set(iccids)
    assert all(row["outcome"] == "success" and row["sms_uid"] and not row["error"] for row in rows.values()), rows
    assert len({row["sms_uid"] for row in rows.values()}) == 3  # one uid per SIM
    sent = {entry["iccid"]: entry for entry in sb.received("send_sms")}
    assert set(sent) == set(iccids)
    for iccid in iccids:
        assert (sent[iccid]["message_text"], sent[iccid]["sms_uid"]) == (message, rows[iccid]["sms_uid"])
    assert [rows[i]["delivery"] for i in iccids] == ["delivered", "delivered", "failed"]
    assert all(rows[i]["delivered_at"] for i in iccids[:2]) and not rows[iccids[2]]["delivered_at"]


def test_sms_run_reports_messages_still_pending_when_the_wait_ends(sb, sms_dag, tmp_path):
    sb.configure(sms_delivery_delay=0)
    cases = sb.fleet.sms_edge_cases
    iccids = [cases["delivered"], cases["pending"], cases["failed"]]
    conf = {"dry_run": False, "iccids": iccids, "report_base_uri": tmp_path.as_uri(), "delivery_wait_minutes": 0}
    dr = sms_dag.test(run_conf=conf)
    states = _states(dr)
    assert dr.state == "success", states  # every SMS was accepted: a device that is off is not an error
    assert states[("notify.wait_for_delivery", 0)] == "skipped"  # the wait ended with a message pending
    rows = {row["iccid"]: row for row in _rows(_one(tmp_path, "outcomes.csv"))}
    assert [(rows[i]["outcome"], rows[i]["delivery"]) for i in iccids] == [
        ("success", "delivered"),
        ("success", "pending"),
        ("success", "failed"),
    ]
    assert rows[cases["pending"]]["delivery_status"] == "pending"


def test_sms_invalid_message_fails_before_any_request(sb, sms_dag, tmp_path):
    conf = {
        "dry_run": False,
        "iccids": sb.fleet.iccids[10:13],
        "message_text": "Price: 5 € – today",  # the en dash is not GSM 7-bit
        "report_base_uri": tmp_path.as_uri(),
    }
    dr = sms_dag.test(run_conf=conf)
    states = _states(dr)
    assert dr.state == "failed", states
    assert states[("notify.validate_and_plan", -1)] == "failed"
    assert sb.stats()["requests"] == 0 and sb.received() == []


# ------------------------------------------------------------------------------------ SIM-swap screening
@pytest.fixture
def swap_dag(sb, dags_folder):
    clear_token_cache()
    yield load_dag(dags_folder, DAG_FILES["sim_swap_screening"], "sim_swap_screening")
    clear_token_cache()


def _xcom(dag_run, task_id: str, key: str = "return_value"):
    ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id, key=key)


def test_sim_swap_screening_both_patterns(sb, swap_dag, capsys):
    """Default numbers (one swapped yesterday): the blocking screen stops the payout; per customer pays the rest."""
    cases = sb.fleet.swap_edge_cases
    dr = swap_dag.test()
    states = _states(dr)
    assert states == {
        ("screen", -1): "failed",
        ("payout", -1): "upstream_failed",
        ("screen_each", -1): "success",
        ("not_swapped", -1): "success",
        ("pay_each", -1): "success",
    }
    recent = cases["swapped_1_day_ago"]
    assert _xcom(dr, "screen", "blocked_msisdns") == ["*******" + recent[-4:]]
    paid = {cases["swapped_89_days_ago"], cases["no_swap"], cases["registration_note"]}
    assert sorted(_xcom(dr, "pay_each")) == sorted(paid)
    assert recent not in "".join(capsys.readouterr()), "numbers are masked in logs"


def test_sim_swap_screening_window(sb, swap_dag):
    """A 90-day window flags the number swapped 89 days ago as well; the payout stays blocked."""
    cases = sb.fleet.swap_edge_cases
    dr = swap_dag.test(run_conf={"within_days": 90})
    assert _states(dr)[("payout", -1)] == "upstream_failed"
    assert sorted(_xcom(dr, "screen", "blocked_msisdns")) == sorted(
        "*******" + cases[name][-4:] for name in ("swapped_1_day_ago", "swapped_89_days_ago")
    )
    assert sorted(_xcom(dr, "pay_each")) == sorted([cases["no_swap"], cases["registration_note"]])


def test_sim_swap_screening_pays_everyone_when_no_number_was_swapped(sb, swap_dag):
    cases = sb.fleet.swap_edge_cases
    numbers = ["0" + cases["no_swap"][3:], "+" + cases["registration_note"]]
    dr = swap_dag.test(run_conf={"msisdns": numbers})
    assert dr.state == "success", _states(dr)
    assert sorted(_xcom(dr, "payout")) == sorted([cases["no_swap"], cases["registration_note"]])
    assert _xcom(dr, "screen", "blocked_msisdns") is None


# ------------------------------------------------------------------------------------------ make demo
@pytest.mark.timeout(240)
def test_make_demo_script(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["M2M_DEMO_HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    report = tmp_path / "reports" / "fleet_imei_change_report" / f"{INTERVAL_START:%Y-%m-%d}"
    assert f"CSV:     {(report / 'imei_changes.csv').as_uri()}" in out
    assert "  fleet 1000 SIMs (1000 SIM Insight calls): " in out and " 0 failed" in out
    assert "check: matches the sandbox fleet's" in out
    assert (report / "summary.json").exists()
