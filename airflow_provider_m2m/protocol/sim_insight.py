"""
SIM Insight XML: request building, hardened response parsing and the records callers get back.

Requests are built with lxml so any text is escaped correctly (a carriage return travels as ``&#13;``).
Responses are parsed with entity resolution, DTD loading and network access off: an external entity or
an entity bomb never expands. The failure element's name is not published, so any element whose name
contains ``error`` or ``description`` is taken as the platform's description.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pendulum
from lxml import etree

from airflow_provider_m2m.exceptions import AuthenticationError, M2mApiError, ProtocolError
from airflow_provider_m2m.protocol import imei
from airflow_provider_m2m.protocol.delivery_states import delivery_state
from airflow_provider_m2m.protocol.excerpt import excerpt

CONTENT_TYPE = "application/xml"
# Descriptions that mean the account, not the request, is wrong: retrying or moving on cannot help.
_AUTH_WORDS = ("auth", "credential", "password", "username", "permission", "api_id", "forbidden")

# The one hardened parser for everything SIM Insight sends us, responses and pushes alike.
HARDENED_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
)


def build_request(
    command: str, *, api_id: str, username: str, password: str, fields: Iterable[tuple[str, str | None]] = ()
) -> bytes:
    """
    Serialise one SIM Insight request.

    :param command: the root element, e.g. ``query_imei``.
    :param api_id: the account's API id.
    :param username: the API username.
    :param password: the API password.
    :param fields: ``(element, text)`` pairs in order; a None text leaves the element out.
    """
    root = etree.Element(command, version="1", api_id=api_id)
    auth = etree.SubElement(root, "authentication")
    etree.SubElement(auth, "username").text = username
    etree.SubElement(auth, "password").text = password
    for name, text in fields:
        if text is not None:
            etree.SubElement(root, name).text = text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def parse_response(command: str, body: bytes, secrets: Iterable[str] = ()) -> dict[str, str | None]:
    """
    Parse a ``{command}_response``; return its child elements' text (empty elements as None).

    :raises ProtocolError: the body is empty, not XML, or not this command's response.
    :raises AuthenticationError: ``api_outcome`` failure because of the credentials or permissions.
    :raises M2mApiError: any other ``api_outcome`` failure, carrying the platform's description.
    """
    return _parse(command, body, secrets)[1]


def _parse(command: str, body: bytes, secrets: Iterable[str]) -> tuple[etree._Element, dict[str, str | None]]:
    """:func:`parse_response`, also giving back the root element for commands with repeated children."""
    root = _response_root(command, body, secrets)
    fields = _child_texts(root)
    outcome = fields.get("api_outcome")
    if outcome == "success":
        return root, fields
    if outcome != "failure":
        raise ProtocolError(f"SIM Insight {command}: api_outcome is {outcome!r}: {excerpt(body, secrets)}")
    description = _failure_description(fields, secrets)
    if any(word in description.lower() for word in _AUTH_WORDS):
        raise AuthenticationError(f"SIM Insight refused the credentials: {description}")
    raise M2mApiError(command, description)


def _response_root(command: str, body: bytes, secrets: Iterable[str]) -> etree._Element:
    """The ``{command}_response`` root of a well-formed body without a DTD; ProtocolError for anything else."""
    if not body.strip():
        raise ProtocolError(f"SIM Insight {command}: empty response body")
    try:
        root = etree.fromstring(body, HARDENED_PARSER)
    except etree.XMLSyntaxError:
        raise ProtocolError(
            f"SIM Insight {command}: response is not well-formed XML: {excerpt(body, secrets)}"
        ) from None
    if root.tag != f"{command}_response":
        raise ProtocolError(
            f"SIM Insight {command}: expected <{command}_response>, got <{root.tag}>: {excerpt(body, secrets)}"
        )
    if root.getroottree().docinfo.internalDTD is not None or root.getroottree().docinfo.doctype:
        # The platform never sends a DTD; one here is an attack (XXE, entity bomb) or a proxy's page.
        raise ProtocolError(f"SIM Insight {command}: response carries a DTD; refused")
    return root


def _child_texts(root: etree._Element) -> dict[str, str | None]:
    """Each child element's stripped text by tag (empty as None); comments and processing instructions skipped."""
    return {child.tag: (child.text or "").strip() or None for child in root if isinstance(child.tag, str)}


