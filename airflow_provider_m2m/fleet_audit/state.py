"""
The fleet audit's files in object storage: the audit state kept between nights, and the streaming diff that
turns a night's batch files into its report.

Layout under the audit folder (``<report_base_uri>/<dag_id>``, plus the group id when a DAG holds more audits)::

    state/<night>.csv.gz                 one per successful night (its name: the date it covers, or its cutoff
                                         for a night that does not end at midnight): iccid,imei,last_change
    state/<night>.csv.gz.written.json    the fingerprint of that file as the audit wrote it (see WRITTEN)
    <night>/batches/input-N.csv          each batch's fleet rows, sorted by ICCID (see fleet_audit.plan)
    <night>/batches/batch-N.csv          the query rows of each batch (QueryImeiOperator's output_uri)
    <night>/imei_changes.csv             the night's report
    <night>/changed_iccids.csv           its ``changed`` SIMs (an ``iccid`` column)
    <night>/previous-state-checked.json  the fingerprint of the previous state the plan read through
    <night>/parts/batch-N/               each batch's share of the diff, made by the batch (removed after)
    <night>/work/                        per-status parts while the report writes (removed after)

Why this shape:

* A state file is a gzip-compressed CSV sorted by ICCID: about 20 MB for 1,000,000 SIMs, readable by any
  tool, and sorted so that the night's diff is a merge-join that streams: each batch's sorted input file is
  joined with its query rows (one batch in memory) and, the plan's batches being ICCID ranges one after the
  other, the batches are read once each, in order, and walked side by side with the previous state. (Batches
  that are not ranges, e.g. cut by an older plan, are joined into sorted runs under ``work/`` and merged
  with :func:`~airflow_provider_m2m.utils.files.merged_csv` instead.) Memory depends on the batch size, not
  on the fleet.
* Each batch diffs its own range as soon as its query file is written (:func:`diff_batch`), beside the night's
  other batches, and the report joins their parts by copying bytes: the diff of a million SIMs is spread over
  the batches' workers instead of run by one task after them all. A part counts only when it was made from
  the files the report would read; otherwise the report diffs the batches itself.
* It is written only when the night's report is written, and moved into place last, so a failed night leaves
  no state and the next night compares against the last successful one.
* A night compares against the newest state of a night *before* it, so a rerun of an old night reproduces
  that night's rows (a change after its cutoff is taken back, see
  :func:`~airflow_provider_m2m.fleet_audit.rules.at_cutoff`); the last :data:`KEEP_NIGHTS` states are kept, so
  a rerun of any night of the last week can do so (older ones are deleted after each successful night).
* Everything is an ``ObjectStoragePath`` URI (``file://`` in tests, ``s3://`` in production): no task relies
  on a worker's local disk or memory.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, closing
from typing import Any, NamedTuple

from airflow.sdk import ObjectStoragePath

from airflow_provider_m2m.fleet_audit.night import as_key, key_cutoff
from airflow_provider_m2m.fleet_audit.rules import (
    STATE_COLUMNS,
    STATUSES,
    Seen,
    at_cutoff,
    audit_sim,
    baseline,
    expected_imei,
    read_state,
    unchanged,
)
from airflow_provider_m2m.utils.cycle_collector import paused_cycle_collector
from airflow_provider_m2m.utils.files import (
    concatenate_csv,
    concatenate_gzip_csv,
    csv_values_writer,
    csv_writer,
    merged_csv,
    read_own_csv_values,
    write_csv,
)

log = logging.getLogger(__name__)

#: States kept: the newest this many nights (a week of reruns that reproduce their rows).
KEEP_NIGHTS = 7
#: The query columns a batch file holds (QueryImeiOperator's CSV).
QUERY_COLUMNS = ("current_imei", "last_change", "previous_imei", "error")

#: In the night's folder: the fingerprint of the previous state the plan read through (see check_previous_state).
CHECKED_STATE = "previous-state-checked.json"
#: Beside each state file: the fingerprint of the file as the audit wrote it. A state unchanged since is the
#: audit's own output, every row made by the rules, so the next night's plan need not check it row by row.
WRITTEN = ".written.json"
#: In the night's folder: the batches' shares of the diff (see :func:`diff_batch`), until the report joins them.
PARTS = "parts"
#: In a part's folder, written last: its counts, its first and last ICCID, and what it was made from.
PART_DONE = "done.json"

_STATE_NAME = re.compile(r"(\d{4}-\d{2}-\d{2}(?:T\d{6}Z)?)\.csv\.gz")


class NightIncomplete(RuntimeError):
    """Some batches did not finish: no report and no state were written for the night."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(
            f"{len(missing)} batches did not finish ({', '.join(missing[:10])}): no report and no audit state "
            "were written for this night, so the next successful night reports its changes; to finish this "
            "night instead, clear its failed query_imeis tasks and this task"
        )


