"""
The fleet plan (``airflow_provider_m2m.fleet_audit.plan``) on ``file://`` storage: XCom O(batches), every SIM in
exactly one sorted batch file, and the duplicate check that streams (a k-way merge, not a set of the fleet).
"""

from __future__ import annotations

import csv
import datetime as dt
import gc
import random
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.fleet_audit import plan as plan_module
from airflow_provider_m2m.fleet_audit.plan import batch_uris, night_folder, plan_fleet, plan_size
from airflow_provider_m2m.utils import files

NIGHT = dt.date(2026, 3, 1)


def _fleet(path: Path, iccids: list[str]) -> str:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iccid", "asset_name", "expected_imei"])
        writer.writerows([iccid, f"truck-{n}", ""] for n, iccid in enumerate(iccids))
    return path.as_uri()


def _iccids(count: int, seed: int = 1) -> list[str]:
    return [f"89254{n:014d}" for n in random.Random(seed).sample(range(10**13), count)]


def _rows(uri: str) -> list[dict[str, str]]:
    return list(files.read_csv(uri))


def test_the_plan_of_1000_batches_is_small_and_lists_every_sim_once(tmp_path):
    """100,000 SIMs in 1,000 batches: under 64 kB of XCom; each SIM in exactly one batch file, sorted, with its row."""
    iccids = _iccids(100_000)
    plan = plan_fleet(_fleet(tmp_path / "fleet.csv", iccids), tmp_path.as_uri(), NIGHT, 100)

    assert len(plan) == 1000 and plan_size(plan) < 64 * 1024, plan_size(plan)
    assert [item["batch"] for item in plan] == list(range(1000))
    seen: Counter[str] = Counter()
    names = {iccid: f"truck-{n}" for n, iccid in enumerate(iccids)}
    folder = night_folder(tmp_path.as_uri(), NIGHT)
    for item in plan:
        rows = _rows(batch_uris(folder, item["batch"])["iccids_uri"])
        assert len(rows) == item["sims"] == 100
        assert [r["iccid"] for r in rows] == sorted(r["iccid"] for r in rows)  # the report joins them as they are
        assert all(names[r["iccid"]] == r["asset_name"] for r in rows)  # the fleet file's columns go along
        seen.update(r["iccid"] for r in rows)
    assert seen == Counter(iccids)  # every SIM exactly once across the batch files
    assert not list((tmp_path / "fleet_imei_change_report" / f"{NIGHT}" / "work").glob("*"))  # merges removed


@pytest.mark.parametrize(("first", "second"), [(3, 48), (17, 20)], ids=["across batches", "within a batch"])
def test_an_iccid_listed_twice_names_the_file_both_lines_and_the_rule(tmp_path, monkeypatch, first, second):
    """The merge of the sorted runs finds the duplicate (runs of 5, in rounds of 2); the error names both lines."""
    monkeypatch.setattr(plan_module, "RUN_ROWS", 5)
    monkeypatch.setattr(plan_module, "MAX_OPEN_RUNS", 2)
    iccids = _iccids(60)
    iccids[second - 2] = iccids[first - 2]  # the header is line 1
    fleet = _fleet(tmp_path / "fleet.csv", iccids)
    with pytest.raises(InvalidRequestError) as info:
        plan_fleet(fleet, tmp_path.as_uri(), NIGHT, 7)
    assert str(info.value) == (
        f"fleet file {fleet} line {second}: iccid {iccids[first - 2]} is listed twice (first on line {first}): "
        "each SIM must appear once"
    )
    assert not list((tmp_path / "fleet_imei_change_report" / f"{NIGHT}" / "work").glob("*"))


@pytest.mark.parametrize("bad", ["listed twice", "not an iccid"])
def test_a_bad_row_after_blank_lines_and_a_cell_over_two_lines_is_named_by_its_line_in_the_file(tmp_path, bad):
    """Blank lines are skipped but counted, and a quoted cell's line break too: the line an editor shows."""
    a, b, c = _iccids(3, seed=9)
    fleet = tmp_path / "fleet.csv"
    last = a if bad == "listed twice" else "89254010000000000O1"
    fleet.write_text(f'iccid,asset_name\n{a},truck-1\n\n , \n{b},"bay 2\nrow 3"\n{c},truck-3\n\n{last},truck-4\n')
    with pytest.raises(InvalidRequestError) as info:
        plan_fleet(fleet.as_uri(), tmp_path.as_uri(), NIGHT, 7)
    rule = f"iccid {a} is listed twice (first on line 2): each SIM must appear once"
    if bad == "not an iccid":
        rule = f"iccid {last!r}: must be 18 to 22 digits"
    assert str(info.value) == f"fleet file {fleet.as_uri()} line 9: {rule}"


