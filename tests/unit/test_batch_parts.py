"""
Each batch's share of the audit's diff (``fleet_audit.state.diff_batch``): the report joined from the batches'
parts is byte for byte the report it makes by diffing the batches itself, and a part not made from what the
report reads (another query file, another previous state, a part missing) is never used.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import logging
import random
from pathlib import Path

import pytest

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.fleet_audit import rules, state
from airflow_provider_m2m.fleet_audit.plan import audit_folder, batch_uris, night_folder, plan_fleet
from airflow_provider_m2m.utils import files

NIGHT = dt.date(2026, 3, 1)
SINCE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
CUTOFF = SINCE + dt.timedelta(days=1)
A, B = "359827041234569", "862057041234566"
EARLIER, TODAY, LATER = "2026-01-05T08:00:00+00:00", "2026-03-01T10:00:00+00:00", "2026-03-02T10:00:00+00:00"


def _night(tmp_path: Path) -> list[tuple[str, str]]:
    """
    A fleet of 600 SIMs in 6 batches, 50 SIMs of the previous state no longer in it, and answers of every kind:
    unchanged, moved today, moved after the cutoff, new to the fleet, no device, failed, no answer at all.
    """
    rng = random.Random(4)
    iccids = sorted(f"89254{n:014d}" for n in rng.sample(range(10**13), 650))
    fleet, gone = iccids[:600], set(iccids[600:])
    with (tmp_path / "fleet.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iccid", "asset_name", "expected_imei"])
        writer.writerows([i, f"truck, {n}", A if n % 7 == 0 else ""] for n, i in enumerate(rng.sample(fleet, 600)))
    kinds = {i: rng.choice(["same", "same", "moved", "later", "new", "none", "failed", "no answer"]) for i in fleet}
    previous = [{"iccid": i, "imei": A, "last_change": EARLIER} for i in iccids if i in gone or kinds[i] != "new"]
    files.write_csv(state.state_uri(audit_folder(tmp_path.as_uri()), NIGHT - dt.timedelta(days=1)),
                    state.STATE_COLUMNS, previous)  # fmt: skip
    plan = plan_fleet((tmp_path / "fleet.csv").as_uri(), tmp_path.as_uri(), NIGHT, 100)
    batches = [tuple(batch_uris(night_folder(tmp_path.as_uri(), NIGHT), b["batch"]).values()) for b in plan]
    answer = {
        "same": {"current_imei": A, "last_change": EARLIER},
        "moved": {"current_imei": B, "last_change": TODAY, "previous_imei": A},
        "later": {"current_imei": B, "last_change": LATER, "previous_imei": A},
        "new": {"current_imei": B, "last_change": TODAY},
        "none": {},
        "failed": {"error": "HTTP 503, gave up after 5 attempts"},
    }
    for input_uri, output_uri in batches:
        rows = [{"iccid": r["iccid"], **answer[kinds[r["iccid"]]]} for r in files.read_csv(input_uri)
                if kinds[r["iccid"]] != "no answer"]  # fmt: skip
        files.write_csv(output_uri, ("iccid", *state.QUERY_COLUMNS), rows)
    return batches  # type: ignore[return-value]


def _audit(tmp_path: Path, batches: list[tuple[str, str]]) -> tuple[dict, bytes, str, bytes]:
    """The report of the night; its counts, its report file, its state's text and its changed SIMs."""
    folder = audit_folder(tmp_path.as_uri())
    result = state.audit_night(batches=batches, audit_folder=folder, night=NIGHT, since=SINCE, cutoff=CUTOFF)
    read = [Path(result[key].removeprefix("file://")).read_bytes() for key in ("report_csv", "state")]
    changed = Path(result["changed_iccids_uri"].removeprefix("file://")).read_bytes()
    return result, read[0], gzip.decompress(read[1]).decode(), changed


def _diff_each(tmp_path: Path, batches: list[tuple[str, str]]) -> list[dict | None]:
    folder = audit_folder(tmp_path.as_uri())
    return [state.diff_batch(batch=b, audit_folder=folder, night=NIGHT, since=SINCE, cutoff=CUTOFF) for b in batches]


