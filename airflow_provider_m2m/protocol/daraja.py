"""
Safaricom Daraja JSON: the OAuth token answer, the IMSI check (``checkATI``) answer and error bodies.

Daraja writes dates loosely: ``lastSwapDate`` as ``dd-mm-yyyy`` or ``dd-mm-yyyy HH:MM`` with
``01-01-1900`` meaning "no swap in the last 3 months"; ``msisdnRegistrationDate`` as ``dd-mm-yyyy``,
``yyyy-mm-dd`` or a sentence such as "MSISDN registration is more than one year old". Errors come as
HTTP 4xx/5xx with ``{"requestId", "errorCode", "errorMessage"}``.

Token bodies are never quoted in errors (even a truncated one carries part of a token).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pendulum

from airflow_provider_m2m.exceptions import DarajaApiError, ProtocolError
from airflow_provider_m2m.protocol.excerpt import excerpt
from airflow_provider_m2m.protocol.msisdn import masked

#: Error codes that mean "the access token is not (or no longer) valid".
INVALID_TOKEN_CODES = frozenset({"404.001.03"})
#: ``lastSwapDate`` when the last swap (if any) is older than 3 months.
SWAP_SENTINEL_YEAR = 1900

_TIME = r"(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?"
_DMY = re.compile(r"(\d{1,2})[-/](\d{1,2})[-/](\d{4})" + _TIME)
_YMD = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})" + _TIME)


def _json_object(body: bytes, what: str, *, quote: bool = True) -> dict[str, Any]:
    if not body.strip():
        raise ProtocolError(f"Daraja {what}: empty response body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        shown = f": {excerpt(body)}" if quote else f" ({len(body)} bytes)"
        raise ProtocolError(f"Daraja {what}: response is not JSON{shown}") from None
    if not isinstance(data, dict):
        shown = f": {excerpt(body)}" if quote else ""
        raise ProtocolError(f"Daraja {what}: expected a JSON object, got {type(data).__name__}{shown}")
    return data


def _text(value: Any) -> str | None:
    """A JSON scalar as stripped text; None for null or empty."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def parse_token(body: bytes) -> tuple[str, float]:
    """
    Parse ``/oauth/v1/generate``: return ``(access_token, expires_in seconds)``.

    ``expires_in`` arrives as a string (``"3599"``); an integer is accepted too.

    :raises ProtocolError: not JSON, no token, or an unreadable lifetime (the body is never quoted).
    """
    data = _json_object(body, "token", quote=False)
    token = data.get("access_token")
    if not isinstance(token, str) or not token.strip():
        raise ProtocolError(f"Daraja token: the answer has no access_token (keys: {sorted(data)[:10]})")
    raw = data.get("expires_in")
    try:
        lifetime = float(str(raw).strip())
    except ValueError:
        lifetime = -1.0
    if isinstance(raw, bool) or not lifetime > 0 or lifetime != lifetime or lifetime == float("inf"):
        raise ProtocolError(f"Daraja token: expires_in must be a positive number of seconds, got {raw!r}")
    return token.strip(), lifetime


def parse_error(body: bytes, status: int, msisdn: str | None = None) -> DarajaApiError:
    """
    Turn an error answer into a :class:`DarajaApiError` (returned, not raised).

    A JSON ``{requestId, errorCode, errorMessage}`` body gives the code and message; any other body (an
    HTML page from a gateway, nothing at all) gives no code and a short excerpt as the message. With
    ``msisdn`` (the number checked), the error names it, masked to its last 4 digits.
    """
    number = masked(msisdn) if msisdn else None
    try:
        data = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and ("errorCode" in data or "errorMessage" in data):
        return DarajaApiError(
            status, _text(data.get("errorCode")), _text(data.get("errorMessage")), _text(data.get("requestId")), number
        )
    message = f"non-JSON body {excerpt(body)}" if body.strip() else "empty body"
    return DarajaApiError(status, None, message, number=number)


def _date(match: re.Match[str], day: int, month: int, year: int, field: str, text: str) -> pendulum.Date:
    try:
        return pendulum.Date(int(match.group(year)), int(match.group(month)), int(match.group(day)))
    except ValueError:
        raise ProtocolError(f"Daraja {field} {text[:40]!r} is not a real date") from None


