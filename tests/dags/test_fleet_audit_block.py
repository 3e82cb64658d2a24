"""
``FleetImeiAudit`` in a user's own DAGs (Airflow 3's plain ``@daily``, a CronTriggerTimetable): several nights
against a sandbox whose devices change at known moments; two fleets in two DAGs under one ``report_base_uri``;
``.summary`` / ``.changed_iccids`` read by the user's task; a manual run without a logical date; a rerun of an
older night after a later one, the platform answering as it does now; a missing fleet file; the pool rules.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest
from conftest import AUDIT_ANCHOR as ANCHOR
from conftest import csv_rows as _rows
from conftest import load_dag

from airflow_provider_m2m.sandbox import Fleet

pytestmark = pytest.mark.airflow

DAY = dt.timedelta(days=1)
GROUP = "imei_audit"

USER_DAGS = """
import datetime as dt

from airflow.sdk import DAG, task

from airflow_provider_m2m.fleet_audit import FleetImeiAudit

for name in ("fleet_north", "fleet_south"):
    with DAG(name, schedule="@daily", start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False,
             params={"fleet_uri": "", "report_base_uri": ""}, default_args={"retries": 2}):
        audit = FleetImeiAudit(group_id="imei_audit", fleet_uri="{{ params.fleet_uri }}",
                               report_base_uri="{{ params.report_base_uri }}", batch_size=60, pool_slots=2)

        @task
        def read(summary: dict, changed: list[str]) -> dict:
            return {"changed": changed, "count": summary["changed"], "report_csv": summary["report_csv"]}

        read(audit.summary, audit.changed_iccids)

from airflow_provider_m2m.utils.version_compat import CronDataIntervalTimetable

with DAG("interval_audit", schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
         start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False,
         params={"fleet_uri": "", "report_base_uri": ""}):
    FleetImeiAudit(group_id="imei_audit", fleet_uri="{{ params.fleet_uri }}",
                   report_base_uri="{{ params.report_base_uri }}", batch_size=100)

with DAG("two_audits", schedule="@daily", start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False,
         params={"report_base_uri": ""}):
    for group, fleet in (("north", "north.csv"), ("south", "south.csv")):
        FleetImeiAudit(group_id=group, fleet_uri="{{ params.report_base_uri }}/" + fleet,
                       report_base_uri="{{ params.report_base_uri }}", pool="m2m_platform", pool_slots=3)
