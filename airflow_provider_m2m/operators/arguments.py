"""Operator arguments as a DAG author writes them (often templated text), turned into checked values."""

from __future__ import annotations

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
