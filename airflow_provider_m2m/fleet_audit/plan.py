"""
The fleet audit's plan: check the fleet file, cut it into batch files on object storage, and hand Airflow only
a small item per batch, so XCom grows with the number of batches, never with the fleet.

Layout under the night's folder (``<report_base_uri>/<dag_id>/<night>``, the night named by the date it covers
or by its cutoff, see :mod:`~airflow_provider_m2m.fleet_audit.night`; ``<dag_id>/<group_id>`` when a DAG holds
more than one audit)::

    batches/input-NNNNN.csv     a batch's fleet rows (all the fleet file's columns), sorted by ICCID
    batches/batch-NNNNN.csv     its query rows (QueryImeiOperator's ``output_uri``, from ``iccids_uri``)

Why this shape:

* XCom: the plan returns ``{"batch": n, "sims": count}`` per batch, about 30 bytes of JSON, so 1,000 batches
  are about 30 kB with Airflow's default XCom backend; each mapped task derives its two URIs from ``n`` and its
  own run (:func:`batch_uris`), as the plan did, instead of reading them from XCom.
* One read of the fleet file: it streams through in sorted runs of :data:`RUN_ROWS` rows (one in memory at a
  time, on the task's local scratch disk), counted on the way, so the automatic batch size needs no count pass
  of its own; a k-way merge of the runs (a block of rows per run in memory) is then cut into the batch files.
  The merge also checks that each ICCID is listed once (a repeat is its own neighbour), not a set of the
  fleet; only on that error path is the fleet file read a second time, to name both lines.
* The batches are consecutive ICCID ranges: each file sorted, and batch ``n + 1`` starting after batch ``n``
  ends, so the report reads them one after the other, without merging them again.
* The batch files carry the fleet's other columns (``asset_name``, ``expected_imei``...) and are sorted, so
  the report joins each with its query rows directly (:func:`~airflow_provider_m2m.fleet_audit.state.audit_night`),
  never re-reading or re-sorting the fleet file.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import marshal
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import closing
from itertools import chain, islice
from operator import itemgetter
from pathlib import Path
from typing import Any

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.fleet_audit.night import as_key
from airflow_provider_m2m.fleet_audit.rules import checked_fleet
from airflow_provider_m2m.fleet_audit.sizing import MAX_MAP_LENGTH, batch_size_for
from airflow_provider_m2m.fleet_audit.state import check_previous_state
from airflow_provider_m2m.utils.files import chunked, csv_values_writer, report_folder
from airflow_provider_m2m.utils.fleet_file import read_fleet_lines

#: Fleet rows sorted in memory at once while the plan reads the fleet file (a run).
RUN_ROWS = 10_000
#: Runs merged at once (open files, a block of each in memory): up to 2,560,000 SIMs take one round.
MAX_OPEN_RUNS = 256
#: Rows per block of a run file (what the merge holds of each run).
RUN_BLOCK = 128
# A run's rows are tuples of strings in the fleet's columns, the ICCID first: sorted as they are (no key
# function, several times faster), they come in ICCID order; an ICCID listed twice is then caught as a neighbour.
_Row = tuple[Any, ...]
#: The example DAG's id: the audit's folder under ``report_base_uri`` when no other is named.
AUDIT_NAME = "fleet_imei_change_report"


def audit_folder(report_base_uri: str | None, dag_id: str = AUDIT_NAME, group_id: str | None = None) -> str:
    """
    ``<report_base_uri>/<dag_id>`` (plus ``/<group_id>`` when given: a DAG holding more than one audit), so two
    audits of one deployment never share state or reports (default base: ``reports/`` under the Airflow home).

    >>> audit_folder("s3://reports", "fleet_a"), audit_folder("s3://reports", "fleets", "north")
    ('s3://reports/fleet_a', 's3://reports/fleets/north')
    """
    return report_folder(report_base_uri, dag_id, *([group_id] if group_id else []))


def night_folder(
    report_base_uri: str | None, night: str | dt.date, dag_id: str = AUDIT_NAME, group_id: str | None = None
) -> str:
    """The folder of one night (its name, or the date of a daily night): report, summary and batch files."""
    return f"{audit_folder(report_base_uri, dag_id, group_id)}/{as_key(night)}"


def batch_uris(folder: str, batch: int) -> dict[str, str]:
    """
    Batch ``batch``'s files in the night's ``folder``, as QueryImeiOperator's arguments.

    >>> batch_uris("s3://audits/fleet_imei_change_report/2026-03-01", 7)["iccids_uri"]
    's3://audits/fleet_imei_change_report/2026-03-01/batches/input-00007.csv'
    """
    return {
        "iccids_uri": f"{folder}/batches/input-{batch:05d}.csv",
        "output_uri": f"{folder}/batches/batch-{batch:05d}.csv",
    }


def plan_fleet(
    fleet_uri: str,
    report_base_uri: str | None,
    night: str | dt.date,
    batch_size: int | None,
    *,
    dag_id: str = AUDIT_NAME,
    group_id: str | None = None,
    pool_slots: int = 1,
    max_map_length: int = MAX_MAP_LENGTH,
) -> list[dict[str, int]]:
    """
    Check the fleet file and the previous audit state, write the batch files; return one small item per batch.

    One read of the fleet file: its rows are checked and cut into sorted runs as they stream (their count
    sizes the batches when ``batch_size`` is None), then a k-way merge of the runs is cut into the batch
    files, in ICCID order, finding an ICCID listed twice as two equal neighbours on the way. So batch ``n``
    holds the ``n``-th ``batch_size`` ICCIDs of the fleet in sorted order (not of the file's order), and
    the batches follow each other in ICCID order, which the report's merge relies on to read each once.

    Nothing is sent to the platform here: bad input raises before any query.

    :param fleet_uri: the fleet CSV (an ``iccid`` column in any case, optional ``expected_imei``, any other
        columns; :mod:`~airflow_provider_m2m.utils.fleet_file`).
    :param report_base_uri: the base of the audit's folder (None: ``reports/`` under the Airflow home).
    :param night: the night's name (:attr:`~airflow_provider_m2m.fleet_audit.night.Night.key`; a date: that
        date's daily night): names the folder.
    :param batch_size: SIMs per batch; None sizes them from the fleet's count
        (:func:`~airflow_provider_m2m.fleet_audit.sizing.batch_size_for` with ``pool_slots`` and
        ``max_map_length``).
    :param dag_id: the audit's DAG (its folder, see :func:`audit_folder`).
    :param group_id: the audit's group, when its DAG holds more than one audit.
    :param pool_slots: batches that run at once (for the automatic size).
    :param max_map_length: the most batches a run may map (for the automatic size).
    :returns: ``[{"batch": n, "sims": count}, ...]``: the files are :func:`batch_uris` ``(folder, n)``.
    :raises InvalidRequestError: naming the file, the line(s) and the rule.
    """
    folder = night_folder(report_base_uri, night, dag_id, group_id)
    lines = read_fleet_lines(fleet_uri)
    _, header = next(lines)  # a missing file or a bad header fails here, before the state is read through
    check_previous_state(audit_folder(report_base_uri, dag_id, group_id), night)
    where = {name: n for n, name in enumerate(header)}  # a name given twice: its last cell, as a dict keeps
    columns = ("iccid", *(name for name in where if name != "iccid"))
    # Rows as tuples in ``columns`` order, ICCID first (what the runs sort by); one column's getter gives no tuple.
    as_tuple = itemgetter(*map(where.get, columns)) if len(columns) > 1 else lambda cells: (cells[where["iccid"]],)
    rows = map(as_tuple, checked_fleet(lines, header, fleet_uri))
    plan: list[dict[str, int]] = []
    # The runs are the task's own scratch (written and read back within this call): local disk, not the store,
    # in marshal blocks rather than CSV (several times faster to write and read back; never leaves the task).
    with closing(lines), tempfile.TemporaryDirectory(prefix="m2m-plan-") as scratch:
        runs, fleet_size = _sorted_runs(rows, Path(scratch))
        size = batch_size or batch_size_for(fleet_size, pool_slots, max_map_length=max_map_length)
        merged = _each_sim_once(_merged_runs(runs, Path(scratch)), fleet_uri)
        while (first_row := next(merged, None)) is not None:  # a batch file streams: no batch held in memory
            count = 0
            with csv_values_writer(batch_uris(folder, len(plan))["iccids_uri"], columns) as write:
                for row in chain([first_row], islice(merged, size - 1)):
                    write(row)
                    count += 1
            plan.append({"batch": len(plan), "sims": count})
    return plan


def _sorted_runs(rows: Iterable[_Row], scratch: Path) -> tuple[list[Path], int]:
    """Cut ``rows`` into runs of :data:`RUN_ROWS` rows sorted by ICCID (one run in memory); their files, the count."""
    runs: list[Path] = []
    count = 0
    for run in chunked(rows, RUN_ROWS):
        runs.append(_write_run(scratch / f"run-{len(runs):05d}", sorted(run)))
        count += len(run)
    return runs, count


def _merged_runs(runs: list[Path], scratch: Path) -> Iterator[_Row]:
    """The runs' rows in ICCID order: one k-way merge, after rounds merging groups of runs when there are many."""
    round_ = 0
    while len(runs) > MAX_OPEN_RUNS:
        runs = [
            _write_run(scratch / f"merge-{round_}-{n:05d}", heapq.merge(*map(_read_run, group)))
            for n, group in enumerate(chunked(runs, MAX_OPEN_RUNS))
        ]
        round_ += 1
    return heapq.merge(*map(_read_run, runs))


def _write_run(path: Path, rows: Iterable[_Row]) -> Path:
    with path.open("wb") as file:
        for block in chunked(rows, RUN_BLOCK):
            data = marshal.dumps(block)
            file.write(len(data).to_bytes(4, "little") + data)  # sized: read back whole, not an object at a time
    return path


def _read_run(path: Path) -> Iterator[_Row]:
    with path.open("rb") as file:
        while size := file.read(4):
            yield from marshal.loads(file.read(int.from_bytes(size, "little")))  # nosec B302  # our own file, in this call's private temporary folder


def _each_sim_once(rows: Iterator[_Row], fleet_uri: str) -> Iterator[_Row]:
    """Pass the merged rows on, checking each ICCID is listed once: sorted, a repeat is its own neighbour."""
    before = None
    for row in rows:
        if row[0] == before:
            raise _listed_twice(row[0], fleet_uri)
        before = row[0]
        yield row


def _listed_twice(iccid: str, fleet_uri: str) -> InvalidRequestError:
    """The error for an ICCID listed twice, naming both lines: a second pass over the fleet file, streamed."""
    fleet = read_fleet_lines(fleet_uri)
    with closing(fleet):
        _, header = next(fleet)
        at = header.index("iccid")
        first, second = islice((line for line, cells in fleet if cells[at] == iccid), 2)
    rule = f"iccid {iccid} is listed twice (first on line {first}): each SIM must appear once"
    return InvalidRequestError(f"fleet file {fleet_uri} line {second}", rule)


def plan_size(plan: list[dict[str, Any]]) -> int:
    """The bytes the plan takes in XCom with Airflow's default backend (JSON, as it stores return values)."""
    return len(json.dumps(plan).encode())
