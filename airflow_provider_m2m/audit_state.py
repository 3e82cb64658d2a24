"""
The fleet audit's files in object storage: the audit state kept between nights, and the streaming diff that
turns a night's batch files into its report.

Layout under the audit folder (``<report_base_uri>/fleet_imei_change_report``)::

    state/<YYYY-MM-DD>.csv.gz            one per successful night (its interval start): iccid,imei,last_change
    <YYYY-MM-DD>/batches/batch-N.csv     the query rows of each batch (QueryImeiOperator's output_uri)
    <YYYY-MM-DD>/imei_changes.csv        the night's report
    <YYYY-MM-DD>/work/                   sorted runs and per-status parts while the diff runs (removed after)

Why this shape:

* A state file is a gzip-compressed CSV sorted by ICCID: about 20 MB for 1,000,000 SIMs, readable by any
  tool, and sorted so that the night's diff is a merge-join that streams: each batch file is sorted on its own
  (one batch in memory), the sorted runs are merged (:func:`heapq.merge`, at most :data:`FAN_IN` files open)
  and walked side by side with the previous state. Memory depends on the batch size, not on the fleet.
* It is written only when the night's report is written, and moved into place last, so a failed night leaves
  no state and the next night compares against the last successful one.
* A night compares against the newest state of a night *before* it, so a rerun of an old night reproduces
  that night's rows while the platform answers the same; the last :data:`KEEP_NIGHTS` states are kept, so
  a rerun of any night of the last week can do so (older ones are deleted after each successful night).
* Everything is an ``ObjectStoragePath`` URI (``file://`` in tests, ``s3://`` in production): no task relies
  on a worker's local disk or memory.
"""

from __future__ import annotations

import datetime as dt
import heapq
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from itertools import chain
from operator import itemgetter
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_m2m.audit import (
    STATE_COLUMNS,
    STATUSES,
    Seen,
    audit_sim,
    checked_fleet,
    expected_imei,
    read_state,
)
from airflow_provider_m2m.files import chunked, csv_writer, read_csv, write_csv

#: States kept: the newest this many nights (a week of reruns that reproduce their rows).
KEEP_NIGHTS = 7
#: At most this many sorted runs are merged at once (open files); more are merged in rounds.
FAN_IN = 64
#: The query columns a batch file holds (QueryImeiOperator's CSV).
QUERY_COLUMNS = ("current_imei", "last_change", "previous_imei", "error")

_STATE_NAME = re.compile(r"\d{4}-\d{2}-\d{2}\.csv\.gz")


