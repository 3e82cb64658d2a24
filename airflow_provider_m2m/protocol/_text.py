"""Small helpers shared by the validators: coerce a templated value to text, show it safely."""

from __future__ import annotations

from airflow_provider_m2m.exceptions import InvalidRequestError


def as_text(value: object, field: str) -> str:
    """Return ``value`` as a stripped string, or raise if it is not a string (or an int for numbers)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidRequestError(field, f"must be a string, not {type(value).__name__}")
    return str(value).strip()


def shown(value: str, limit: int = 40) -> str:
    """A short, printable rendering of an offending value for error messages."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)