def test_the_merge_streams_in_rounds_and_keeps_key_order(tmp_path, monkeypatch):
    """More sorted files than FAN_IN: merged in rounds into one sorted stream; its own files are deleted after."""
    monkeypatch.setattr(files, "FAN_IN", 3)
    rng = random.Random(3)
    values = [f"{n:06d}" for n in rng.sample(range(10**6), 500)]
    uris = []
    for n in range(10):
        uri = (tmp_path / f"in-{n}.csv").as_uri()
        files.write_csv(uri, ["iccid"], ({"iccid": v} for v in sorted(values[n::10])))
        uris.append(uri)
    merged = [row["iccid"] for row in files.merged_csv(uris, (tmp_path / "work").as_uri(), ["iccid"])]
    assert merged == sorted(values)
    assert not list((tmp_path / "work").glob("*")) and all(Path(u[7:]).exists() for u in uris)


def test_a_fleet_file_without_an_iccid_column_fails_on_its_header_line(tmp_path):
    """The audit's plan says what QueryImeiOperator(iccids_uri=...) says of the same file: line 1, the header."""
    fleet = tmp_path / "fleet.csv"
    fleet.write_text("sim,asset_name\n8925401000000000001,truck-1\n")
    with pytest.raises(InvalidRequestError) as info:
        plan_fleet(fleet.as_uri(), tmp_path.as_uri(), NIGHT, 7)
    assert str(info.value) == f"fleet file {fleet.as_uri()} line 1: the header has no iccid column (got sim,asset_name)"


def test_a_fleet_file_may_name_its_iccid_column_in_capitals(tmp_path):
    """``ICCID`` (any case) is the iccid column; the batch files carry it as ``iccid``, other columns as they are."""
    iccids = _iccids(10)
    fleet = tmp_path / "fleet.csv"
    fleet.write_text("ICCID,Asset_Name\n" + "".join(f"{iccid},truck-{n}\n" for n, iccid in enumerate(iccids)))
    plan = plan_fleet(fleet.as_uri(), tmp_path.as_uri(), NIGHT, 100)
    rows = _rows(batch_uris(night_folder(tmp_path.as_uri(), NIGHT), 0)["iccids_uri"])
    assert plan == [{"batch": 0, "sims": 10}]
    assert sorted(r["iccid"] for r in rows) == sorted(iccids) and {r["Asset_Name"][:6] for r in rows} == {"truck-"}


def test_the_automatic_plan_reads_the_fleet_once_and_cuts_sorted_ranges(tmp_path, monkeypatch):
    """batch_size None: sized from the count of the one read; runs merged in rounds; batches are ICCID ranges."""
    monkeypatch.setattr(plan_module, "RUN_ROWS", 40)  # 1,001 rows: 26 runs,
    monkeypatch.setattr(plan_module, "MAX_OPEN_RUNS", 4)  # merged in rounds
    iccids = _iccids(1001, seed=5)
    fleet = _fleet(tmp_path / "fleet.csv", iccids)
    opened: list[str] = []
    real_read = plan_module.read_fleet_lines
    monkeypatch.setattr(plan_module, "read_fleet_lines", lambda uri: opened.append(str(uri)) or real_read(uri))

    plan = plan_fleet(fleet, tmp_path.as_uri(), NIGHT, None, pool_slots=4)

    assert opened.count(fleet) == 1  # one read of the fleet file, the count included
    assert plan == [{"batch": n, "sims": sims} for n, sims in enumerate([251, 251, 251, 248])]  # batch_size_for
    folder = night_folder(tmp_path.as_uri(), NIGHT)
    cut = [[r["iccid"] for r in _rows(batch_uris(folder, item["batch"])["iccids_uri"])] for item in plan]
    assert sum(cut, []) == sorted(iccids)  # each sorted, one range after the other: every SIM once
    names = {iccid: f"truck-{n}" for n, iccid in enumerate(iccids)}
    assert all(names[r["iccid"]] == r["asset_name"] for r in _rows(batch_uris(folder, 2)["iccids_uri"]))


