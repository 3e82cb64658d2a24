"""Which errors fail a task at once, without Airflow retries: retrying cannot fix them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow_provider_m2m.exceptions import AuthenticationError, InvalidRequestError
from airflow_provider_m2m.utils.version_compat import AirflowFailException


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