def _failure_description(fields: dict[str, str | None], secrets: Iterable[str]) -> str:
    """The platform's description of a failure, with any of ``secrets`` masked."""
    description = next(
        (text for tag, text in fields.items() if text and ("error" in tag or "description" in tag)), None
    )
    if description is None:
        # No named description element: fall back to the body's text, minus the outcome itself.
        leftover = " ".join(t for k, t in fields.items() if t and k != "api_outcome")
        description = leftover or "no description given"
    for secret in secrets:
        if secret:
            description = description.replace(secret, "***")
    return description


_TIMESTAMP = re.compile(r"(\d{2})/(\d{2})/(\d{4}) (\d{2}):(\d{2}):(\d{2})")


def parse_timestamp(text: str | None) -> pendulum.DateTime | None:
    """``dd/mm/yyyy hh:mm:ss`` (UTC) to a pendulum DateTime; None for an empty value."""
    if not text:
        return None
    match = _TIMESTAMP.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError
        day, month, year, hour, minute, second = map(int, match.groups())
        # Built directly rather than through strptime: ten times cheaper, and this runs once per SIM.
        return pendulum.DateTime(year, month, day, hour, minute, second, tzinfo=pendulum.UTC)
    except ValueError:
        raise ProtocolError(f"SIM Insight timestamp {text[:30]!r} is not a valid dd/mm/yyyy hh:mm:ss") from None


@dataclass(frozen=True, slots=True)
class ImeiRecord:
    """
    What SIM Insight knows about the device a SIM sits in.

    :param iccid: the SIM queried.
    :param current_imei: the 15-digit IMEI of the device now, or None when unknown.
    :param last_change: when the network recorded that IMEI (UTC), or None when unknown.
    :param previous_imei: the device before, or None (never changed, or unknown).
    :param error: why the query failed for this SIM; the other fields are None then.
    """

    iccid: str
    current_imei: str | None = None
    last_change: pendulum.DateTime | None = None
    previous_imei: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """JSON-safe dict; ``last_change`` as ISO 8601."""
        return {
            "iccid": self.iccid,
            "current_imei": self.current_imei,
            "last_change": self.last_change.isoformat() if self.last_change else None,
            "previous_imei": self.previous_imei,
            "error": self.error,
        }

    def changed_since(self, since: dt.datetime) -> bool:
        """True when the IMEI is known to have changed at or after ``since``."""
        return self.changed_in(since, None)

    def changed_in(self, since: dt.datetime | None, before: dt.datetime | None) -> bool:
        """
        True when the IMEI is known to have changed in the half-open window ``since <= last_change < before``.

        Half-open so that back-to-back windows (nightly runs) count a change at a boundary exactly once.
        Either bound may be None (unbounded); an unknown ``last_change`` is never a change.
        """
        if self.last_change is None:
            return False
        return (since is None or self.last_change >= since) and (before is None or self.last_change < before)


def imei_record(iccid: str, fields: dict[str, str | None]) -> ImeiRecord:
    """Build an :class:`ImeiRecord` from a successful ``query_imei`` response."""
    return ImeiRecord(
        iccid=iccid,
        current_imei=imei.normalize(fields.get("current_imei")),
        last_change=parse_timestamp(fields.get("last_change")),
        previous_imei=imei.normalize(fields.get("previous_imei")),
    )


