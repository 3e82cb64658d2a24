"""Which errors fail a task at once, without Airflow retries: retrying cannot fix them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow_provider_m2m.exceptions import AuthenticationError, InvalidRequestError, M2mProviderError
from airflow_provider_m2m.utils.version_compat import AirflowException, AirflowFailException


class RetryToSettleError(M2mProviderError, AirflowException):
    """
    A task tried every SIM and some are not settled (an SMS whose outcome is unknown, a status change the
    platform turned away for now): fail the task and let Airflow retry it. A retry settles only those SIMs
    (looking each up first), never repeating what was done. A subclass of Airflow's ``AirflowException``, so
    Airflow retries it like any task failure; failures that retrying cannot help raise ``AirflowFailException``.

    Import it from :mod:`airflow_provider_m2m.exceptions`.
    """


# Documented, and shown in tracebacks, where users import it from.
RetryToSettleError.__module__ = "airflow_provider_m2m.exceptions"


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
