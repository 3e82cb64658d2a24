"""
The nightly audit over time (``fleet_imei_change_report``): five nights against a sandbox whose devices change
at known moments, with a night that fails and is never rerun, a night not run at all and a night rerun after the
next one succeeded; then bad input that fails the audit before any platform call.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import pytest
from conftest import ANCHOR as TODAY
from conftest import AUDIT_ANCHOR as ANCHOR
from conftest import ROOT, load_dag
from conftest import csv_rows as _rows

from airflow_provider_m2m.sandbox import SANDBOX_CREDENTIALS

pytestmark = pytest.mark.airflow

DAY = dt.timedelta(days=1)
DAG_ID = "fleet_imei_change_report"


@pytest.fixture
def fleet_dag(dags_folder):
    shutil.copytree(ROOT / "airflow_provider_m2m" / "example_dags" / "data", dags_folder / "data")
    return load_dag(dags_folder, ROOT / "airflow_provider_m2m" / "example_dags" / f"{DAG_ID}.py", DAG_ID)


def _night(dag, sb, tmp_path: Path, fleet_file: Path, night: int, **conf):
    """Run night ``night`` (its interval: day ``night`` after ANCHOR) with the platform's clock 5 min past it."""
    end = ANCHOR + night * DAY
    sb.configure(now=end + dt.timedelta(minutes=5))
    run_conf = {"report_base_uri": tmp_path.as_uri(), "fleet_uri": fleet_file.as_uri(), "batch_size": 70, **conf}
    return dag.test(logical_date=end, run_conf=run_conf)


def _folder(tmp_path: Path, night: int) -> Path:
    return tmp_path / DAG_ID / f"{ANCHOR + (night - 1) * DAY:%Y-%m-%d}"


