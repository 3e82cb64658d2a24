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
* Memory: the fleet file streams through; one batch is in memory at a time (sorted, then written). The check
  that each ICCID is listed once is a k-way merge of the sorted batch files
  (:func:`~airflow_provider_m2m.utils.files.merged_csv`, the one the report's diff uses) that finds adjacent equals,
  not a set of the fleet; only on that error path is the fleet file read a second time, to name both lines.
* The batch files carry the fleet's other columns (``asset_name``, ``expected_imei``...) and are sorted, so
  the report joins each with its query rows directly (:func:`~airflow_provider_m2m.fleet_audit.state.audit_night`),
  never re-reading or re-sorting the fleet file.
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import closing
from itertools import chain, islice
from typing import Any

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.fleet_audit.night import as_key
from airflow_provider_m2m.fleet_audit.rules import checked_fleet
from airflow_provider_m2m.fleet_audit.sizing import batch_size_for
from airflow_provider_m2m.fleet_audit.state import check_previous_state
from airflow_provider_m2m.utils.files import merged_csv, report_folder, write_csv
from airflow_provider_m2m.utils.fleet_file import read_fleet

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


def check_fleet_file(fleet_uri: str) -> None:
    """
    A fleet file that is not there is bad input (retrying cannot bring it), named by its URI.

    :raises InvalidRequestError: no file at ``fleet_uri`` (or no URI at all).
    """
    from airflow.sdk import ObjectStoragePath

    if not fleet_uri or not str(fleet_uri).strip():
        raise InvalidRequestError("fleet_uri", "a fleet file's URI is required")
    if not ObjectStoragePath(fleet_uri).is_file():
        raise InvalidRequestError("fleet_uri", f"no fleet file at {fleet_uri}")


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


def fleet_batch_size(fleet_uri: str, batch_size: int | None, pool_slots: int, max_map_length: int) -> int:
    """
    ``batch_size`` when given; else sized from the fleet's row count so that the batches fill ``pool_slots`` in
    as few full waves as possible (:func:`~airflow_provider_m2m.fleet_audit.sizing.batch_size_for`; one more
    streamed read of the fleet file, for its row count).
    """
    if batch_size:
        return batch_size
    with closing(read_fleet(fleet_uri)) as rows:
        fleet_size = sum(1 for _ in rows)
    return batch_size_for(fleet_size, pool_slots, max_map_length=max_map_length)


def plan_fleet(
    fleet_uri: str,
    report_base_uri: str | None,
    night: str | dt.date,
    batch_size: int,
    *,
    dag_id: str = AUDIT_NAME,
    group_id: str | None = None,
) -> list[dict[str, int]]:
    """
    Check the fleet file and the previous audit state, write the batch files; return one small item per batch.

    Nothing is sent to the platform here: bad input raises before any query.

    :param fleet_uri: the fleet CSV (an ``iccid`` column in any case, optional ``expected_imei``, any other
        columns; :mod:`~airflow_provider_m2m.utils.fleet_file`).
    :param report_base_uri: the base of the audit's folder (None: ``reports/`` under the Airflow home).
    :param night: the night's name (:attr:`~airflow_provider_m2m.fleet_audit.night.Night.key`; a date: that
        date's daily night): names the folder.
    :param batch_size: SIMs per batch.
    :param dag_id: the audit's DAG (its folder, see :func:`audit_folder`).
    :param group_id: the audit's group, when its DAG holds more than one audit.
    :returns: ``[{"batch": n, "sims": count}, ...]``: the files are :func:`batch_uris` ``(folder, n)``.
    :raises InvalidRequestError: naming the file, the line(s) and the rule.
    """
    folder = night_folder(report_base_uri, night, dag_id, group_id)
    check_previous_state(audit_folder(report_base_uri, dag_id, group_id), night)
    rows = read_fleet(fleet_uri)
    first = next(rows, None)
    columns = ("iccid", *(c for c in (first or {}) if c != "iccid"))
    checked = checked_fleet(chain([first] if first else [], rows), fleet_uri)
    plan: list[dict[str, int]] = []
    inputs: list[str] = []
    while batch := list(islice(checked, batch_size)):
        uri = batch_uris(folder, len(plan))["iccids_uri"]
        write_csv(uri, columns, sorted(batch, key=lambda row: row["iccid"]))
        plan.append({"batch": len(plan), "sims": len(batch)})
        inputs.append(uri)
    _each_sim_once(inputs, columns, fleet_uri, f"{folder}/work")
    return plan


def _each_sim_once(inputs: list[str], columns: tuple[str, ...], fleet_uri: str, work: str) -> None:
    """Every ICCID in one batch file only, once: adjacent equals in the merge of the sorted batch files."""
    before = None
    with closing(merged_csv(inputs, work, columns)) as rows:  # closing: its merge files go, also on the error
        for row in rows:
            if row["iccid"] == before:
                raise _listed_twice(before, fleet_uri)
            before = row["iccid"]


def _listed_twice(iccid: str, fleet_uri: str) -> InvalidRequestError:
    """The error for an ICCID listed twice, naming both lines: a second pass over the fleet file, streamed."""
    lines = (n for n, row in enumerate(read_fleet(fleet_uri), start=2) if row.get("iccid") == iccid)
    first, second = islice(lines, 2)
    rule = f"iccid {iccid} is listed twice (first on line {first}): each SIM must appear once"
    return InvalidRequestError(f"fleet file {fleet_uri} line {second}", rule)


def plan_size(plan: list[dict[str, Any]]) -> int:
    """The bytes the plan takes in XCom with Airflow's default backend (JSON, as it stores return values)."""
    return len(json.dumps(plan).encode())