def test_the_report_joined_from_the_batches_parts_is_the_report_it_diffs_itself(tmp_path, monkeypatch, caplog):
    batches = _night(tmp_path)
    whole = _audit(tmp_path, batches)
    assert whole[0]["fleet_size"] == 600 and all(whole[0][s] for s in rules.STATUSES), whole[0]  # every kind
    starts = []
    real_read_state = rules.read_state
    monkeypatch.setattr(state, "read_state", lambda *a, **kw: starts.append(kw["start"]) or real_read_state(*a, **kw))
    counts = _diff_each(tmp_path, batches)
    # each batch read the previous state from its own first SIM on (the rows before only checked for order)
    assert starts == [next(files.read_csv(input_uri))["iccid"] for input_uri, _ in batches]
    assert sum(c["changed"] for c in counts) == whole[0]["changed"]  # type: ignore[index]
    parts = tmp_path / "fleet_imei_change_report" / f"{NIGHT}" / state.PARTS
    assert sorted(p.name for p in parts.iterdir()) == [f"batch-{n:05d}" for n in range(6)]
    starts.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=state.__name__):
        joined = _audit(tmp_path, batches)
    assert starts == []  # the report diffed nothing: it joined the parts
    assert joined[0] == {**whole[0], "previous_state": joined[0]["previous_state"]} and joined[1:] == whole[1:]
    assert joined[2].count("iccid,imei,last_change") == 1  # one header, then every part's rows
    assert not [p for p in parts.rglob("*") if p.is_file()]  # the parts are removed with the report written
    assert "diffs the batches itself" not in caplog.text


def test_a_part_not_made_from_what_the_report_reads_is_not_used(tmp_path, caplog):
    batches = _night(tmp_path)
    _diff_each(tmp_path, batches)
    # batch 3's answers asked again after its part was made: its part is stale, the report diffs every batch
    input_uri, output_uri = batches[3]
    rows = [{**row, "current_imei": B, "last_change": TODAY, "previous_imei": A} for row in files.read_csv(output_uri)]
    files.write_csv(output_uri, ("iccid", *state.QUERY_COLUMNS), rows)
    with caplog.at_level(logging.INFO, logger=state.__name__):
        result, report, _, _ = _audit(tmp_path, batches)
    assert "batch-00003 was made from other files: the report diffs the batches itself" in caplog.text
    moved = {line.split(",")[0] for line in report.decode().splitlines() if ",changed," in line}
    assert {row["iccid"] for row in rows if not row["error"]} <= moved  # the new answers, not the part's

    # the next night's batches diffed before one of them wrote its part: the report does it all
    (tmp_path / "again").mkdir()
    batches = _night(tmp_path / "again")
    _diff_each(tmp_path / "again", batches[:-1])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=state.__name__):
        assert _audit(tmp_path / "again", batches)[0]["fleet_size"] == 600
    assert "batch-00005 has no part: the report diffs the batches itself" in caplog.text


def test_a_batch_leaves_its_diff_to_the_report_when_the_previous_state_changed_since_the_plan(tmp_path):
    """The plan checked the previous state; one replaced after it is read through, every row, by the report."""
    batches = _night(tmp_path)
    previous = Path(state.previous_state(audit_folder(tmp_path.as_uri()), NIGHT).path)  # type: ignore[union-attr]
    body = gzip.decompress(previous.read_bytes()).decode().replace(A, "35982704123456X", 1)
    previous.write_bytes(gzip.compress(body.encode()))
    assert _diff_each(tmp_path, batches) == [None] * 6
    with pytest.raises(InvalidRequestError, match=r"line 2: imei '35982704123456X': must be 15 digits or empty"):
        _audit(tmp_path, batches)


def test_rows_before_the_range_asked_for_are_skipped_but_checked_for_order():
    header = list(rules.STATE_COLUMNS)
    rows = [[f"892540100000000000{n}", A, ""] for n in (1, 2, 3, 4)]
    assert [s.iccid for s in rules.read_state([header, *rows], "s.csv.gz", start=rows[2][0])] == [
        rows[2][0],
        rows[3][0],
    ]
    shuffled = [header, rows[1], rows[0], rows[2], rows[3]]
    with pytest.raises(InvalidRequestError, match=r"s.csv.gz line 3: iccid 8925401000000000001 is out of order"):
        list(rules.read_state(shuffled, "s.csv.gz", checked=True, start=rows[3][0]))


def test_gzip_parts_without_a_header_are_joined_under_one(tmp_path):
    parts = []
    for n, rows in enumerate([[("8925401000000000001", A, "")], [], [("8925401000000000002", "", TODAY)]]):
        parts.append((tmp_path / f"part-{n}.csv.gz").as_uri())
        with files.csv_values_writer(parts[-1], rules.STATE_COLUMNS, header=False) as write:
            for row in rows:
                write(row)
    target = (tmp_path / "state" / "joined.csv.gz").as_uri()
    files.concatenate_gzip_csv(target, rules.STATE_COLUMNS, parts)
    assert list(files.read_own_csv_values(target)) == [
        list(rules.STATE_COLUMNS),
        ["8925401000000000001", A, ""],
        ["8925401000000000002", "", TODAY],
    ]