def test_five_nights_report_every_change_exactly_once(timeline_sandbox, fleet_dag, tmp_path, monkeypatch):
    from airflow_provider_m2m.fleet_audit import state

    joined = []  # per report: whether it joined the batches' parts (the tasks run in this process)
    real_batch_parts = state._batch_parts

    def batch_parts(*args):
        parts = real_batch_parts(*args)
        joined.append(parts is not None)
        return parts

    monkeypatch.setattr(state, "_batch_parts", batch_parts)
    sb, fleet = timeline_sandbox, timeline_sandbox.fleet
    fleet_file = fleet.write_csv(tmp_path / "fleet.csv")  # with expected_imei: 5 SIMs not where the inventory says
    reports: dict[int, list[dict[str, str]]] = {}

    assert _night(fleet_dag, sb, tmp_path, fleet_file, 1).state == "success"
    reports[1] = _rows(_folder(tmp_path, 1) / "imei_changes.csv")

    sb.configure(m2m_password="not-the-password")  # night 2 fails (the platform refuses us) and is never rerun
    failed = _night(fleet_dag, sb, tmp_path, fleet_file, 2)
    sb.configure(m2m_password=SANDBOX_CREDENTIALS["m2m_password"])
    assert failed.state == "failed"
    assert not (_folder(tmp_path, 2) / "imei_changes.csv").exists()
    assert json.loads((_folder(tmp_path, 2) / "summary.json").read_text())["complete"] is False

    assert _night(fleet_dag, sb, tmp_path, fleet_file, 3).state == "success"
    reports[3] = _rows(_folder(tmp_path, 3) / "imei_changes.csv")
    # night 4 is not run at all
    assert _night(fleet_dag, sb, tmp_path, fleet_file, 5).state == "success"
    reports[5] = _rows(_folder(tmp_path, 5) / "imei_changes.csv")

    # Night 3 rerun after night 5 succeeded, the platform answering as it did then: the same rows.
    assert _night(fleet_dag, sb, tmp_path, fleet_file, 3).state == "success"
    assert _rows(_folder(tmp_path, 3) / "imei_changes.csv") == reports[3]
    states = sorted(p.name for p in (tmp_path / DAG_ID / "state").iterdir())
    nights = [f"{ANCHOR + (n - 1) * DAY:%Y-%m-%d}.csv.gz" for n in (1, 3, 5)]  # none for the failed night
    assert states == [name + suffix for name in nights for suffix in ("", ".written.json")]  # each with its fingerprint
    assert joined == [True] * 4  # each batch diffed its own SIMs; the failed night's report stopped before
    assert not [p for p in (tmp_path / DAG_ID).rglob("parts/*/*")]  # removed with each report

    # Every change the sandbox made after the first audit's start appears in exactly one report, dated truly.
    moves = [(r["iccid"], dt.datetime.fromisoformat(r["last_change"]), n, r["status"])
             for n, rows in reports.items() for r in rows if r["status"] in ("changed", "first_seen")]  # fmt: skip
    backs = {c.iccid for c in fleet.timeline if c.label == "back"}
    truth = [c for c in fleet.timeline if not (c.iccid in backs and c.label == "move")]  # A -> B is superseded
    assert len(truth) > 25 and {c.label for c in truth} == {"move", "back", "first_sighting", "boundary", "late"}
    for change in truth:
        found = [(n, status) for iccid, at, n, status in moves if iccid == change.iccid and at == change.at]
        assert len(found) == 1, (change, found)
        assert found[0][1] == ("first_seen" if change.label == "first_sighting" else "changed"), change
    made = {(c.iccid, c.at) for c in truth}
    others = [m for m in moves if (m[0], m[1]) not in made]
    # Nothing else is reported, but for the first audit's changes of the fleet before the timeline (dated at or
    # after its interval start: the SIM that changed at exactly the anchor).
    assert others == [(fleet.edge_cases["interval_end"], ANCHOR, 1, "changed")]
    assert len({(iccid, at) for iccid, at, _, _ in moves}) == len(moves)
    night_of = {c.label: n for c in truth for iccid, at, n, _ in moves if (iccid, at) == (c.iccid, c.at)}
    assert night_of["late"] == 5  # made on day 3, recorded by the platform on day 4: the next successful night
    assert night_of["back"] == night_of["first_sighting"] == 3  # day 2: the failed night's changes, in night 3

    (back,) = [r for r in reports[3] if r["iccid"] in backs and r["status"] == "changed"]
    assert back["current_imei"] == back["last_audited_imei"] != back["previous_imei"]  # A -> B -> A: listed
    (first,) = [c for c in truth if c.label == "first_sighting"]
    assert [r["status"] for r in reports[1] if r["iccid"] == first.iccid] == ["unknown"]

    # Inventory mismatches: every night, for each SIM whose device is not the fleet file's expected_imei.
    for night, rows in reports.items():
        now = ANCHOR + night * DAY + dt.timedelta(minutes=5)
        expected = set()
        for sim in fleet.sims:
            current = fleet.as_of(sim.iccid, now).normalized_imei
            if fleet.expected_imei(sim.iccid) and current and current != fleet.expected_imei(sim.iccid):
                expected.add(sim.iccid)
        assert set(fleet.inventory_mismatches) <= expected
        assert {r["iccid"] for r in rows if r["status"] == "inventory_mismatch"} == expected, night
        summary = json.loads((_folder(tmp_path, night) / "summary.json").read_text())
        assert summary["inventory_mismatch"] == len(expected) and summary["failed"] == 0
        assert summary["fleet_size"] == len(fleet)
        assert sum(summary[s] for s in ("changed", "first_seen", "inventory_mismatch", "unknown")) == len(rows)


def test_the_asset_event_carries_the_counts(sb, fleet_dag, tmp_path):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    # A night after every change of the session sandbox (whose fleet changed up to today): no change is after
    # the night's cutoff. No other test uses it: its own asset event.
    end = TODAY + 40 * DAY
    dr = fleet_dag.test(logical_date=end, run_conf={"report_base_uri": tmp_path.as_uri(), "batch_size": 500})
    assert dr.state == "success"
    summary = json.loads((tmp_path / DAG_ID / f"{end - DAY:%Y-%m-%d}" / "summary.json").read_text())
    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        query = query.where(AssetModel.name == DAG_ID, AssetEvent.source_run_id == dr.run_id)
        (event,) = session.scalars(query).all()
        extra = event.extra
    counts = ("fleet_size", "changed", "first_seen", "inventory_mismatch", "unknown", "failed")
    assert {k: extra[k] for k in counts} == {k: summary[k] for k in counts}
    assert summary["inventory_mismatch"] == 5 and summary["fleet_size"] == 1000
    assert _mapped_batches(dr) == 2  # an explicit batch_size wins: 1,000 SIMs in batches of 500


def _mapped_batches(dr) -> int:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        query = select(func.count()).where(TaskInstance.run_id == dr.run_id)
        query = query.where(TaskInstance.task_id == "imei_audit.query_imeis")
        return session.scalar(query.where(TaskInstance.dag_id == DAG_ID))