def state_uri(audit_folder: str, night: str | dt.date) -> str:
    """The state file of ``night`` (its name, :attr:`~airflow_provider_m2m.fleet_audit.night.Night.key`, or date)."""
    return f"{audit_folder}/state/{as_key(night)}.csv.gz"


def _states(audit_folder: str) -> list[tuple[dt.datetime, ObjectStoragePath]]:
    """The audit's state files with the cutoff each stands for, oldest first."""
    folder = ObjectStoragePath(f"{audit_folder}/state")
    if not folder.exists():
        return []
    found = [(key_cutoff(m.group(1)), p) for p in folder.iterdir() if (m := _STATE_NAME.fullmatch(p.name))]
    return sorted(found, key=lambda found: found[0])


def previous_state(audit_folder: str, night: str | dt.date) -> ObjectStoragePath | None:
    """The state of the night with the latest cutoff before ``night``'s, or None (the first audit)."""
    cutoff = key_cutoff(night)
    before = [p for at, p in _states(audit_folder) if at < cutoff]  # oldest first
    return before[-1] if before else None


def check_previous_state(audit_folder: str, night: str | dt.date) -> None:
    """
    Check the previous state before any platform call: a night cannot be trusted without it. A state the
    audit wrote and nobody changed since (its :data:`WRITTEN` fingerprint still matches) is trusted as it is;
    any other (restored from a backup, edited, written by an older version) is read through, row by row.
    Leaves the file's fingerprint in the night's folder (:data:`CHECKED_STATE`), so the report, finding the
    same file, checks only its order.

    :raises InvalidRequestError: naming the file, the line and the rule.
    """
    previous = previous_state(audit_folder, night)
    marker = ObjectStoragePath(f"{audit_folder}/{as_key(night)}/{CHECKED_STATE}")
    marker.unlink(missing_ok=True)  # first: a marker of an earlier try never vouches for a state read since
    if previous is not None:
        if not _unchanged_since(previous, f"{previous}{WRITTEN}"):
            for _ in read_state(read_own_csv_values(previous), str(previous)):
                pass
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(_fingerprint(previous)))


def mark_written(state: ObjectStoragePath) -> None:
    """Leave ``state``'s fingerprint beside it (:data:`WRITTEN`): the audit wrote it, every row by the rules."""
    ObjectStoragePath(f"{state}{WRITTEN}").write_text(json.dumps(_fingerprint(state)))


def _fingerprint(path: ObjectStoragePath) -> dict[str, Any]:
    """What identifies one version of a file: its name, size and the store's own version marks."""
    info = path.fs.info(path.path)
    marks = ("size", "mtime", "ino", "ETag", "LastModified", "generation")  # local files, S3, GCS
    return {"uri": str(path), **{key: str(info[key]) for key in marks if key in info}}


def _unchanged_since(path: ObjectStoragePath, marker_uri: str) -> bool:
    """True when the fingerprint in ``marker_uri`` is ``path``'s: the file has not changed since it was taken."""
    try:
        return json.loads(ObjectStoragePath(marker_uri).read_text()) == _fingerprint(path)
    except (OSError, ValueError):  # no marker (or an unreadable one): nothing vouches for the file
        return False