def parse_date(text: str | None, field: str = "date") -> pendulum.Date | None:
    """
    ``dd-mm-yyyy`` or ``yyyy-mm-dd``, optionally followed by ``HH:MM[:SS]`` (dropped); None when empty.

    :raises ProtocolError: any other shape, or an impossible date.
    """
    text = (text or "").strip()
    if not text:
        return None
    if match := _DMY.fullmatch(text):
        return _date(match, 1, 2, 3, field, text)
    if match := _YMD.fullmatch(text):
        return _date(match, 3, 2, 1, field, text)
    raise ProtocolError(f"Daraja {field} {text[:40]!r} is not dd-mm-yyyy[ HH:MM] or yyyy-mm-dd")


def parse_swap_date(text: str | None) -> pendulum.Date | None:
    """
    ``lastSwapDate``: the swap date, or None for the ``01-01-1900`` "no swap in 3 months" sentinel.

    :raises ProtocolError: missing or unreadable (an absent date must not pass for "no swap").
    """
    if not (text or "").strip():
        raise ProtocolError("Daraja checkATI: the answer has no lastSwapDate")
    value = parse_date(text, "lastSwapDate")
    if value is None or value.year <= SWAP_SENTINEL_YEAR:
        return None
    return value


def parse_registration(text: str | None) -> tuple[pendulum.Date | None, str | None]:
    """
    ``msisdnRegistrationDate``: ``(date, None)`` for a date, ``(None, sentence)`` for a message such as
    "MSISDN registration is more than one year old", ``(None, None)`` when empty.

    :raises ProtocolError: digits that do not make a date.
    """
    text = " ".join((text or "").split())
    if not text:
        return None, None
    if not any(ch.isalpha() for ch in text):
        return parse_date(text, "msisdnRegistrationDate"), None
    return None, text[:200]


@dataclass(frozen=True, slots=True)
class SimSwapRecord:
    """
    Daraja's IMSI check for one MSISDN.

    :param msisdn: the number checked, 12 digits (``2547XXXXXXXX``).
    :param last_swap_date: the last SIM swap within the last 3 months, or None (none in that window).
    :param registration_date: when the number was registered, or None (unknown or only a note).
    :param registration_note: Daraja's sentence instead of a date, e.g. "more than one year old".
    :param imsi_hash: Daraja's hashed IMSI (not a real IMSI); it changes when the SIM changes.
    :param request_ref_id: Daraja's reference of the check, for support tickets.
    :param error: why the check failed for this number; the other fields are None then.
    """

    msisdn: str
    last_swap_date: pendulum.Date | None = None
    registration_date: pendulum.Date | None = None
    registration_note: str | None = None
    imsi_hash: str | None = None
    request_ref_id: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """JSON-safe dict; dates as ISO 8601 (``yyyy-mm-dd``)."""
        return {
            "msisdn": self.msisdn,
            "last_swap_date": self.last_swap_date.isoformat() if self.last_swap_date else None,
            "registration_date": self.registration_date.isoformat() if self.registration_date else None,
            "registration_note": self.registration_note,
            "imsi_hash": self.imsi_hash,
            "request_ref_id": self.request_ref_id,
            "error": self.error,
        }

    def swapped_within(self, days: int, today: pendulum.Date) -> bool:
        """True when the last swap is at most ``days`` days before ``today`` (a future date counts too)."""
        return self.last_swap_date is not None and (today - self.last_swap_date).days <= days


def parse_check(body: bytes, msisdn: str) -> SimSwapRecord:
    """
    Parse a successful ``checkATI`` answer for ``msisdn``.

    :raises DarajaApiError: the body is an error body, or ``responseCode`` is not success.
    :raises ProtocolError: not JSON, the answer is about another number, or a date is unreadable.
    """
    data = _json_object(body, "checkATI")
    if "errorCode" in data and "responseCode" not in data:
        raise parse_error(body, 200, msisdn)
    code = _text(data.get("responseCode"))
    if code is not None and code not in ("200", "0"):
        ref = _text(data.get("requestRefID"))
        raise DarajaApiError(200, code, _text(data.get("responseDesc")), ref, masked(msisdn))
    answered = _text(data.get("customerNumber"))
    if answered is not None and answered.lstrip("+") != msisdn:
        raise ProtocolError(f"Daraja checkATI for {masked(msisdn)}: the answer is about {masked(answered)}")
    registration, note = parse_registration(_text(data.get("msisdnRegistrationDate")))
    return SimSwapRecord(
        msisdn=msisdn,
        last_swap_date=parse_swap_date(_text(data.get("lastSwapDate"))),
        registration_date=registration,
        registration_note=note,
        imsi_hash=_text(data.get("imsi")),
        request_ref_id=_text(data.get("requestRefID")),
    )
