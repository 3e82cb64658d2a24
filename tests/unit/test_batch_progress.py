"""
A query batch's progress in object storage (``airflow_provider_m2m.utils.batch_progress``) on ``file://``: a
retry gets back only the earlier tries' whole parts, never a failed answer, and queries the rest.
(The SIGKILL of a real task process is in tests/reliability/test_crash_resume.py, on S3 in tests/prod.)
"""

from __future__ import annotations

import logging

import pendulum
import pytest

from airflow_provider_m2m.hooks.m2m import ImeiRecord
from airflow_provider_m2m.operators.m2m import CSV_COLUMNS
from airflow_provider_m2m.utils import batch_progress
from airflow_provider_m2m.utils.batch_progress import BatchProgress, parts_folder

LOG = logging.getLogger(__name__)
ICCIDS = [f"8925400000000000{n:03d}" for n in range(10)]


def _answer(iccid: str) -> ImeiRecord:
    change = pendulum.datetime(2026, 3, 1, 2, 30, tz="UTC") if iccid.endswith(("1", "3")) else None
    return ImeiRecord(iccid, "356938035643809", change, "490154203237518" if change else None)


def _query(asked: list[list[str]], fail: set[str] = frozenset()):
    def query(todo: list[str]):
        asked.append(list(todo))
        for iccid in todo:
            yield ImeiRecord(iccid, error="platform busy") if iccid in fail else _answer(iccid)

    return query


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    monkeypatch.setattr(batch_progress, "PART_ROWS", 3)
    monkeypatch.setattr(batch_progress, "PART_SECONDS", 3600.0)


def test_a_retry_queries_only_what_no_whole_part_answered(tmp_path):
    output = (tmp_path / "batch-00001.csv").as_uri()
    asked: list[list[str]] = []
    first = BatchProgress(output, CSV_COLUMNS, 1, LOG).answers(ICCIDS, _query(asked, fail={ICCIDS[1]}))
    for _ in range(7):  # the try dies after 7 answers: two parts of 3 flushed (one failure not among them)
        next(first)
    folder = tmp_path / "batch-00001.csv.parts"
    assert sorted(p.name for p in folder.iterdir()) == ["part-1-00000.csv", "part-1-00001.csv"]
    (folder / ".part-1-00002.csv.partial").write_text("iccid,current_imei\n" + ICCIDS[7] + ",3569")  # killed write

    retry = BatchProgress(output, CSV_COLUMNS, 2, LOG)
    records = list(retry.answers(ICCIDS, _query(asked)))
    # Parts hold 0, 2, 3 and 4, 5, 6; SIM 1 failed, so it is asked again, with 7 (only in the half-written part).
    assert asked[-1] == [ICCIDS[1], ICCIDS[7], ICCIDS[8], ICCIDS[9]]
    assert sorted(r.iccid for r in records) == ICCIDS and not any(r.error for r in records)
    assert {r.iccid: r for r in records} == {i: _answer(i) for i in ICCIDS}  # read back as the query gave them
    assert (folder / "part-2-00002.csv").exists()  # numbered after the earlier parts, never over one
    retry.remove()
    assert not parts_folder(output).exists()


def test_answers_of_other_sims_and_repeats_follow_the_batch(tmp_path):
    """A part's SIM that is not in the batch is ignored; an ICCID listed twice gets two records, as a first try."""
    output = (tmp_path / "batch.csv").as_uri()
    list(BatchProgress(output, CSV_COLUMNS, 1, LOG).answers(ICCIDS[:6], _query([])))
    asked: list[list[str]] = []
    batch = [ICCIDS[0], ICCIDS[0], ICCIDS[8]]
    records = list(BatchProgress(output, CSV_COLUMNS, 2, LOG).answers(batch, _query(asked)))
    assert asked == [[ICCIDS[8]]] and [r.iccid for r in records] == batch


def test_without_parts_every_sim_is_queried_and_remove_is_harmless(tmp_path):
    output = (tmp_path / "none" / "batch.csv").as_uri()
    asked: list[list[str]] = []
    progress = BatchProgress(output, CSV_COLUMNS, 1, LOG)
    assert len(list(progress.answers(ICCIDS[:2], _query(asked)))) == 2 and asked == [ICCIDS[:2]]
    progress.remove()
    progress.remove()