def test_the_report_reads_range_batches_in_order_and_merges_any_others(tmp_path):
    """audit_night gives the same report whether the batches come as the plan's ranges or shuffled (merged then)."""
    from airflow_provider_m2m.fleet_audit.plan import audit_folder
    from airflow_provider_m2m.fleet_audit.state import QUERY_COLUMNS, audit_night

    iccids = _iccids(700, seed=9)
    plan = plan_fleet(_fleet(tmp_path / "fleet.csv", iccids), tmp_path.as_uri(), NIGHT, 100)
    folder = night_folder(tmp_path.as_uri(), NIGHT)
    batches = []
    for item in plan:
        uris = batch_uris(folder, item["batch"])
        answers = [{"iccid": r["iccid"], "current_imei": "356938035643809"} for r in _rows(uris["iccids_uri"])[1:]]
        files.write_csv(uris["output_uri"], ("iccid", *QUERY_COLUMNS), answers)  # each batch's first: no answer
        batches.append((uris["iccids_uri"], uris["output_uri"]))
    since = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    reports = []
    for order in (batches, batches[::-1]):
        result = audit_night(batches=order, audit_folder=audit_folder(tmp_path.as_uri()), night=NIGHT, since=since)
        reports.append((_rows(result["report_csv"]), _rows(result["state"])))
        assert result["fleet_size"] == 700 and result["failed"] == 7, result
    assert reports[0] == reports[1] and len(reports[0][1]) == 693  # the report, and the state of the answered
    assert [r["iccid"] for r in reports[0][1]] == sorted(set(iccids) - set(sorted(iccids)[::100]))
    assert [r["iccid"] for r in reports[0][0] if r["status"] == "failed"] == sorted(iccids)[::100]
    assert not list((tmp_path / "fleet_imei_change_report" / f"{NIGHT}" / "work").glob("*"))


def test_files_the_audit_wrote_read_back_as_written_and_a_hand_broken_row_is_named(tmp_path):
    import gzip

    from airflow_provider_m2m.fleet_audit.rules import read_state

    uri = (tmp_path / "state.csv.gz").as_uri()
    rows = [{"iccid": "8925401000000000001", "imei": "359827041234569", "last_change": ""},
            {"iccid": "8925401000000000002", "imei": None, "last_change": "2026-03-01T00:00:00+00:00"}]  # fmt: skip
    files.write_csv(uri, ("iccid", "imei", "last_change"), rows)
    assert list(files.read_own_csv(uri)) == [{**row, "imei": row["imei"] or ""} for row in rows]
    assert [seen.imei for seen in read_state(files.read_own_csv_values(uri), uri)] == ["359827041234569", None]
    body = "iccid,imei,last_change\n8925401000000000001,359827041234569,\n\n8925401000000000002,359827041234569\n"
    # a blank line (skipped), then a short row: the second row, line 3 (the header is line 1)
    (tmp_path / "edited.csv.gz").write_bytes(gzip.compress(body.encode()))
    edited = (tmp_path / "edited.csv.gz").as_uri()
    broken = r"^audit state .*edited.csv.gz line 3: 2 cells where the header has 3$"
    with pytest.raises(InvalidRequestError, match=broken):
        list(read_state(files.read_own_csv_values(edited), edited))


def test_a_report_assembled_from_its_parts_holds_their_rows_in_order_under_one_header(tmp_path):
    """The report's parts are joined by copying their bytes: every row once, in the parts' order; a part of
    another header is refused and nothing appears at the target."""
    columns = ("iccid", "asset_name", "status")
    parts = []
    first, last = ("8925401000000000001", 'truck, "A"', "changed"), ("8925401000000000002", "", "failed")
    for n, rows in enumerate([[first], [], [last]]):
        parts.append((tmp_path / f"part-{n}.csv").as_uri())
        with files.csv_values_writer(parts[-1], columns) as write:
            for row in rows:
                write(row)
    target = (tmp_path / "report" / "imei_changes.csv").as_uri()
    files.concatenate_csv(target, parts)
    assert [tuple(row.values()) for row in files.read_own_csv(target)] == [
        ("8925401000000000001", 'truck, "A"', "changed"),
        ("8925401000000000002", "", "failed"),
    ]
    other = (tmp_path / "other.csv").as_uri()
    files.write_csv(other, ("iccid", "status"), [{"iccid": "8925401000000000003", "status": "unknown"}])
    with pytest.raises(ValueError, match=r"other.csv: its header is not the first part's"):
        files.concatenate_csv((tmp_path / "mixed.csv").as_uri(), [parts[0], other])
    assert sorted(p.name for p in tmp_path.iterdir() if "mixed" in p.name) == []