@dataclass(frozen=True, slots=True)
class SmsReceipt:
    """
    The platform's acknowledgement of one SMS.

    :param iccid: the SIM the message went to.
    :param sms_uid: the message's uid (given or assigned by the platform).
    :param outcome: always ``success`` from the hook (a send that is not accepted raises instead). Kept,
        though it carries no information here, because :meth:`as_dict` is the row shape every SMS report
        shares (``SendSmsOperator``'s rows, the ledger, the delivery sensor's input), where ``unknown`` and
        ``failed`` do occur; and it is part of the published ``SmsReceipt`` API.
    """

    iccid: str
    sms_uid: str | None
    outcome: str = "success"

    def as_dict(self) -> dict[str, str | None]:
        """JSON-safe dict."""
        return {"iccid": self.iccid, "sms_uid": self.sms_uid, "outcome": self.outcome}


@dataclass(frozen=True, slots=True)
class SmsDetails:
    """
    One mobile-terminated message as ``query_sms_mt_details`` describes it.

    :param iccid: the SIM the message went to.
    :param sms_uid: the message's uid.
    :param status: the platform's status, as sent (``pending``, ``delivered``, ...).
    :param sent_timestamp: when it was sent (UTC), or None.
    :param delivered_timestamp: when it was delivered (UTC), or None.
    :param origin: ``api`` or ``portal``.
    :param message_text: the text.
    """

    iccid: str
    sms_uid: str | None
    status: str | None
    sent_timestamp: pendulum.DateTime | None = None
    delivered_timestamp: pendulum.DateTime | None = None
    origin: str | None = None
    message_text: str | None = None

    @property
    def state(self) -> str:
        """``delivered``, ``pending``, ``failed`` or ``unknown`` (a status this module does not know)."""
        return delivery_state(self.status)

    def as_dict(self) -> dict[str, str | None]:
        """JSON-safe dict; timestamps as ISO 8601, plus ``state``."""
        return {
            "iccid": self.iccid,
            "sms_uid": self.sms_uid,
            "status": self.status,
            "state": self.state,
            "sent_timestamp": self.sent_timestamp.isoformat() if self.sent_timestamp else None,
            "delivered_timestamp": self.delivered_timestamp.isoformat() if self.delivered_timestamp else None,
            "origin": self.origin,
            "message_text": self.message_text,
        }


def sms_mt_details(iccid: str, body: bytes, secrets: Iterable[str] = ()) -> list[SmsDetails]:
    """
    Parse ``query_sms_mt_details``: the SIM's recent messages, newest first; an empty list when the
    platform answers its one empty ``<sms>`` (no messages).
    """
    root, _ = _parse("query_sms_mt_details", body, secrets)
    messages = []
    for sms in root.iter("sms"):
        raw = {child.tag: child.text for child in sms if isinstance(child.tag, str)}
        item = {tag: (text or "").strip() or None for tag, text in raw.items()}
        if not any(item.values()):
            continue
        messages.append(
            SmsDetails(
                iccid=iccid,
                sms_uid=item.get("sms_uid"),
                status=item.get("status"),
                sent_timestamp=parse_timestamp(item.get("sent_timestamp")),
                delivered_timestamp=parse_timestamp(item.get("delivered_timestamp")),
                origin=item.get("origin"),
                message_text=raw.get("message_text"),  # as sent: spaces and line breaks are the text
            )
        )
    return messages


@dataclass(frozen=True, slots=True)
class SmsHistory:
    """
    One SIM's answer in a batch of ``query_sms_mt_details``: its messages, or why the query failed.

    :param iccid: the SIM.
    :param messages: its recent messages, newest first.
    :param error: why the query failed (``messages`` is empty then), or None.
    """

    iccid: str
    messages: tuple[SmsDetails, ...] = ()
    error: str | None = None

    def find(self, sms_uid: str) -> SmsDetails | None:
        """The message with ``sms_uid``, or None when it is not among them."""
        return next((m for m in self.messages if m.sms_uid == sms_uid), None)
