"""
Errors raised by the provider.

The taxonomy follows what the caller should do next:

* :class:`InvalidRequestError` - the input breaks a documented rule; nothing was sent. Fix the input.
* :class:`AuthenticationError` - the platform refused the credentials; retrying cannot help.
* :class:`TransientError` - the platform or network failed in a way that may pass; the hook already
  retried within its budget.
* :class:`OutcomeUnknownError` - a non-idempotent request (an SMS) may or may not have been
  carried out; it must not be repeated blindly.
* :class:`M2mApiError` / :class:`DarajaApiError` - the platform answered with a failure of its own.
* :class:`ProtocolError` - the answer could not be understood (not XML, not JSON, wrong shape).
* :class:`RetryToSettleError` - a task tried every SIM and some are not settled; let Airflow retry the task
  (a retry settles only those, never repeating what was done). The one task failure of its own.

Messages never carry secrets: callers pass descriptions, never request bodies or headers.

This module imports nothing from Airflow, so the protocol code, which uses it, stays fast to import and runs
anywhere. The one Airflow task failure, :class:`RetryToSettleError` (a subclass of Airflow's
``AirflowException``), is defined in :mod:`airflow_provider_m2m.utils.task_failures` and imported from here on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_m2m.utils.task_failures import RetryToSettleError


class M2mProviderError(Exception):
    """Base class of every error raised by airflow-provider-m2m."""


class InvalidRequestError(M2mProviderError, ValueError):
    """
    An input breaks a documented rule; raised before anything is sent.

    :param field: the name of the offending input (``iccid``, ``message_text``, ...).
    :param rule: the rule it breaks, in words.
    :param value: a short, already safe rendering of the value, or None to leave it out.
    """

    def __init__(self, field: str, rule: str, value: str | None = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        shown = f" (got {value})" if value is not None else ""
        super().__init__(f"{field}: {rule}{shown}")


class AuthenticationError(M2mProviderError):
    """The platform refused the credentials or the permission; never retried."""


class TransientError(M2mProviderError):
    """A failure that may pass (timeout, connection error, 429, 502, 503, 504) outlived the retry budget."""


class OutcomeUnknownError(M2mProviderError):
    """
    A non-idempotent request may have reached the platform but no answer came back.

    :param sms_uid: the uid the request carried, so the outcome can be looked up later.
    """

    def __init__(self, message: str, sms_uid: str | None = None) -> None:
        self.sms_uid = sms_uid
        super().__init__(message)


class ProtocolError(M2mProviderError):
    """The platform's answer could not be understood (empty, HTML, truncated, wrong format)."""


class M2mApiError(M2mProviderError):
    """
    SIM Insight answered ``api_outcome`` failure.

    :param command: the command that failed (``query_imei``, ``send_sms``, ...).
    :param description: the platform's error description, e.g. ``invalid iccid``.
    :param status: the HTTP status of the answer: 200 for an ``api_outcome`` failure, a 4xx when the
        platform refused the request outright (its final word: never retried).
    :param iccid: the SIM the call was about (every per-SIM call names it), or None.
    """

    def __init__(self, command: str, description: str, status: int = 200, *, iccid: str | None = None) -> None:
        self.command = command
        self.description = description
        self.status = status
        self.iccid = iccid
        super().__init__(self._message())

    def _message(self) -> str:
        about = f" for SIM {self.iccid}" if self.iccid else ""
        return f"SIM Insight {self.command}{about} failed: {self.description}"

    def for_sim(self, iccid: str) -> M2mApiError:
        """This error, naming ``iccid`` (the SIM the call was about) from now on; returns itself."""
        self.iccid = iccid
        self.args = (self._message(),)
        return self


class DarajaApiError(M2mProviderError):
    """
    Daraja answered with an error body ``{requestId, errorCode, errorMessage}``.

    :param status: the HTTP status code.
    :param error_code: Daraja's error code, e.g. ``404.001.03``.
    :param error_message: Daraja's error message.
    :param request_id: Daraja's request id, for support tickets.
    :param number: the number the failed check was about, already masked (``*******0000``): numbers are
        not secrets, but they are personal data, and exception text ends up in task logs, where the
        operators show numbers masked too.
    """

    def __init__(
        self,
        status: int,
        error_code: str | None,
        error_message: str | None,
        request_id: str | None = None,
        number: str | None = None,
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id
        self.number = number
        ref = f", requestId {request_id}" if request_id else ""
        about = f" for {number}:" if number else ""
        super().__init__(
            f"Daraja error{about} HTTP {status} {error_code or '-'}: {error_message or '(no message)'}{ref}"
        )



def __getattr__(name: str) -> Any:
    # Imported on first use (PEP 562): it subclasses Airflow's AirflowException, and importing Airflow here
    # would make every protocol import load Airflow.
    if name == "RetryToSettleError":
        from airflow_provider_m2m.utils.task_failures import RetryToSettleError

        return RetryToSettleError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AuthenticationError",
    "DarajaApiError",
    "InvalidRequestError",
    "M2mApiError",
    "M2mProviderError",
    "OutcomeUnknownError",
    "ProtocolError",
    "RetryToSettleError",
    "TransientError",
]