def test_the_report_checks_every_row_of_the_previous_state_again_only_if_it_changed_since_the_plan(
    tmp_path, monkeypatch
):
    """The plan reads the previous state through and leaves its fingerprint; the report, finding the same file,
    checks only its order, and a file replaced in between is checked row by row again (and refused here)."""
    import gzip

    from airflow_provider_m2m.fleet_audit import rules, state
    from airflow_provider_m2m.fleet_audit.plan import audit_folder

    iccids = sorted(_iccids(50, seed=3))
    audit = audit_folder(tmp_path.as_uri())
    previous = tmp_path / "fleet_imei_change_report" / "state" / f"{NIGHT - dt.timedelta(days=1)}.csv.gz"
    files.write_csv(previous.as_uri(), state.STATE_COLUMNS, ({"iccid": i, "imei": "356938035643809"} for i in iccids))
    plan = plan_fleet(_fleet(tmp_path / "fleet.csv", iccids), tmp_path.as_uri(), NIGHT, 25)
    folder = night_folder(tmp_path.as_uri(), NIGHT)
    batches = [tuple(batch_uris(folder, item["batch"]).values()) for item in plan]
    for input_uri, output_uri in batches:
        answers = [{"iccid": r["iccid"], "current_imei": "356938035643809"} for r in _rows(input_uri)]
        files.write_csv(output_uri, ("iccid", *state.QUERY_COLUMNS), answers)
    reads = []
    real_read_state = rules.read_state

    def read_state(*args, **kwargs):  # the diff runs with the cycle collector paused (a million rows a night)
        reads.append({**kwargs, "collecting": gc.isenabled()})
        return real_read_state(*args, **kwargs)

    monkeypatch.setattr(state, "read_state", read_state)
    since = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    result = state.audit_night(batches=batches, audit_folder=audit, night=NIGHT, since=since)
    assert reads == [{"checked": True, "start": "", "collecting": False}] and gc.isenabled()
    assert result["fleet_size"] == 50 and result["changed"] == 0

    # the same rows, but one IMEI broken by hand after the plan: another file, read with every check
    body = gzip.decompress(previous.read_bytes()).decode().replace("356938035643809", "35693803564380X", 1)
    previous.write_bytes(gzip.compress(body.encode()))
    reads.clear()
    with pytest.raises(InvalidRequestError, match=r"line 2: imei '35693803564380X': must be 15 digits or empty"):
        state.audit_night(batches=batches, audit_folder=audit, night=NIGHT, since=since)
    assert reads == [{"checked": False, "start": "", "collecting": False}] and gc.isenabled()  # resumed after failing


def test_a_state_the_audit_wrote_is_trusted_by_the_next_plan_until_someone_changes_it(tmp_path, monkeypatch):
    """A report leaves the fingerprint of the state it wrote; the next night's plan, finding the file unchanged,
    does not read it row by row, and one edited by hand since is read through again and refused."""
    import gzip

    from airflow_provider_m2m.fleet_audit import rules, state
    from airflow_provider_m2m.fleet_audit.plan import audit_folder

    iccids = sorted(_iccids(40, seed=5))
    audit, fleet = audit_folder(tmp_path.as_uri()), _fleet(tmp_path / "fleet.csv", iccids)
    reads = []
    real_read_state = rules.read_state
    monkeypatch.setattr(state, "read_state", lambda *a, **kw: reads.append(kw) or real_read_state(*a, **kw))
    since = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)

    def night(when: dt.date) -> dict:
        folder = night_folder(tmp_path.as_uri(), when)
        plan = plan_fleet(fleet, tmp_path.as_uri(), when, 15)
        batches = [tuple(batch_uris(folder, b["batch"]).values()) for b in plan]
        for input_uri, output_uri in batches:
            answers = [{"iccid": r["iccid"], "current_imei": "356938035643809"} for r in _rows(input_uri)]
            files.write_csv(output_uri, ("iccid", *state.QUERY_COLUMNS), answers)
        return state.audit_night(batches=batches, audit_folder=audit, night=when, since=since)

    first = night(NIGHT)
    written = Path(first["state"].removeprefix("file://") + state.WRITTEN)
    assert reads == [] and written.exists()  # the first night: no previous state
    assert night(NIGHT + dt.timedelta(days=1))["first_seen"] == 0
    assert reads == [{"checked": True, "start": ""}]  # the plan trusted the file; the report checked its order

    stored = Path(first["state"].removeprefix("file://"))
    body = gzip.decompress(stored.read_bytes()).decode().replace("356938035643809", "35693803564380X", 1)
    stored.write_bytes(gzip.compress(body.encode()))  # edited by hand after the audit wrote it
    reads.clear()
    with pytest.raises(InvalidRequestError, match=r"line 2: imei '35693803564380X': must be 15 digits or empty"):
        plan_fleet(fleet, tmp_path.as_uri(), NIGHT + dt.timedelta(days=1), 15)
    assert reads == [{}]  # read through, every row checked
