"""Operator arguments as a DAG author writes them (often templated text), turned into checked values."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.hooks.base import MAX_WORKERS_LIMIT
from airflow_provider_m2m.protocol import iccid as iccid_rules
from airflow_provider_m2m.utils.fleet_file import fleet_iccids


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


def as_iccid_source(iccids: object, iccids_uri: object) -> list[str]:
    """
    Exactly one of ``iccids`` (the ICCIDs themselves) and ``iccids_uri`` (a CSV file of them): the checked
    ICCIDs to query.

    A file is read once, whole: it is one batch, which the hook's batch call holds as a list anyway, and every
    line is checked (see :func:`~airflow_provider_m2m.utils.fleet_file.fleet_iccids`) before anything is sent.
    """
    given = [name for name, value in (("iccids", iccids), ("iccids_uri", iccids_uri)) if value not in (None, "")]
    if len(given) != 1:
        raise InvalidRequestError(
            "iccids / iccids_uri",
            "give exactly one: iccids (the ICCIDs) or iccids_uri (a CSV file with an iccid column)",
            f"{' and '.join(given) or 'neither'} given",
        )
    if iccids_uri in (None, ""):
        return iccid_rules.validate_many(iccids)
    if not isinstance(iccids_uri, str):
        raise InvalidRequestError("iccids_uri", f"must be a URI string, not {type(iccids_uri).__name__}")
    numbers = list(fleet_iccids(iccids_uri, label="iccids_uri"))
    if not numbers:
        raise InvalidRequestError(f"iccids_uri {iccids_uri}", "at least one ICCID is required: the file lists none")
    return numbers


class RendersOnlyTemplates:
    """
    An operator mix-in: a templated list renders only its strings that hold template syntax.

    Airflow compiles every string of a templated list as a Jinja template of its own: for a batch of 5,000
    ICCIDs that was 25 s of a mapped task's start on a loaded 2-core scheduler (``benchmarks/scheduled_fleet.py``),
    a quarter of the batch's own work. A string without the environment's opening delimiters (``{{``, ``{%``,
    ``{#`` by default) renders to itself, so it is returned as it is; a template file path (``template_ext``)
    and every string with template syntax render as before.
    """

    template_ext: Any

    def render_template(self, content: Any, context: Any, jinja_env: Any = None, seen_oids: Any = None) -> Any:
        if isinstance(content, str) and jinja_env is not None and not _holds_template(content, jinja_env):
            if not content.endswith(tuple(self.template_ext)):
                return content
        return super().render_template(content, context, jinja_env, seen_oids)  # type: ignore[misc]


def _holds_template(text: str, jinja_env: Any) -> bool:
    """True when ``text`` holds an opening delimiter (or a line statement/comment prefix) of ``jinja_env``."""
    marks = (jinja_env.block_start_string, jinja_env.variable_start_string, jinja_env.comment_start_string)
    marks += tuple(m for m in (jinja_env.line_statement_prefix, jinja_env.line_comment_prefix) if m)
    return any(mark in text for mark in marks)
