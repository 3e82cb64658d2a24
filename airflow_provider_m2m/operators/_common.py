"""What the operators share: bad input fails the task at once, small argument coercions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_m2m.exceptions import AuthenticationError, InvalidRequestError
from airflow_provider_m2m.hooks.base import MAX_WORKERS_LIMIT


@contextmanager
def bad_input_fails_task() -> Iterator[None]:
    """
    Turn bad input and refused credentials into :class:`AirflowFailException`: retrying cannot fix either.

    The message is the rule that was broken, naming the field; nothing has been sent at that point.
    """
    try:
        yield
    except (InvalidRequestError, AuthenticationError) as exc:
        raise AirflowFailException(str(exc)) from None


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