class NightIncomplete(RuntimeError):
    """Some batches did not finish: no report and no state were written for the night."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(
            f"{len(missing)} batches did not finish ({', '.join(missing[:10])}): no report and no audit state "
            "were written for this night, so the next successful night reports its changes; to finish this "
            "night instead, clear its failed query_imeis tasks and this task"
        )


def state_uri(audit_folder: str, night: dt.date) -> str:
    """The state file of ``night`` (the data interval's start date)."""
    return f"{audit_folder}/state/{night:%Y-%m-%d}.csv.gz"


def previous_state(audit_folder: str, night: dt.date) -> ObjectStoragePath | None:
    """The newest state of a night before ``night``, or None (the first audit)."""
    folder = ObjectStoragePath(f"{audit_folder}/state")
    if not folder.exists():
        return None
    before = [p for p in folder.iterdir() if _STATE_NAME.fullmatch(p.name) and p.name < f"{night:%Y-%m-%d}"]
    return max(before, key=lambda p: p.name, default=None)


def check_inputs(fleet_uri: str, audit_folder: str, night: dt.date) -> list[str]:
    """
    Check the fleet file and the previous state before any platform call; return the fleet's ICCIDs.

    :raises InvalidRequestError: naming the file, the line and the rule.
    """
    iccids = [iccid for iccid, _ in checked_fleet(read_csv(fleet_uri), fleet_uri)]
    previous = previous_state(audit_folder, night)
    if previous is not None:
        for _ in read_state(read_csv(previous), str(previous)):
            pass
    return iccids


def audit_night(
    *,
    fleet_uri: str,
    batch_uris: Sequence[str],
    batch_size: int,
    audit_folder: str,
    night: dt.date,
    since: dt.datetime,
    keep_nights: int = KEEP_NIGHTS,
) -> dict[str, Any]:
    """
    Diff the night's batch files against the previous state; write the report, then the night's state.

    :param fleet_uri: the fleet file the batches were cut from (``batch_size`` rows each, in order).
    :param batch_uris: each batch's query CSV, in fleet order.
    :param batch_size: the SIMs per batch the plan used.
    :param audit_folder: ``<report_base_uri>/fleet_imei_change_report``.
    :param night: the data interval's start date (names the report folder and the state).
    :param since: the data interval's start (see :func:`~airflow_provider_m2m.audit.audit_sim`).
    :param keep_nights: how many nights of state to keep.
    :returns: ``report_csv``, ``state``, ``previous_state`` and the counts (``fleet_size`` and each status).
    :raises NightIncomplete: a batch file is missing (nothing is written).
    """
    missing = [uri.rsplit("/", 1)[-1] for uri in batch_uris if not ObjectStoragePath(uri).exists()]
    if missing:
        raise NightIncomplete(missing)
    folder = f"{audit_folder}/{night:%Y-%m-%d}"
    work = ObjectStoragePath(f"{folder}/work")
    fleet = read_csv(fleet_uri)
    first = next(fleet, None)
    extra = [c for c in (first or {}) if c != "iccid" and c not in QUERY_COLUMNS]
    run_columns = ("iccid", *extra, *QUERY_COLUMNS)
    chunks = chunked(chain([first] if first else [], fleet), batch_size)
    runs = [
        _sorted_run(chunk, uri, f"{work}/run-{n:05d}.csv", run_columns)
        for n, (chunk, uri) in enumerate(zip(chunks, batch_uris, strict=False))
    ]
    previous = previous_state(audit_folder, night)
    report_columns = ("iccid", *extra, "status", "current_imei", "previous_imei", "last_change")
    report_columns += ("last_audited_imei", "error")
    counts = {"fleet_size": 0, **dict.fromkeys(STATUSES, 0)}
    with ExitStack() as files:
        write_state = files.enter_context(csv_writer(f"{work}/state.csv.gz", STATE_COLUMNS))
        parts = {s: files.enter_context(csv_writer(f"{work}/{s}.csv", report_columns)) for s in STATUSES}
        recorded = read_state(read_csv(previous), str(previous)) if previous else iter(())
        for row, seen_before in _joined(_merged(runs, work, run_columns), recorded):
            counts["fleet_size"] += 1
            statuses, seen = audit_sim(seen_before, row, expected_imei(row.get("expected_imei")), since)
            if seen is not None:
                write_state(seen.as_row())
            audited = {"last_audited_imei": seen_before.imei if seen_before else None}
            for status in statuses:
                counts[status] += 1
                parts[status]({**row, **audited, "status": status})
    report_uri = f"{folder}/imei_changes.csv"
    write_csv(report_uri, report_columns, chain.from_iterable(read_csv(f"{work}/{s}.csv") for s in STATUSES))
    state = ObjectStoragePath(state_uri(audit_folder, night))
    state.parent.mkdir(parents=True, exist_ok=True)
    (work / "state.csv.gz").rename(state)  # last: the night counts as audited only with its report written
    _prune(audit_folder, keep_nights)
    for leftover in work.iterdir():
        leftover.unlink()
    return {
        "report_csv": report_uri,
        "state": str(state),
        "previous_state": str(previous) if previous else None,
        **counts,
    }


def _sorted_run(fleet_rows: list[dict[str, str]], batch_uri: str, run_uri: str, columns: Sequence[str]) -> str:
    """One batch's rows joined with their fleet rows and sorted by ICCID (one batch in memory)."""
    answers = {row["iccid"]: row for row in read_csv(batch_uri)}
    name = batch_uri.rsplit("/", 1)[-1]
    joined = (
        {**row, **answers.get(row["iccid"], {"error": f"no answer in {name}"}), "iccid": row["iccid"]}
        for row in fleet_rows
    )
    write_csv(run_uri, columns, sorted(joined, key=itemgetter("iccid")))
    return run_uri


def _merged(runs: list[str], work: ObjectStoragePath, columns: Sequence[str]) -> Iterator[dict[str, str]]:
    """The rows of the sorted runs in ICCID order, merging at most :data:`FAN_IN` files at a time."""
    round_ = 0
    while len(runs) > FAN_IN:
        merged = []
        for n, group in enumerate(chunked(runs, FAN_IN)):
            uri = f"{work}/merge-{round_}-{n:05d}.csv"
            write_csv(uri, columns, heapq.merge(*map(read_csv, group), key=itemgetter("iccid")))
            merged.append(uri)
        runs, round_ = merged, round_ + 1
    return heapq.merge(*map(read_csv, runs), key=itemgetter("iccid"))


def _joined(rows: Iterator[dict[str, str]], recorded: Iterator[Seen]) -> Iterator[tuple[dict[str, str], Seen | None]]:
    """Walk the night's rows and the previous state side by side (both sorted by ICCID): a merge-join."""
    pending = next(recorded, None)
    for row in rows:
        while pending is not None and pending.iccid < row["iccid"]:
            pending = next(recorded, None)  # a SIM no longer in the fleet: dropped from the state
        yield row, pending if pending is not None and pending.iccid == row["iccid"] else None


def _prune(audit_folder: str, keep_nights: int) -> None:
    folder = ObjectStoragePath(f"{audit_folder}/state")
    states = sorted((p for p in folder.iterdir() if _STATE_NAME.fullmatch(p.name)), key=lambda p: p.name)
    for old in states[: max(0, len(states) - keep_nights)]:
        old.unlink()