"""


def _fleet_file(fleet: Fleet, sims, path: Path) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iccid", "asset_name", "expected_imei"])
        writer.writerows([s.iccid, s.asset_name, fleet.expected_imei(s.iccid) or ""] for s in sims)
    return path


@pytest.fixture
def user_dags(dags_folder):
    return {name: load_dag(dags_folder, USER_DAGS, name, "user_dags.py") for name in ("fleet_north", "fleet_south")}


def _night(dag, sb, night: int, conf: dict):
    """The ``@daily`` run at the end of day ``night`` (it covers that day), the platform 5 min past its cutoff."""
    end = ANCHOR + night * DAY
    sb.configure(now=end + dt.timedelta(minutes=5))
    return dag.test(logical_date=end, run_conf=conf)


def _folder(base: Path, dag_id: str, night: int) -> Path:
    return base / dag_id / f"{ANCHOR + (night - 1) * DAY:%Y-%m-%d}"


def _xcom(dr, task_id: str, key: str = "return_value"):
    (ti,) = [ti for ti in dr.get_task_instances() if ti.task_id == task_id]
    return ti.xcom_pull(task_ids=task_id, key=key)


def test_two_fleets_several_nights_each_change_once_read_by_the_users_task(timeline_sandbox, user_dags, tmp_path):
    sb, fleet = timeline_sandbox, timeline_sandbox.fleet
    halves = {"fleet_north": fleet.sims[:150], "fleet_south": fleet.sims[150:]}
    reports: dict[str, dict[int, list[dict[str, str]]]] = {name: {} for name in halves}
    for night in (1, 2, 3):
        for name, dag in user_dags.items():
            conf = {"fleet_uri": _fleet_file(fleet, halves[name], tmp_path / f"{name}.csv").as_uri(),
                    "report_base_uri": tmp_path.as_uri()}  # fmt: skip
            dr = _night(dag, sb, night, conf)
            assert dr.state == "success", {ti.task_id: ti.state for ti in dr.get_task_instances()}
            rows = reports[name][night] = _rows(_folder(tmp_path, name, night) / "imei_changes.csv")
            read = _xcom(dr, "read")  # the user's own task got the outputs
            changed = sorted(r["iccid"] for r in rows if r["status"] == "changed")
            assert read == {"changed": changed, "count": len(changed), "report_csv": read["report_csv"]}
            assert read["report_csv"] == (_folder(tmp_path, name, night) / "imei_changes.csv").as_uri()

    last_run = ANCHOR + 3 * DAY + dt.timedelta(minutes=5)
    backs = {c.iccid for c in fleet.timeline if c.label == "back"}
    for name, sims in halves.items():
        mine = {s.iccid for s in sims}
        seen = [(r["iccid"], dt.datetime.fromisoformat(r["last_change"]), n) for n, rows in reports[name].items()
                for r in rows if r["status"] in ("changed", "first_seen")]  # fmt: skip
        assert {iccid for iccid, _, _ in seen} <= mine  # two fleets apart: nothing of the other one
        truth = [c for c in fleet.timeline if c.iccid in mine and c.recorded < last_run and c.at < ANCHOR + 3 * DAY
                 and not (c.iccid in backs and c.label == "move")]  # fmt: skip
        assert len(truth) >= 5
        for change in truth:
            found = [n for iccid, at, n in seen if (iccid, at) == (change.iccid, change.at)]
            assert found == [(change.at - ANCHOR).days + 1], change  # the night of its day, that one only
        assert len(set(seen)) == len(seen) and len({(i, a) for i, a, _ in seen}) == len(seen)
        assert sorted(p.name for p in (tmp_path / name / "state").iterdir()) == [
            f"{ANCHOR + (n - 1) * DAY:%Y-%m-%d}.csv.gz{suffix}" for n in (1, 2, 3) for suffix in ("", ".written.json")
        ]


def test_a_rerun_of_an_older_night_reproduces_its_rows(timeline_sandbox, user_dags, tmp_path):
    sb, fleet, dag = timeline_sandbox, timeline_sandbox.fleet, user_dags["fleet_north"]
    conf = {"fleet_uri": _fleet_file(fleet, fleet.sims, tmp_path / "fleet.csv").as_uri(),
            "report_base_uri": tmp_path.as_uri()}  # fmt: skip
    for night in (1, 2, 3):
        assert _night(dag, sb, night, conf).state == "success"
    original = _rows(_folder(tmp_path, "fleet_north", 2) / "imei_changes.csv")

    # Night 2 cleared and rerun after night 3 succeeded; the platform answers as it does now (end of day 5),
    # so about 20 SIMs of night 2's fleet sit in another device than at night 2's cutoff.
    sb.configure(now=ANCHOR + 5 * DAY + dt.timedelta(hours=2))
    cutoff = ANCHOR + 2 * DAY
    moved_later = {c.iccid for c in fleet.timeline if c.at >= cutoff}
    assert len(moved_later) >= 15
    dr = dag.test(logical_date=cutoff, run_conf=conf)
    assert dr.state == "success"
    rerun = _rows(_folder(tmp_path, "fleet_north", 2) / "imei_changes.csv")

    # Every row again, in the same order; the platform keeps one previous device, so previous_imei is unknown
    # for a SIM that has moved since (its device at the cutoff, its status and its date are exact).
    assert [{k: v for k, v in r.items() if k != "previous_imei"} for r in rerun] == [
        {k: v for k, v in r.items() if k != "previous_imei"} for r in original
    ]
    assert [r for r in rerun if r["iccid"] not in moved_later] == [r for r in original if r["iccid"] not in moved_later]
    assert not {r["iccid"] for r in rerun if r["status"] == "changed"} & moved_later - {
        r["iccid"] for r in original if r["status"] == "changed"
    }
    assert _xcom(dr, "read")["changed"] == sorted(r["iccid"] for r in original if r["status"] == "changed")


def test_a_manual_run_without_a_logical_date_covers_changes_before_it_was_triggered(
    timeline_sandbox, user_dags, tmp_path
):
    sb, fleet, dag = timeline_sandbox, timeline_sandbox.fleet, user_dags["fleet_south"]
    conf = {"fleet_uri": _fleet_file(fleet, fleet.sims, tmp_path / "fleet.csv").as_uri(),
            "report_base_uri": tmp_path.as_uri()}  # fmt: skip
    triggered = ANCHOR + 2 * DAY + dt.timedelta(hours=14, minutes=30)  # day 3, mid-afternoon
    sb.configure(now=triggered + dt.timedelta(hours=6))  # the platform knows the afternoon's later moves too
    dr = dag.test(logical_date=None, run_after=triggered, run_conf=conf)
    assert dr.state == "success" and dr.logical_date is None
    summary = _xcom(dr, f"{GROUP}.build_report")
    # Its folder is named by its cutoff: the scheduled night of that date covers the changes after it.
    assert (summary["night"], summary["cutoff"]) == ("2026-03-03T143000Z", triggered.isoformat())
    rows = _rows(tmp_path / "fleet_south" / "2026-03-03T143000Z" / "imei_changes.csv")
    reported = {(r["iccid"], dt.datetime.fromisoformat(r["last_change"])) for r in rows if r["status"] == "changed"}
    # The first audit: the changes of the day before the trigger, none after it.
    expected = {(c.iccid, c.at) for c in fleet.timeline
                if triggered - DAY <= c.at < triggered and c.label != "first_sighting"}  # fmt: skip
    assert len(expected) >= 3 and reported == expected

    # XCom: the plan, a count-only summary per batch, the report's summary and (the DAG reads it) the changed list.
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(XComModel.task_id, XComModel.key, XComModel.value).where(XComModel.run_id == dr.run_id)
        rows = session.execute(query.where(XComModel.dag_id == "fleet_south")).all()
    keys = sorted({(task, key) for task, key, _ in rows if task.startswith(f"{GROUP}.")})
    assert keys == [(f"{GROUP}.build_report", "changed_iccids"), (f"{GROUP}.build_report", "return_value"),
                    (f"{GROUP}.plan_batches", "return_value"), (f"{GROUP}.query_imeis", "return_value")]  # fmt: skip
    batches = [XComModel.deserialize_value(row) for row in rows if row.task_id == f"{GROUP}.query_imeis"]
    assert len(batches) == 5 and all("changed_iccids" not in batch for batch in batches), batches
    assert any(c.at >= triggered for c in fleet.timeline if c.at < triggered + dt.timedelta(hours=6))


def test_a_missing_fleet_file_fails_at_once_naming_it(sb, user_dags, tmp_path, capfd):
    missing = (tmp_path / "nowhere" / "fleet.csv").as_uri()
    dr = user_dags["fleet_north"].test(
        logical_date=ANCHOR, run_conf={"fleet_uri": missing, "report_base_uri": tmp_path.as_uri()}
    )
    (plan,) = [ti for ti in dr.get_task_instances() if ti.task_id == f"{GROUP}.plan_batches"]
    assert dr.state == "failed" and plan.state == "failed" and plan.try_number == 1  # retries=2, not used
    out, err = capfd.readouterr()
    assert f"fleet file {missing}: no such file: check the URI" in out + err
    assert sb.stats()["requests"] == 0


def test_a_data_interval_timetable_covers_the_same_night_as_daily(timeline_sandbox, dags_folder, tmp_path):
    """
    CronDataIntervalTimetable's run of day 2 (data interval: day 2) and @daily's (empty interval at its end): one
    night. ``dag.test(logical_date=end)`` gives the former the interval a scheduled run of that night has.
    """
    sb, fleet = timeline_sandbox, timeline_sandbox.fleet
    dags = {name: load_dag(dags_folder, USER_DAGS, name, "user_dags.py") for name in ("interval_audit", "fleet_north")}
    fleet_file = _fleet_file(fleet, fleet.sims, tmp_path / "fleet.csv").as_uri()
    sb.configure(now=ANCHOR + 2 * DAY + dt.timedelta(minutes=5))
    reports = {}
    for name, dag in dags.items():
        conf = {"fleet_uri": fleet_file, "report_base_uri": (tmp_path / name).as_uri()}
        dr = dag.test(logical_date=ANCHOR + 2 * DAY, run_conf=conf)
        assert dr.state == "success"
        assert (dr.data_interval_start, dr.data_interval_end) == (
            (ANCHOR + DAY, ANCHOR + 2 * DAY) if name == "interval_audit" else (ANCHOR + 2 * DAY, ANCHOR + 2 * DAY)
        )
        reports[name] = _rows(tmp_path / name / name / f"{ANCHOR + DAY:%Y-%m-%d}" / "imei_changes.csv")
    assert reports["interval_audit"] == reports["fleet_north"]
    assert len([r for r in reports["fleet_north"] if r["status"] == "changed"]) >= 5


def test_changed_iccids_is_capped_with_a_flag_and_the_full_list_s_uri(
    timeline_sandbox, user_dags, tmp_path, monkeypatch
):
    from airflow_provider_m2m.fleet_audit import task_group

    monkeypatch.setattr(task_group, "MAX_LISTED", 3)  # the tasks run in this process under dag.test()
    sb, fleet = timeline_sandbox, timeline_sandbox.fleet
    conf = {"fleet_uri": _fleet_file(fleet, fleet.sims, tmp_path / "fleet.csv").as_uri(),
            "report_base_uri": tmp_path.as_uri()}  # fmt: skip
    dr = _night(user_dags["fleet_north"], sb, 1, conf)
    assert dr.state == "success"
    summary = _xcom(dr, f"{GROUP}.build_report")
    every = [row["iccid"] for row in _rows(Path(summary["changed_iccids_uri"].removeprefix("file://")))]
    assert summary["changed"] == len(every) > 3 and summary["changed_iccids_truncated"] is True
    assert _xcom(dr, "read")["changed"] == sorted(every)[:3]


def test_two_audits_in_one_dag_keep_their_own_folders_and_assets(sb, dags_folder, tmp_path, capfd):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = load_dag(dags_folder, USER_DAGS, "two_audits", "user_dags.py")
    _fleet_file(sb.fleet, sb.fleet.sims[:40], tmp_path / "north.csv")
    _fleet_file(sb.fleet, sb.fleet.sims[40:100], tmp_path / "south.csv")
    end = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) + 30 * DAY
    dr = dag.test(logical_date=end, run_conf={"report_base_uri": tmp_path.as_uri()})
    assert dr.state == "success"
    out, err = capfd.readouterr()  # a pool the audit cannot check: the plan says which, and how to create it
    assert "airflow pools set m2m_platform 3 'SIM Insight batches'" in out + err
    night = f"{end - DAY:%Y-%m-%d}"
    for group, size in (("north", 40), ("south", 60)):
        rows = _rows(tmp_path / "two_audits" / group / night / "imei_changes.csv")
        assert {r["iccid"] for r in rows} <= {s.iccid for s in sb.fleet.sims[:40] if group == "north"} | {
            s.iccid for s in sb.fleet.sims[40:100] if group == "south"
        }
        assert (tmp_path / "two_audits" / group / "state" / f"{night}.csv.gz").exists()
        with create_session() as session:
            query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            query = query.where(AssetModel.name == f"two_audits.{group}", AssetEvent.source_run_id == dr.run_id)
            (event,) = session.scalars(query).all()
            assert event.extra["fleet_size"] == size and event.extra["night"] == night


def test_pool_rules_at_parse_time(dags_folder):
    """No pool: the batches cap themselves at pool_slots; a pool: they also take its slots; a templated cap."""
    from airflow.sdk import DAG, Param

    from airflow_provider_m2m.exceptions import InvalidRequestError
    from airflow_provider_m2m.fleet_audit import FleetImeiAudit

    dags = {name: load_dag(dags_folder, USER_DAGS, name, "user_dags.py") for name in ("fleet_north", "two_audits")}
    query = dags["fleet_north"].get_task(f"{GROUP}.query_imeis")
    assert (query.pool, query.max_active_tis_per_dagrun) == ("default_pool", 2)  # no pool anyone must create
    pooled = dags["two_audits"].get_task("north.query_imeis")
    assert (pooled.pool, pooled.max_active_tis_per_dagrun) == ("m2m_platform", 3)

    with DAG("templated_cap", schedule=None, params={"slots": Param(6, type="integer")}) as dag:
        FleetImeiAudit(fleet_uri="f.csv", pool_slots="{{ params.slots }}")
    assert dag.get_task(f"{GROUP}.query_imeis").max_active_tis_per_dagrun == 6
    for n, bad in enumerate(("{{ params.nope }}", "{{ params.slots * 2 }}", 0)):
        with DAG(f"bad_cap_{n}", schedule=None, params={"slots": 6}), pytest.raises(InvalidRequestError) as err:
            FleetImeiAudit(fleet_uri="f.csv", pool_slots=bad)
        assert str(err.value).startswith("pool_slots: ")
