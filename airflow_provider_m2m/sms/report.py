"""
The files of an SMS run on object storage, so that XCom carries URIs and counts, never a row per SIM.

Layout under the run's folder (``<report_base_uri>/<dag_id>/<run_id>/<group_id>``)::

    batches/input-NNNNN.csv     a batch's ICCIDs (written by the plan, read by its send task)
    batches/sent-NNNNN.csv      the batch's outcome rows (SendSmsOperator's ``output_uri``)
    deliveries.csv              the delivery wait's rows (SmsDeliverySensor's ``output_uri``)
    outcomes.csv                the report: one row per SIM, merged from the files above

Every reader and writer of those files is here, so the columns are defined once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from airflow_provider_m2m.utils.files import read_csv, report_folder, write_csv

#: Columns of a batch's outcome file (SendSmsOperator's rows).
OUTCOME_COLUMNS = ("iccid", "sms_uid", "outcome", "error")
#: Columns of the delivery wait's file (:meth:`~airflow_provider_m2m.sms.delivery.DeliveryWatch.report` rows).
DELIVERY_COLUMNS = ("iccid", "sms_uid", "state", "status", "sent_at", "delivered_at", "error")
#: Columns of the run's report, one row per SIM.
REPORT_COLUMNS = ("iccid", "sms_uid", "outcome", "error", "delivery", "delivery_status", "delivered_at")
#: The outcome of a SIM whose batch task wrote no outcomes (it did not run, or stopped before the end).
NOT_ATTEMPTED = "not_attempted"


def run_folder(report_base_uri: str | None, dag_id: str, run_id: str, group_id: str | None) -> str:
    """``<report_base_uri>/<dag_id>/<run_id>[/<group_id>]`` (default base: ``reports/`` under the Airflow home)."""
    return report_folder(report_base_uri, dag_id, run_id, *([group_id] if group_id else []))


def batch_uris(folder: str, batch: int) -> dict[str, str]:
    """
    Batch ``batch``'s files, as SendSmsOperator's arguments.

    >>> batch_uris("s3://reports/notify/run1", 7)["output_uri"]
    's3://reports/notify/run1/batches/sent-00007.csv'
    """
    return {
        "iccids_uri": f"{folder}/batches/input-{batch:05d}.csv",
        "output_uri": f"{folder}/batches/sent-{batch:05d}.csv",
    }


def write_batches(folder: str, numbers: list[str], batch_size: int) -> list[int]:
    """Write ``numbers`` as batch input files of at most ``batch_size``; the SIM count of each batch."""
    sizes: list[int] = []
    for start in range(0, len(numbers), batch_size):
        chunk = numbers[start : start + batch_size]
        write_csv(batch_uris(folder, len(sizes))["iccids_uri"], ("iccid",), ({"iccid": n} for n in chunk))
        sizes.append(len(chunk))
    return sizes


def _rows_if_there(uri: str) -> list[dict[str, str]] | None:
    try:
        return list(read_csv(uri))
    except FileNotFoundError:
        return None


def watched_messages(uris: str | Iterable[str]) -> list[dict[str, str]]:
    """The outcome rows of the files ``uris`` (one or several; a missing file has none), for the delivery wait."""
    rows: list[dict[str, str]] = []
    for uri in [uris] if isinstance(uris, str) else uris:
        rows += _rows_if_there(uri) or []
    return rows


def write_deliveries(uri: str, rows: Iterable[dict[str, Any]]) -> int:
    """Write the delivery wait's rows to ``uri``; the row count."""
    return write_csv(uri, DELIVERY_COLUMNS, rows)


def merge_report(folder: str, batches: int, dry_run: bool) -> dict[str, Any]:
    """
    Write ``<folder>/outcomes.csv``: every SIM of every batch once, in plan order, with what its send did
    (``dry_run`` on a dry run; ``not_attempted`` when its batch wrote no outcomes) and its delivery state.

    :returns: ``{"report_csv", "sims", "outcomes": {outcome: count}, "delivery": {state: count}}``.
    """
    delivered = _rows_if_there(f"{folder}/deliveries.csv") or []
    deliveries: dict[tuple[str, Any], dict[str, Any]] = {(r["iccid"], r["sms_uid"]): r for r in delivered}
    outcomes: Counter[str] = Counter()
    delivery: Counter[str] = Counter()

    def rows() -> Iterator[dict[str, Any]]:
        for batch in range(batches):
            uris = batch_uris(folder, batch)
            sent = None if dry_run else _rows_if_there(uris["output_uri"])
            by_iccid = {r["iccid"]: r for r in sent or []}
            for item in read_csv(uris["iccids_uri"]):
                number = item["iccid"]
                row: dict[str, Any] = by_iccid.get(number) or {
                    "iccid": number,
                    "outcome": "dry_run" if dry_run else NOT_ATTEMPTED,
                    "error": None if dry_run else "no outcome recorded: the batch task did not run, or stopped early",
                }
                found = deliveries.get((number, row.get("sms_uid")), {})
                state = found.get("state") or None
                outcomes[row["outcome"]] += 1
                if state:
                    delivery[state] += 1
                yield {
                    **row,
                    "delivery": state,
                    "delivery_status": found.get("status"),
                    "delivered_at": found.get("delivered_at"),
                }

    uri = f"{folder}/outcomes.csv"
    sims = write_csv(uri, REPORT_COLUMNS, rows())
    return {
        "report_csv": uri,
        "sims": sims,
        "outcomes": dict(outcomes),
        "delivery": dict(delivery),
    }