def audit_night(
    *,
    batches: Sequence[tuple[str, str]],
    audit_folder: str,
    night: str | dt.date,
    since: dt.datetime,
    cutoff: dt.datetime | None = None,
    keep_nights: int = KEEP_NIGHTS,
) -> dict[str, Any]:
    """
    Diff the night's batch files against the previous state; write the report, then the night's state. When
    every batch left its share of the diff (:func:`diff_batch`) made from these same files, the report joins
    those shares instead of diffing again.

    :param batches: ``(input_uri, output_uri)`` of each batch: its fleet rows sorted by ICCID (the plan's
        file, see :mod:`~airflow_provider_m2m.fleet_audit.plan`) and its query CSV.
    :param audit_folder: the audit's folder (:func:`~airflow_provider_m2m.fleet_audit.plan.audit_folder`).
    :param night: the night's name (:attr:`~airflow_provider_m2m.fleet_audit.night.Night.key`; a date: that
        date's daily night): names the report folder and the state.
    :param since: the first audit's window start (see :func:`~airflow_provider_m2m.fleet_audit.rules.audit_sim`).
    :param cutoff: the night's cutoff: a change at or after it belongs to a later night
        (:func:`~airflow_provider_m2m.fleet_audit.rules.at_cutoff`); None takes every answer as it is.
    :param keep_nights: how many nights of state to keep.
    :returns: ``report_csv``, ``changed_iccids_uri`` (a CSV with an ``iccid`` column: the ``changed`` SIMs),
        ``state``, ``previous_state`` and the counts (``fleet_size`` and each status).
    :raises NightIncomplete: a batch file is missing (nothing is written).
    """
    missing = [uri.rsplit("/", 1)[-1] for _, uri in batches if not ObjectStoragePath(uri).exists()]
    if missing:
        raise NightIncomplete(missing)
    folder = f"{audit_folder}/{as_key(night)}"
    work = ObjectStoragePath(f"{folder}/work")
    extra, report_columns = _columns(batches[0][0] if batches else None)
    previous = previous_state(audit_folder, night)
    made_from = _made_from(previous, since, cutoff, report_columns)
    parts = _batch_parts(batches, folder, made_from)
    if parts is not None:  # the batches diffed their own ranges: join their parts, byte for byte
        counts = _added(part.counts for part in parts)
        concatenate_gzip_csv(f"{work}/state.csv.gz", STATE_COLUMNS, [f"{p.folder}/state.csv.gz" for p in parts])
        sources = [f"{p.folder}/changed_iccids.csv" for p in parts]
        by_status = [f"{p.folder}/{s}.csv" for s in STATUSES for p in parts]
    else:
        checked = previous is not None and _unchanged_since(previous, f"{folder}/{CHECKED_STATE}")
        counts = _diff_batches(batches, previous, since, cutoff, work, extra, report_columns, checked)
        sources, by_status = [f"{work}/changed_iccids.csv"], [f"{work}/{s}.csv" for s in STATUSES]
    report_uri = f"{folder}/imei_changes.csv"
    concatenate_csv(report_uri, by_status)
    changed_uri = f"{folder}/changed_iccids.csv"  # the SIMs whose device changed: a fleet file of their own
    concatenate_csv(changed_uri, sources)
    state = ObjectStoragePath(state_uri(audit_folder, night))
    state.parent.mkdir(parents=True, exist_ok=True)
    ObjectStoragePath(f"{state}{WRITTEN}").unlink(missing_ok=True)  # a rerun's never vouches for the new file
    (work / "state.csv.gz").rename(state)  # last: the night counts as audited only with its report written
    mark_written(state)
    _prune(audit_folder, keep_nights)
    for leftover in [*_files_in(work), *_part_files(folder)]:
        leftover.unlink()
    return {
        "report_csv": report_uri,
        "changed_iccids_uri": changed_uri,
        "state": str(state),
        "previous_state": str(previous) if previous else None,
        **counts,
    }


