"""
A query batch's progress kept in object storage, so that a retried try queries only the SIMs left.

While :class:`~airflow_provider_m2m.operators.m2m.QueryImeiOperator` runs a batch with an ``output_uri``, the
answered SIMs are flushed beside that file, in parts::

    <output_uri>.parts/part-<try>-<n>.csv     every PART_ROWS answers or PART_SECONDS, whichever comes first

A retry reads the parts, queries only the SIMs that are not in them, writes ``output_uri`` whole from the
parts' rows and its own, then removes the parts. Rules this keeps:

* Only answers count as done: a SIM whose query failed (``error`` set) is never put in a part, so a retry
  asks again.
* Only a whole part counts: a part is written beside its name and moved into place
  (:func:`~airflow_provider_m2m.utils.files.csv_writer`); a write killed half-way leaves a ``.partial`` file
  that is never read, and is removed with the parts.
* What a killed try loses is what was not flushed yet: at most PART_ROWS answers (or PART_SECONDS of them)
  plus the calls in flight. The queries are idempotent, so those are simply asked again.
* Memory is bounded by the batch: the parts' answers are held as records, like the batch's ICCIDs.

Object storage rather than Airflow's task state store (3.3+): it works on every supported Airflow version and
executor; the rows have to reach object storage anyway (they are the output); and a batch's answers (about
1 MB per 20,000 SIMs) do not belong in the metadata database, which the state store and XCom share.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from itertools import chain
from typing import TYPE_CHECKING

import pendulum
from airflow.sdk import ObjectStoragePath

from airflow_provider_m2m.protocol.sim_insight import ImeiRecord
from airflow_provider_m2m.utils.files import read_own_csv, write_csv

if TYPE_CHECKING:
    from airflow_provider_m2m.utils.version_compat import TaskLog

#: A part is flushed after this many answers...
PART_ROWS = 1_000
#: ...or once this many seconds passed since the last one (checked as answers arrive), whichever comes first.
PART_SECONDS = 10.0

_PART_NAME = re.compile(r"part-(\d+)-(\d+)\.csv")


def parts_folder(output_uri: str) -> ObjectStoragePath:
    """Where a batch's parts live: ``<output_uri>.parts``."""
    return ObjectStoragePath(f"{output_uri}.parts")


class BatchProgress:
    """
    The answers a batch's earlier tries flushed, and the flushing of this try's.

    :param output_uri: the batch's final file; its parts live in ``<output_uri>.parts/``.
    :param columns: the parts' columns (the final file's).
    :param try_number: this try's number (names its parts).
    :param log: where resuming is reported.
    """

    def __init__(self, output_uri: str, columns: Sequence[str], try_number: int, log: TaskLog) -> None:
        self.folder = parts_folder(output_uri)
        self.columns = columns
        self.try_number = try_number
        self.log = log
        self._next = 0

    def answers(
        self, iccids: Sequence[str], query: Callable[[list[str]], Iterable[ImeiRecord]]
    ) -> Iterator[ImeiRecord]:
        """
        One record per entry of ``iccids``: the earlier tries' answers, then ``query`` of the rest, flushed.

        :param iccids: the batch, in order (an ICCID listed twice gets two records, as a first try gives).
        :param query: queries a list of ICCIDs, e.g. ``lambda todo: hook.query_imeis(todo, workers)``.
        """
        done = self.done(iccids)
        left = [number for number in iccids if number not in done]
        return chain((done[number] for number in iccids if number in done), self.flushed(query(left)))

    def done(self, iccids: Sequence[str]) -> dict[str, ImeiRecord]:
        """The answers already flushed for ``iccids`` (earlier tries' whole parts; other SIMs are ignored)."""
        wanted = set(iccids)
        done: dict[str, ImeiRecord] = {}
        parts = self._parts()
        for part in parts:
            for row in read_own_csv(part):
                if row["iccid"] in wanted and not row.get("error"):
                    done.setdefault(row["iccid"], _record(row))
        numbers = [int(m.group(2)) for p in parts if (m := _PART_NAME.fullmatch(p.name))]
        self._next = max(numbers, default=-1) + 1  # never overwrite a part, even one of this same try number
        if parts:
            self.log.info(
                "Resuming: %d of %d SIMs answered by earlier tries (%d parts in %s); querying the other %d",
                len(done),
                len(wanted),
                len(parts),
                self.folder,
                len(wanted) - len(done),
            )
        return done

    def flushed(self, records: Iterable[ImeiRecord]) -> Iterator[ImeiRecord]:
        """Pass ``records`` through, flushing the answered ones (not the failed) to a new part as they pile up."""
        pending: list[dict[str, str | None]] = []
        since = time.monotonic()
        for record in records:
            if not record.error:
                pending.append(record.as_dict())
            if pending and (len(pending) >= PART_ROWS or time.monotonic() - since >= PART_SECONDS):
                self._write(pending)
                pending, since = [], time.monotonic()
            yield record
        # The rest is not flushed: the final file is written next, from these records, and then the parts go.

    def remove(self) -> None:
        """
        Remove the parts (and any half-written one): call once the final file is in place. Best effort: the batch
        is done, so a store that refuses a delete costs a warning (the parts are left), not the task.
        """
        try:
            if not self.folder.exists():
                return
            for leftover in self.folder.iterdir():
                leftover.unlink(missing_ok=True)
        except OSError as exc:
            self.log.warning("The batch is written, but its parts in %s were not all removed: %s", self.folder, exc)
            return
        with suppress(OSError, NotImplementedError):  # object stores have no folders to remove
            self.folder.rmdir()

    def _write(self, rows: list[dict[str, str | None]]) -> None:
        write_csv(self.folder / f"part-{self.try_number}-{self._next:05d}.csv", self.columns, rows)
        self._next += 1

    def _parts(self) -> list[ObjectStoragePath]:
        if not self.folder.exists():
            return []
        return sorted((p for p in self.folder.iterdir() if _PART_NAME.fullmatch(p.name)), key=lambda p: p.name)


def _record(row: dict[str, str]) -> ImeiRecord:
    """An answer read back from a part, as the query gave it (the part holds ``ImeiRecord.as_dict()``)."""
    return ImeiRecord(
        iccid=row["iccid"],
        current_imei=row.get("current_imei") or None,
        last_change=_instant(row.get("last_change")),
        previous_imei=row.get("previous_imei") or None,
    )


def _instant(text: str | None) -> pendulum.DateTime | None:
    """``last_change`` as ``as_dict()`` wrote it (ISO 8601, UTC), back to the DateTime it was."""
    if not text:
        return None
    return pendulum.instance(dt.datetime.fromisoformat(text))