def test_without_a_batch_size_the_batches_fill_the_pool_in_one_wave(sb, fleet_dag, tmp_path):
    end = TODAY + 50 * DAY
    conf = {"report_base_uri": tmp_path.as_uri(), "pool_slots": 3}  # the sample fleet: the sandbox's 1,000 SIMs
    dr = fleet_dag.test(logical_date=end, run_conf=conf)
    assert dr.state == "success"
    assert _mapped_batches(dr) == 3  # 334 + 334 + 332: one batch per slot, none waiting for a second wave
    summary = json.loads((tmp_path / DAG_ID / f"{end - DAY:%Y-%m-%d}" / "summary.json").read_text())
    assert summary["complete"] and summary["fleet_size"] == 1000 and summary["failed"] == 0
    assert sb.stats()["imei_queries_per_iccid"] == dict.fromkeys(sb.fleet.iccids, 1)


# ---------------------------------------------------------------------------------------------- bad input
def _fleet_lines(sb, rows: list[list[str]], tmp_path: Path) -> Path:
    path = tmp_path / "fleet.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iccid", "asset_name", "expected_imei"])
        writer.writerows(rows)
    return path


def _state_file(tmp_path: Path, night: dt.date, data: bytes) -> Path:
    path = tmp_path / DAG_ID / "state" / f"{night:%Y-%m-%d}.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _good_rows(sb) -> list[list[str]]:
    return [[sim.iccid, sim.asset_name, sim.normalized_imei or ""] for sim in sb.fleet.sims[10:14]]


@pytest.mark.parametrize("case", ["duplicate", "expected_imei", "state_not_gzip", "state_out_of_order"])
def test_bad_input_fails_the_audit_before_any_platform_call(sb, fleet_dag, tmp_path, capfd, case):
    rows = _good_rows(sb)
    end = ANCHOR + 60 * DAY
    if case == "duplicate":
        rows.insert(3, rows[1])
        where, rule = "fleet.csv line 5", f"iccid {rows[1][0]} is listed twice (first on line 3)"
    elif case == "expected_imei":
        rows[2][2] = "35982704123"
        where, rule = "fleet.csv line 4", "expected_imei: must be 15 digits (an IMEI) or 16 (an IMEISV)"
    elif case == "state_not_gzip":
        _state_file(tmp_path, (end - 3 * DAY).date(), b"iccid,imei,last_change\n")
        where, rule = f"{(end - 3 * DAY).date()}.csv.gz line 1", "must be a gzip-compressed CSV"
    else:
        body = "iccid,imei,last_change\n8925401000000000009,,\n8925401000000000001,,\n"
        _state_file(tmp_path, (end - 3 * DAY).date(), gzip.compress(body.encode()))
        where, rule = f"{(end - 3 * DAY).date()}.csv.gz line 3", "iccid 8925401000000000001 is out of order"
    fleet_file = _fleet_lines(sb, rows, tmp_path)
    capfd.readouterr()
    dr = fleet_dag.test(
        logical_date=end, run_conf={"report_base_uri": tmp_path.as_uri(), "fleet_uri": fleet_file.as_uri()}
    )
    out, err = capfd.readouterr()
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    assert dr.state == "failed" and states[("imei_audit.plan_batches", -1)] == "failed", states
    assert sb.stats()["requests"] == 0 and sb.received() == []
    message = [line for line in (out + err).splitlines() if where in line and rule in line]
    assert message, (where, rule, (out + err)[-3000:])
    assert not (tmp_path / DAG_ID / f"{end - DAY:%Y-%m-%d}" / "imei_changes.csv").exists()


# ---------------------------------------------------------------------------------------------- memory
@pytest.mark.timeout(600)
def test_the_plan_and_report_stream_memory_flat_with_fleet_size():
    """100,000 SIMs against 10,000: the plan's and the report's peak RSS grow by less than 30 MB (subprocesses)."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import fleet_plan_scale
    finally:
        sys.path.pop(0)
    small, big = fleet_plan_scale.run(10_000, two_pass=False), fleet_plan_scale.run(100_000, two_pass=False)
    for run, sims in ((small, 10_000), (big, 100_000)):
        assert (run["planned_sims"], run["fleet_size"], run["changed"]) == (sims, sims, sims // 10), run
        assert run["batches"] == sims // 1000 and run["xcom_bytes"] < 30 * run["batches"], run  # O(batches)
    assert big["plan_growth_mb"] - small["plan_growth_mb"] < 30, (small, big)
    assert big["report_growth_mb"] - small["report_growth_mb"] < 30, (small, big)