def diff_batch(
    *,
    batch: tuple[str, str],
    audit_folder: str,
    night: str | dt.date,
    since: dt.datetime,
    cutoff: dt.datetime | None = None,
) -> dict[str, int] | None:
    """
    One batch's share of the night's diff, made by the batch itself once its query file is written: a night's
    batches diff their ICCID ranges side by side (as many at once as its pool runs, on as many workers), and
    the report joins their parts byte for byte instead of diffing the whole fleet alone.

    Writes ``<night>/parts/<batch>/``: the batch's rows of the night's state (without a header), of each
    status and of ``changed_iccids.csv``, then :data:`PART_DONE` (its counts, its first and last ICCID, and
    what it was made from). :func:`audit_night` joins the parts only when every batch has one made from what
    the report itself would read (the batch's files as they are, the same previous state, ``since`` and
    ``cutoff``); otherwise it diffs the batches itself, with the same rules. The batch reads the previous state
    from its start up to its own range only to check the order of those rows (the plan checked the rest).

    :param batch: ``(input_uri, output_uri)``, as for :func:`audit_night`.
    :param audit_folder: the audit's folder; ``night``, ``since``, ``cutoff``: as for :func:`audit_night`.
    :returns: the batch's counts (``fleet_size`` and each status), or None: the previous state changed since the
        plan checked it, so the report reads it through and diffs every batch itself.
    """
    folder = f"{audit_folder}/{as_key(night)}"
    part = ObjectStoragePath(_part_folder(folder, batch[1]))
    done = part / PART_DONE
    done.unlink(missing_ok=True)  # first: the part of an earlier try never vouches for this one
    previous = previous_state(audit_folder, night)
    if previous is not None and not _unchanged_since(previous, f"{folder}/{CHECKED_STATE}"):
        return None  # changed since the plan checked it: the report reads it through, every row
    _, report_columns = _columns(batch[0])
    span: list[str] = []
    rows = _spanned(_ranges_in_order([batch]), span)
    counts = _diff(rows, previous, since, cutoff, part, report_columns, True, state_header=False, start=_first(batch))
    made_from = {**_made_from(previous, since, cutoff, report_columns), **_batch_files(batch)}
    done.write_text(json.dumps({"counts": counts, "span": span, "made_from": made_from}))
    return counts


class _BatchPart(NamedTuple):
    folder: str
    counts: dict[str, int]


def _part_folder(folder: str, output_uri: str) -> str:
    """A batch's part, named after its query file: ``<night>/parts/batch-00007``."""
    return f"{folder}/{PARTS}/{output_uri.rsplit('/', 1)[-1].removesuffix('.csv')}"


def _batch_parts(batches: Sequence[tuple[str, str]], folder: str, made_from: dict[str, Any]) -> list[_BatchPart] | None:
    """
    The batches' parts in order, when every batch has one made from ``made_from`` and its files as they are
    now, and their ICCID ranges follow each other; else None (logging why), and the report diffs the batches.
    """
    parts, before = [], ""
    for batch in batches:
        part = _part_folder(folder, batch[1])
        try:
            done = json.loads(ObjectStoragePath(f"{part}/{PART_DONE}").read_text())
        except (OSError, ValueError):  # no part (a batch of an older version, or its diff failed): not an error
            log.info("%s has no part: the report diffs the batches itself", part.rsplit("/", 1)[-1])
            return None
        if done.get("made_from") != {**made_from, **_batch_files(batch)}:
            log.info("%s was made from other files: the report diffs the batches itself", part.rsplit("/", 1)[-1])
            return None
        span = done.get("span") or []
        if span and span[0] <= before:
            log.info("%s does not start after the batch before it: the report diffs the batches", part)
            return None
        before = span[-1] if span else before
        parts.append(_BatchPart(part, done["counts"]))
    return parts or None


def _made_from(
    previous: ObjectStoragePath | None, since: dt.datetime, cutoff: dt.datetime | None, columns: Sequence[str]
) -> dict[str, Any]:
    """What a night's diff depends on besides the batch's own files (as JSON gives it back)."""
    return {
        "previous_state": _fingerprint(previous) if previous is not None else None,
        "since": since.isoformat(),
        "cutoff": cutoff.isoformat() if cutoff is not None else None,
        "columns": list(columns),
    }


def _batch_files(batch: tuple[str, str]) -> dict[str, Any]:
    """The fingerprints of a batch's input and query files."""
    return {"input": _fingerprint(ObjectStoragePath(batch[0])), "output": _fingerprint(ObjectStoragePath(batch[1]))}


