"""
SIM status and usage on SIM Insight: the status words, and the records of ``query_status``,
``set_status`` and ``query_usage``.

The platform spells one state two ways: ``query_status`` answers ``deactivated`` while ``set_status``
takes ``de-activated``. Callers only ever see and give ``active`` / ``deactivated`` (any case);
:func:`set_status_word` makes the platform's spelling for the request. ``closed`` is permanent: it can
be read, never set, and a closed SIM must not be sent further calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from airflow_provider_m2m.exceptions import InvalidRequestError, ProtocolError
from airflow_provider_m2m.protocol.values import as_text, shown

ACTIVE, DEACTIVATED, CLOSED = "active", "deactivated", "closed"
#: The statuses ``set_status`` can give, each with the word the platform's ``set_status`` takes.
_SET_STATUS_WORDS = {ACTIVE: "active", DEACTIVATED: "de-activated"}
#: What ``query_status`` may answer, read case-insensitively (``de-activated`` too, should it echo that).
_QUERY_STATUS_WORDS = {"active": ACTIVE, "deactivated": DEACTIVATED, "de-activated": DEACTIVATED, "closed": CLOSED}


def validate_target(value: object, field: str = "status") -> str:
    """
    The status to set, ``active`` or ``deactivated`` (any case; ``de-activated`` accepted too).

    :raises InvalidRequestError: any other word, ``closed`` included (closing is not an API command).
    """
    word = as_text(value, field).lower()
    word = DEACTIVATED if word == "de-activated" else word
    if word not in _SET_STATUS_WORDS:
        rule = "closed is permanent and cannot be set" if word == CLOSED else "must be 'active' or 'deactivated'"
        raise InvalidRequestError(field, rule, shown(str(value)))
    return word


def set_status_word(status: str) -> str:
    """The platform's own spelling in a ``set_status`` request for a validated status."""
    return _SET_STATUS_WORDS[validate_target(status)]


def read_status(text: str | None) -> str | None:
    """A ``query_status`` answer as ``active`` / ``deactivated`` / ``closed``; None when empty."""
    if not text:
        return None
    status = _QUERY_STATUS_WORDS.get(text.strip().lower())
    if status is None:
        raise ProtocolError(f"SIM Insight query_status: unknown status {text[:30]!r}")
    return status


@dataclass(frozen=True, slots=True)
class SimStatus:
    """
    A SIM's status as ``query_status`` answered it.

    :param iccid: the SIM queried.
    :param status: ``active``, ``deactivated``, ``closed``, or None (unknown, or the query failed).
    :param error: why the query failed for this SIM, or None.
    """

    iccid: str
    status: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """JSON-safe dict."""
        return {"iccid": self.iccid, "status": self.status, "error": self.error}


@dataclass(frozen=True, slots=True)
class StatusChange:
    """
    The platform's acknowledgement of one ``set_status``.

    :param iccid: the SIM.
    :param status: the status set, ``active`` or ``deactivated``.
    :param outcome: ``success`` when the platform accepted the command.
    """

    iccid: str
    status: str
    outcome: str = "success"

    def as_dict(self) -> dict[str, str]:
        """JSON-safe dict."""
        return {"iccid": self.iccid, "status": self.status, "outcome": self.outcome}


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """
    A SIM's usage this calendar month (``query_usage``; the platform's figures lag by a few hours).

    :param iccid: the SIM queried.
    :param data_mb: data used, in MB.
    :param sms: chargeable SMS (MO + MOIP + MT).
    :param voice_mins: voice minutes, each call rounded up to a whole minute.
    :param error: why the query failed for this SIM (the figures are None then), or None.
    """

    iccid: str
    data_mb: float | None = None
    sms: int | None = None
    voice_mins: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, str | float | int | None]:
        """JSON-safe dict."""
        return {
            "iccid": self.iccid,
            "data_mb": self.data_mb,
            "sms": self.sms,
            "voice_mins": self.voice_mins,
            "error": self.error,
        }


def sim_status(iccid: str, fields: dict[str, str | None]) -> SimStatus:
    """Build a :class:`SimStatus` from a successful ``query_status`` response."""
    return SimStatus(iccid=iccid, status=read_status(fields.get("status")))


_Number = TypeVar("_Number", int, float)


def _number(fields: dict[str, str | None], name: str, kind: type[_Number]) -> _Number | None:
    text = fields.get(name)
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ProtocolError(f"SIM Insight query_usage: {name} {text[:30]!r} is not a number") from None


def usage_record(iccid: str, fields: dict[str, str | None]) -> UsageRecord:
    """Build a :class:`UsageRecord` from a successful ``query_usage`` response (an empty figure is None)."""
    return UsageRecord(
        iccid=iccid,
        data_mb=_number(fields, "data_mb", float),
        sms=_number(fields, "sms", int),
        voice_mins=_number(fields, "voice_mins", int),
    )
