"""
CSV files on object storage (``file://``, ``s3://``, ``gs://``... through Airflow's ObjectStoragePath).

Fleet files in, reports out: rows stream one at a time, so memory stays flat whatever the fleet size, and
a file is written beside its target and moved into place at the end, so readers never see half of it and
a retried task simply writes it again.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from airflow.sdk import ObjectStoragePath

T = TypeVar("T")


def read_csv(uri: str | ObjectStoragePath) -> Iterator[dict[str, str]]:
    """
    Yield the rows of a CSV file with a header, as dicts (blank lines skipped).

    :param uri: the file's URI or path.
    """
    path = ObjectStoragePath(uri)
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        for row in csv.DictReader(text):
            if any((value or "").strip() for value in row.values()):
                yield {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}


def write_csv(uri: str | ObjectStoragePath, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> int:
    """
    Write ``rows`` (dicts; missing or None values as empty cells) as CSV with a header; return the row count.

    :param uri: the target file's URI or path; its folder is created.
    :param columns: the header, in order.
    :param rows: the rows, consumed lazily.
    """
    target = ObjectStoragePath(uri)
    partial = target.parent / f".{target.name}.partial"
    partial.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with partial.open("wb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        writer = csv.writer(text)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(column) is None else row[column] for column in columns])
            count += 1
    partial.rename(target)
    return count


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Split ``items`` into lists of at most ``size``."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def report_folder(base_uri: str | None, *parts: object) -> str:
    """
    The URI of a report folder: ``base_uri`` (default ``reports/`` under the Airflow home) plus ``parts``,
    each made safe for any object store (run ids carry ``:`` and ``+``).

    :param base_uri: where reports go, or None for the default.
    :param parts: sub-folders, e.g. the DAG id and the run id.
    """
    if not base_uri:
        home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
        base_uri = (home / "reports").as_uri()
    safe = [re.sub(r"[^A-Za-z0-9._-]", "_", str(part)) for part in parts]
    return "/".join([base_uri.rstrip("/"), *safe])