def _added(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    """The parts' counts added up."""
    total = {"fleet_size": 0, **dict.fromkeys(STATUSES, 0)}
    for each in counts:
        for key in total:
            total[key] += each[key]
    return total


def _part_files(folder: str) -> list[ObjectStoragePath]:
    """The files of every batch's part in the night's ``folder`` (used or not): ``parts/<batch>/<file>``."""
    return [file for part in _files_in(ObjectStoragePath(f"{folder}/{PARTS}")) for file in _files_in(part)]


def _files_in(folder: ObjectStoragePath) -> list[ObjectStoragePath]:
    """What ``folder`` holds; nothing when it does not exist (an object store has no folder without a file)."""
    return list(folder.iterdir()) if folder.exists() else []


def _columns(first_input: str | None) -> tuple[list[str], tuple[str, ...]]:
    """The fleet file's own columns (from the first batch's header) and the report's columns."""
    first: list[str] = []
    if first_input:
        with closing(read_own_csv_values(first_input)) as lines:
            first = next(lines, [])
    extra = [c for c in first if c != "iccid" and c not in QUERY_COLUMNS]
    report = ("iccid", *extra, "status", "current_imei", "previous_imei", "last_change", "last_audited_imei")
    return extra, (*report, "error")


def _diff_batches(
    batches: Sequence[tuple[str, str]],
    previous: ObjectStoragePath | None,
    since: dt.datetime,
    cutoff: dt.datetime | None,
    work: ObjectStoragePath,
    extra: Sequence[str],
    columns: Sequence[str],
    checked: bool,
) -> dict[str, int]:
    """The whole night's diff in the report (the batches made no parts): the state and one part per status."""
    try:  # the plan's batches are ICCID ranges in order: each is read once, joined as it streams
        return _diff(_ranges_in_order(batches), previous, since, cutoff, work, columns, checked)
    except _NotInOrder as reason:  # batches cut otherwise (an older plan): join each into a sorted run, merge those
        log.info("%s: merging the batches instead", reason)
        run_columns = ("iccid", *extra, *QUERY_COLUMNS)
        runs = [
            _joined_run(input_uri, output_uri, f"{work}/run-{n:05d}.csv", run_columns)
            for n, (input_uri, output_uri) in enumerate(batches)
        ]
        return _diff(merged_csv(runs, work, run_columns), previous, since, cutoff, work, columns, checked)


def _first(batch: tuple[str, str]) -> str:
    """The first ICCID of a batch (its input file is sorted), or "" for none."""
    with closing(read_own_csv_values(batch[0])) as lines:
        header = next(lines, [])
        first = next(lines, None)
    return first[header.index("iccid")] if first is not None else ""


def _spanned(rows: Iterator[dict[str, str]], span: list[str]) -> Iterator[dict[str, str]]:
    """``rows`` as they are; ``span`` ends up with the first and the last ICCID (empty: no rows)."""
    row = None
    for row in rows:
        if not span:
            span.append(row["iccid"])
        yield row
    if row is not None:
        span.append(row["iccid"])


def _diff(
    rows: Iterator[dict[str, str]],
    previous: ObjectStoragePath | None,
    since: dt.datetime,
    cutoff: dt.datetime | None,
    work: ObjectStoragePath,
    columns: Sequence[str],
    checked: bool,
    state_header: bool = True,
    start: str = "",
) -> dict[str, int]:
    """
    Walk the night's rows (sorted by ICCID) beside the previous state: the state and one part per status.
    ``checked``: the plan read the previous state through this night (only its order is checked again).
    ``state_header`` False and ``start`` (the first ICCID of the rows): a batch's part (:func:`diff_batch`).
    """
    counts = {"fleet_size": 0, **dict.fromkeys(STATUSES, 0)}
    with ExitStack() as files, paused_cycle_collector():
        write_state = files.enter_context(csv_values_writer(f"{work}/state.csv.gz", STATE_COLUMNS, header=state_header))
        parts = {s: files.enter_context(csv_writer(f"{work}/{s}.csv", columns)) for s in STATUSES}
        write_changed = files.enter_context(csv_values_writer(f"{work}/changed_iccids.csv", ("iccid",)))
        recorded: Iterator[Seen] = iter(())
        if previous is not None:
            recorded = read_state(read_own_csv_values(previous), str(previous), checked=checked, start=start)
        for answer, seen_before in _joined(rows, recorded):
            counts["fleet_size"] += 1
            if seen_before is not None and unchanged(seen_before, answer, cutoff):
                write_state(seen_before)  # nothing to report: the state keeps the SIM's row
                continue
            if seen_before is None and (first := baseline(answer, since, cutoff)) is not None:
                write_state(first)  # nothing to report: the SIM's row starts here
                continue
            row = at_cutoff(answer, seen_before, cutoff) if cutoff is not None else answer
            statuses, seen = audit_sim(seen_before, row, expected_imei(row.get("expected_imei")), since)
            if seen is not None:
                write_state(seen)  # a tuple in STATE_COLUMNS' order
            for status in statuses:  # most SIMs have none: nothing more is made for them
                counts[status] += 1
                audited = seen_before.imei if seen_before else None
                parts[status]({**row, "last_audited_imei": audited, "status": status})
                if status == "changed":
                    write_changed((row["iccid"],))
    return counts


class _NotInOrder(Exception):
    """The batches are not ICCID ranges one after the other."""


def _ranges_in_order(batches: Sequence[tuple[str, str]]) -> Iterator[dict[str, str]]:
    """
    The batches' joined rows one batch after the other, checked to ascend (one batch in memory): the plan cuts
    them so. Raised before the diff writes anything final, so the caller can merge instead.
    """
    before = ""
    for input_uri, output_uri in batches:
        for row in _joined_rows(input_uri, output_uri):
            if row["iccid"] <= before:
                raise _NotInOrder(f"{input_uri.rsplit('/', 1)[-1]} does not start after the batch before it")
            before = row["iccid"]
            yield row


def _joined_rows(input_uri: str, output_uri: str) -> Iterator[dict[str, str]]:
    """One batch's fleet rows (sorted by ICCID) joined with its query rows, in that order (one batch in memory)."""
    answer_lines = read_own_csv_values(output_uri)
    answer_columns = next(answer_lines, ["iccid"])
    at = answer_columns.index("iccid")
    answers = {values[at]: values for values in answer_lines}  # lists, not dicts: a million a night
    fleet_lines = read_own_csv_values(input_uri)
    fleet_columns = next(fleet_lines, ["iccid"])
    at = fleet_columns.index("iccid")
    columns = (*fleet_columns, *answer_columns)  # ``iccid`` twice: the answer's, the same, is kept
    no_answer = {"error": f"no answer in {output_uri.rsplit('/', 1)[-1]}"}
    for values in fleet_lines:
        answer = answers.get(values[at])
        if answer is not None:
            yield dict(zip(columns, values + answer, strict=True))  # one dict per SIM: half the time of two
        else:
            yield {**dict(zip(fleet_columns, values, strict=True)), **no_answer}


def _joined_run(input_uri: str, output_uri: str, run_uri: str, columns: Sequence[str]) -> str:
    """:func:`_joined_rows` written to ``run_uri`` (for the merge of batches that are not ranges)."""
    write_csv(run_uri, columns, _joined_rows(input_uri, output_uri))
    return run_uri


def _joined(rows: Iterator[dict[str, str]], recorded: Iterator[Seen]) -> Iterator[tuple[dict[str, str], Seen | None]]:
    """Walk the night's rows and the previous state side by side (both sorted by ICCID): a merge-join."""
    pending = next(recorded, None)
    for row in rows:
        while pending is not None and pending.iccid < row["iccid"]:
            pending = next(recorded, None)  # a SIM no longer in the fleet: dropped from the state
        yield row, pending if pending is not None and pending.iccid == row["iccid"] else None


def _prune(audit_folder: str, keep_nights: int) -> None:
    states = _states(audit_folder)
    for _, old in states[: max(0, len(states) - keep_nights)]:
        old.unlink()
        ObjectStoragePath(f"{old}{WRITTEN}").unlink(missing_ok=True)
