"""What every identifier validator shares: a templated value as text, a list of values, an offending value shown."""

from __future__ import annotations

from collections.abc import Callable

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


def validate_each(values: object, validate: Callable[..., str], field: str, noun: str) -> list[str]:
    """
    Validate one identifier (a plain string, never split on commas) or a list/tuple of them.

    :param values: the user's value.
    :param validate: the one-identifier validator; called with ``field=`` naming the item's position.
    :param field: the field name to report in errors, e.g. ``iccids``.
    :param noun: what one item is, e.g. ``ICCID``.
    """
    if isinstance(values, str):
        return [validate(values, field=field)]
    if isinstance(values, (list, tuple)):
        if not values:
            raise InvalidRequestError(field, f"at least one {noun} is required")
        return [validate(v, field=f"{field}[{i}]") for i, v in enumerate(values)]
    raise InvalidRequestError(field, f"must be a string or a list of strings, not {type(values).__name__}")
