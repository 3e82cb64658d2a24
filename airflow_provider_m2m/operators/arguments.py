"""Operator arguments as a DAG author writes them (often templated text), turned into checked values."""

from __future__ import annotations

import datetime as dt

import pendulum

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.hooks.base import MAX_WORKERS_LIMIT


def as_int(value: object, field: str, low: int, high: int) -> int:
    """An integer from ``low`` to ``high``; a templated numeric string is accepted."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequestError(field, f"must be an integer from {low} to {high}", repr(value))
    return value


def as_workers(value: object) -> int | None:
    """``max_workers`` as given to an operator: None (or an empty template) means the hook's default."""
    return None if value in (None, "") else as_int(value, "max_workers", 1, MAX_WORKERS_LIMIT)


def as_instant(value: object, field: str) -> pendulum.DateTime | None:
    """An aware datetime, or an ISO 8601 string with a UTC offset, as a pendulum DateTime; None passes."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidRequestError(field, "must be an ISO 8601 date-time", repr(value)) from None
    if not isinstance(value, dt.datetime):
        raise InvalidRequestError(field, f"must be a datetime or an ISO 8601 string, not {type(value).__name__}")
    if value.tzinfo is None:
        raise InvalidRequestError(field, "must carry a timezone, e.g. 2026-11-20T00:00:00Z", repr(value.isoformat()))
    return pendulum.instance(value)


def as_window(since: object, before: object) -> tuple[pendulum.DateTime | None, pendulum.DateTime | None]:
    """``changed_since`` and ``changed_before`` parsed; an empty or reversed window is bad input naming both."""
    start, end = as_instant(since, "changed_since"), as_instant(before, "changed_before")
    if start is not None and end is not None and end <= start:
        raise InvalidRequestError(
            "changed_before",
            "must be later than changed_since (the window is changed_since <= last_change < changed_before)",
            f"{end.isoformat()} <= {start.isoformat()}",
        )
    return start, end
