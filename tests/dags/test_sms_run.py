"""
SmsRun in a user's DAG, run with ``dag.test()`` against the sandbox: one message per SIM, a report with every SIM
(failures included), dry runs, bad input stopped before anything is sent, ICCIDs from another task's XCom,
``.report`` read downstream, and XCom that grows with the batches, not with the SIMs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import load_dag

NOT_IN_FLEET = "8900000000000000000"  # valid syntax, unknown to the platform: "invalid iccid"

pytestmark = pytest.mark.airflow

RUN_DAG = """
import datetime as dt
from airflow.sdk import DAG, task
from airflow_provider_m2m.sms import SmsRun

with DAG("{dag_id}", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):
    @task
    def chosen():
        return {chosen!r}

    run = SmsRun(
        group_id="notify",
        iccids={iccids},
        message_text={text!r},
        report_base_uri={base!r},
        delivery_wait=dt.timedelta(seconds={wait}),
        poke_interval=0.5,
        {extra}
    )

    @task(trigger_rule="all_done")
    def downstream(report):
        return {{"read": report["report_csv"], "outcomes": report["outcomes"]}}

    downstream(run.report)
"""


def run_sms(dags_folder, tmp_path: Path, dag_id: str, iccids=None, *, chosen=None, text="Service tonight",
            wait=30, extra=""):  # fmt: skip
    source = RUN_DAG.format(
        dag_id=dag_id,
        chosen=chosen or [],
        iccids="chosen()" if chosen else repr(iccids),
        text=text,
        base=tmp_path.as_uri(),
        wait=wait,
        extra=extra,
    )
    dag = load_dag(dags_folder, source, dag_id)
    return dag.test()


def states(dag_run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def report_rows(tmp_path: Path) -> list[dict[str, str]]:
    (path,) = tmp_path.rglob("outcomes.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def xcom(dag_run, task_id: str, map_index: int = -1):
    (ti,) = [ti for ti in dag_run.get_task_instances() if (ti.task_id, ti.map_index) == (task_id, map_index)]
    return ti.xcom_pull(task_ids=task_id, map_indexes=map_index)


def xcom_bytes(dag_run) -> int:
    """Bytes of every XCom of the run in the metadata DB (the xcom table), all tasks together."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        query = select(func.sum(func.length(XComModel.value))).where(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id
        )
        return int(session.scalar(query) or 0)


def test_each_sim_gets_one_message_and_the_report_has_every_sim_failures_included(sb, dags_folder, tmp_path):
    sb.configure(sms_delivery_delay=0)
    delivered, failed = sb.fleet.with_sms_fate("delivered")[:5], sb.fleet.with_sms_fate("failed")[:2]
    iccids = [*delivered[:2], NOT_IN_FLEET, *delivered[2:], *failed]
    dr = run_sms(dags_folder, tmp_path, "sms_run_refused", iccids, extra="batch_size=3,")
    st = states(dr)
    # One SIM refused by the platform: its batch fails and the report, once written, fails too. (The run itself
    # succeeds here only because its last task, downstream, runs whatever happened: trigger_rule="all_done".)
    assert dr.state == "success", st
    assert [st[("notify.send_sms", i)] for i in range(3)] == ["failed", "success", "success"]
    assert st[("notify.wait_for_delivery", 0)] == "success" and st[("notify.write_report", -1)] == "failed"

    good = [i for i in iccids if i != NOT_IN_FLEET]
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(good, 1)
    assert [e["iccid"] for e in sb.received("send_sms")].count(NOT_IN_FLEET) == 1
    rows = report_rows(tmp_path)
    assert [r["iccid"] for r in rows] == iccids  # every SIM, in the order given
    by_iccid = {r["iccid"]: r for r in rows}
    assert by_iccid[NOT_IN_FLEET]["outcome"] == "failed" and "invalid iccid" in by_iccid[NOT_IN_FLEET]["error"]
    assert by_iccid[NOT_IN_FLEET]["delivery"] == ""
    assert all(by_iccid[i]["outcome"] == "success" and by_iccid[i]["sms_uid"] for i in good)
    assert [by_iccid[i]["delivery"] for i in good] == ["delivered"] * 5 + ["failed"] * 2
    assert all(by_iccid[i]["delivered_at"] for i in delivered)

    # .report is readable downstream, also when the run failed (the summary is pushed before failing).
    report = xcom(dr, "notify.write_report")
    assert report["outcomes"] == {"success": 7, "failed": 1} and report["delivery"] == {"delivered": 5, "failed": 2}
    assert report["sims"] == 8 and Path(report["report_csv"].removeprefix("file://")).exists()
    assert xcom(dr, "downstream") == {"read": report["report_csv"], "outcomes": report["outcomes"]}


