"""
What one run of the fleet audit covers, for every kind of run; pure, no Airflow imports.

A night covers the changes made **before its cutoff**; a change at or after the cutoff belongs to a later
night only (also when the night is rerun after that later night, see
:func:`~airflow_provider_m2m.fleet_audit.rules.at_cutoff`). The cutoff is:

* the end of the run's data interval (``CronDataIntervalTimetable``: a ``@daily`` run for 1 March has the
  interval 1 March 00:00 - 2 March 00:00 and covers changes before 2 March 00:00);
* for an empty interval, its logical date (Airflow 3's plain ``@daily`` is a ``CronTriggerTimetable``: the run
  at 2 March 00:00 covers changes before 2 March 00:00, the same night as above); backfills are such runs too;
* for a manual run without a logical date (Airflow 3.2+), its ``run_after``: the moment it was triggered.

The night's folder (and its audit state) is named by its :attr:`Night.key`: the date the night covers when its
cutoff is a midnight (UTC), as for every daily run (both runs above write ``2026-03-01``); otherwise the cutoff
itself, ``YYYY-MM-DDTHHMMSSZ`` (a manual run triggered on 5 March at 14:30 writes ``2026-03-05T143000Z`` and
covers the changes up to then; the scheduled night of 5 March then reports only the changes after it).

The first audit of a fleet (no state yet) reports the changes the platform dates from ``since`` on: the start
of the data interval, or one day before the cutoff when the interval is empty or missing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DAY = dt.timedelta(days=1)
_TINY = dt.timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Night:
    """
    The span one audit run covers.

    :param cutoff: changes before this belong to the night; at or after it, to a later one.
    :param since: with no audit state for a SIM, a change from here on is reported (the first audit's window).
    :param date: the date the night covers (the date of the last moment before the cutoff).
    """

    cutoff: dt.datetime
    since: dt.datetime
    date: dt.date

    @property
    def key(self) -> str:
        """Names the night's folder and state: the date covered, or the cutoff when it is not a midnight (UTC)."""
        return night_key(self.cutoff)


def night_key(cutoff: dt.datetime) -> str:
    """
    The name of the night that ends at ``cutoff``: ``YYYY-MM-DD`` (the date covered) for a midnight, else the cutoff.

    >>> night_key(dt.datetime(2026, 3, 2, tzinfo=dt.UTC)), night_key(dt.datetime(2026, 3, 5, 14, 30, tzinfo=dt.UTC))
    ('2026-03-01', '2026-03-05T143000Z')
    """
    cutoff = _utc(cutoff)
    if cutoff == dt.datetime.combine(cutoff.date(), dt.time(), dt.UTC):
        return f"{cutoff - DAY:%Y-%m-%d}"
    return f"{cutoff:%Y-%m-%dT%H%M%SZ}"


def key_cutoff(key: str | dt.date) -> dt.datetime:
    """
    The cutoff a night's name stands for (the inverse of :func:`night_key`; a date is the night of that date).

    >>> key_cutoff("2026-03-01").isoformat(), key_cutoff("2026-03-05T143000Z").isoformat()
    ('2026-03-02T00:00:00+00:00', '2026-03-05T14:30:00+00:00')
    """
    if isinstance(key, dt.date):
        return dt.datetime.combine(key, dt.time(), dt.UTC) + DAY
    if "T" in key:
        return dt.datetime.strptime(key, "%Y-%m-%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    return dt.datetime.combine(dt.date.fromisoformat(key), dt.time(), dt.UTC) + DAY


def as_key(night: str | dt.date) -> str:
    """A night's name from its name or its date (a daily night)."""
    return night if isinstance(night, str) else f"{night:%Y-%m-%d}"


def night_of(
    data_interval_start: dt.datetime | None,
    data_interval_end: dt.datetime | None,
    run_after: dt.datetime | None = None,
) -> Night:
    """
    The night a run covers, from its data interval (possibly empty or missing) and its ``run_after``.

    A ``CronDataIntervalTimetable`` run and a ``CronTriggerTimetable`` (``@daily``) run of the same night:

    >>> import datetime as dt
    >>> march_2 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    >>> night_of(march_2 - DAY, march_2)
    Night(cutoff=datetime.datetime(2026, 3, 2, 0, 0, tzinfo=datetime.timezone.utc), \
since=datetime.datetime(2026, 3, 1, 0, 0, tzinfo=datetime.timezone.utc), date=datetime.date(2026, 3, 1))
    >>> night_of(march_2, march_2) == night_of(march_2 - DAY, march_2)
    True

    A manual run without a logical date, triggered on 5 March at 14:30:

    >>> night_of(None, None, dt.datetime(2026, 3, 5, 14, 30, tzinfo=dt.UTC)).key
    '2026-03-05T143000Z'

    :raises ValueError: neither an interval end nor ``run_after`` (nothing says what the run covers).
    """
    cutoff = data_interval_end or run_after
    if cutoff is None:
        raise ValueError("the run has neither a data interval nor a run_after: cannot tell which night it covers")
    if cutoff.tzinfo is None:
        raise ValueError(f"the night's cutoff {cutoff.isoformat()} must be timezone-aware")
    cutoff = _utc(cutoff)
    start = _utc(data_interval_start) if data_interval_start is not None else None
    since = start if start is not None and start < cutoff else cutoff - DAY
    return Night(cutoff=cutoff, since=since, date=(cutoff - _TINY).date())


def _utc(moment: dt.datetime) -> dt.datetime:
    """A plain ``datetime`` in UTC (pendulum's arithmetic can drop a stdlib tzinfo)."""
    return dt.datetime.fromtimestamp(moment.timestamp(), dt.UTC)


def night_of_context(context: Mapping[str, Any]) -> Night:
    """:func:`night_of` for a task's context (a manual run without a logical date has no data interval in it)."""
    dag_run = context.get("dag_run")
    return night_of(
        context.get("data_interval_start"),
        context.get("data_interval_end"),
        getattr(dag_run, "run_after", None),
    )