def test_dry_run_sends_nothing_and_reports_every_sim(sb, dags_folder, tmp_path):
    fleet = tmp_path / "fleet.csv"
    fleet.write_text("iccid,asset_name\n" + "".join(f"{i},truck-{n}\n" for n, i in enumerate(sb.fleet.iccids[20:25])))
    listed = sb.fleet.iccids[18:21]  # two of them in the fleet file too: one message each
    extra = f"dry_run=True, fleet_uri={fleet.as_uri()!r}, batch_size=2,"
    dr = run_sms(dags_folder, tmp_path, "sms_run_dry", listed, extra=extra)
    st = states(dr)
    assert dr.state == "success", st
    assert st[("notify.send_sms", -1)] == "skipped" and st[("notify.wait_for_delivery", -1)] == "skipped"
    assert sb.stats()["requests"] == 0
    rows = report_rows(tmp_path)
    assert [(r["iccid"], r["outcome"]) for r in rows] == [(i, "dry_run") for i in sb.fleet.iccids[18:25]]
    assert xcom(dr, "notify.write_report")["outcomes"] == {"dry_run": 7}


@pytest.mark.parametrize(
    ("iccids", "text", "extra", "error"),
    [
        ('["8925401551663717897", "8925401"]', "Hello", "",
         "Nothing sent: iccids[1]: an ICCID has 18 to 22 digits, this one has 7"),
        ('["8925401551663717897"]', "We\u2019ll update tonight", "",
         "Nothing sent: message_text: character '\u2019' (U+2019) at position 2 is not in the GSM 7-bit"),
        ("None", "Hello", "fleet_uri='file:///nowhere/fleet.csv',",
         "Nothing sent: fleet_uri file:///nowhere/fleet.csv: no such file: check the URI"),
    ],
    ids=["bad-iccid", "non-gsm-text", "missing-fleet-file"],
)  # fmt: skip
def test_bad_input_fails_before_anything_is_sent(sb, dags_folder, tmp_path, capfd, iccids, text, extra, error):
    source = RUN_DAG.format(
        dag_id="sms_run_bad", chosen=[], iccids=iccids, text=text, base=tmp_path.as_uri(), wait=0, extra=extra
    )
    dr = load_dag(dags_folder, source, "sms_run_bad").test()
    st = states(dr)
    assert dr.state == "failed", st
    assert st[("notify.validate_and_plan", -1)] == "failed"
    assert st[("notify.send_sms", -1)] == "upstream_failed"
    assert sb.stats()["requests"] == 0 and sb.received() == []
    assert error in capfd.readouterr().out
    assert list(tmp_path.rglob("*.csv")) == []


def test_iccids_from_another_tasks_xcom(sb, dags_folder, tmp_path):
    sb.configure(sms_delivery_delay=0)
    chosen = sb.fleet.with_sms_fate("delivered")[10:14]
    dr = run_sms(dags_folder, tmp_path, "sms_run_xcom", chosen=chosen, text="Your tracker moved: call us")
    assert dr.state == "success", states(dr)
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(chosen, 1)
    assert {e["message_text"] for e in sb.received("send_sms")} == {"Your tracker moved: call us"}
    assert [(r["iccid"], r["outcome"], r["delivery"]) for r in report_rows(tmp_path)] == [
        (i, "success", "delivered") for i in chosen
    ]


def test_a_batch_that_never_sent_is_reported_not_attempted(sb, dags_folder, tmp_path, monkeypatch):
    conn = json.loads(sb.conn_env()["AIRFLOW_CONN_M2M_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_M2M_DEFAULT", json.dumps({**conn, "password": "not-the-password"}))
    iccids = sb.fleet.iccids[30:34]
    dr = run_sms(dags_folder, tmp_path, "sms_run_refused_login", iccids, extra="batch_size=2,")
    st = states(dr)
    assert [st[("notify.send_sms", i)] for i in range(2)] == ["failed", "failed"]
    assert st[("notify.write_report", -1)] == "failed"
    assert sb.stats()["sms_per_iccid"] == {}  # refused logins: nothing sent
    assert sb.stats()["by_command"] == {"send_sms": 2}  # one try per batch, the first SIM alone
    rows = report_rows(tmp_path)
    assert [(r["iccid"], r["outcome"]) for r in rows] == [(i, "not_attempted") for i in iccids]
    assert all("did not run" in r["error"] for r in rows)


def test_xcom_grows_with_the_batches_not_with_the_sims(sb, dags_folder, tmp_path):
    sb.configure(sms_delivery_delay=0)
    measured = {}
    for sims, name in ((100, "small"), (1000, "large")):  # names of one length: the URIs in XCom are too
        base = tmp_path / name
        dr = run_sms(
            dags_folder, base, f"sms_run_{name}", sb.fleet.iccids[:sims], wait=0, extra=f"batch_size={sims // 2},"
        )
        assert dr.state == "success", states(dr)
        assert sum(1 for r in report_rows(base) if r["outcome"] == "success") == sims
        measured[sims] = xcom_bytes(dr)
    print(f"XCom of the whole run, 2 batches: {measured[100]} bytes at 100 SIMs, {measured[1000]} at 1000")
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(sb.fleet.iccids[:1000], 1) | dict.fromkeys(
        sb.fleet.iccids[:100], 2
    )  # two runs: the first 100 SIMs got one message from each
    # 900 more SIMs add no row: only a few digits and a delivery state or two more in the counts (one byte a
    # SIM would be 900 bytes; the rows themselves are about 60 bytes a SIM).
    assert measured[1000] - measured[100] < 200, measured
    assert measured[100] < 8000, measured
