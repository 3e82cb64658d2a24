"""
SIM Insight push payloads (MO SMS, delivery receipts, usage alerts): XML in, one plain dict per item out.

Every payload is one item, rooted at its type (``post_sms``, ``post_delivery_receipt``, ``post_alert_sim_warning``,
``post_alert_sim_limit``), with the item's ``api_did`` and the passphrase configured on the platform. The parser
is the hardened one of :mod:`~airflow_provider_m2m.protocol.sim_insight` (no entities, no DTD, no network), and a
DTD is refused outright. The documented elements are read; unknown ones (the undocumented tail of a receipt) are
ignored. Error messages name the rule only, never a piece of the body: they may be answered to any sender.

>>> from airflow_provider_m2m.protocol import push
>>> payload = push.parse(b'''<post_sms version="1" api_did="0000061028">
...   <passphrase>password</passphrase><iccid>1234567890123456789</iccid><msisdn>447890000000</msisdn>
...   <timestamp>09/10/2014 16:28:15</timestamp><message_text>current status: de-activated</message_text>
... </post_sms>''')
>>> payload.passphrase
'password'
>>> payload.asset
'sim_insight_mo_sms'
>>> payload.item  # doctest: +NORMALIZE_WHITESPACE
{'payload': 'post_sms', 'api_did': '0000061028', 'iccid': '1234567890123456789', 'msisdn': '447890000000',
 'timestamp': '2014-10-09T16:28:15+00:00', 'text': 'current status: de-activated'}
>>> payload.push_id == push.parse(b'<post_sms api_did="0000061028"><iccid>1234567890123456789</iccid>'
...     b'<msisdn>447890000000</msisdn><timestamp>09/10/2014 16:28:15</timestamp>'
...     b'<message_text>current status: de-activated</message_text></post_sms>').push_id  # same item, again
True
>>> push.parse(b'<post_alert_sim_limit api_did="0000187012"><iccid>1234567890123456789</iccid>'
...     b'<cut_off_level_mb>2560</cut_off_level_mb><timestamp>09/01/2023 16:28:15</timestamp>'
...     b'</post_alert_sim_limit>').item  # doctest: +NORMALIZE_WHITESPACE
{'payload': 'post_alert_sim_limit', 'api_did': '0000187012', 'iccid': '1234567890123456789', 'msisdn': None,
 'timestamp': '2023-01-09T16:28:15+00:00', 'level': 'cut_off', 'level_mb': 2560.0}
>>> push.parse(b'<query_imei/>')
Traceback (most recent call last):
    ...
airflow_provider_m2m.protocol.push.PushPayloadError: not a SIM Insight push payload (unknown root element)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from lxml import etree

from airflow_provider_m2m.exceptions import InvalidRequestError, ProtocolError
from airflow_provider_m2m.protocol import iccid as iccid_rule
from airflow_provider_m2m.protocol.sim_insight import HARDENED_PARSER, parse_timestamp

ASSET_MO_SMS = "sim_insight_mo_sms"
ASSET_DELIVERY_RECEIPTS = "sim_insight_delivery_receipts"
ASSET_USAGE_ALERTS = "sim_insight_usage_alerts"

# Payload root -> the asset its items become events of.
ASSET_BY_ROOT = {
    "post_sms": ASSET_MO_SMS,
    "post_delivery_receipt": ASSET_DELIVERY_RECEIPTS,
    "post_alert_sim_warning": ASSET_USAGE_ALERTS,
    "post_alert_sim_limit": ASSET_USAGE_ALERTS,
}
# Alert root -> (the level named in the item, the element holding its threshold in MB).
_ALERT_LEVELS = {
    "post_alert_sim_warning": ("warning", "warning_level_mb"),
    "post_alert_sim_limit": ("cut_off", "cut_off_level_mb"),
}


class PushPayloadError(ValueError):
    """A pushed body is not a payload this receiver accepts; the message never quotes the body."""


@dataclass(frozen=True, slots=True)
class PushPayload:
    """
    One pushed item.

    :param asset: the asset name its event goes to.
    :param item: the parsed item (no passphrase): the event's ``extra``.
    :param passphrase: the passphrase the sender put in the body ('' when none).
    """

    asset: str
    item: dict
    passphrase: str

    @property
    def push_id(self) -> str:
        """
        The item's identity: a hash of its canonical form (payload type, ``api_did`` and every parsed field).

        A redelivery of the same item has the same id; two different items never share one, even if the
        platform's ``api_did`` (whose meaning is not documented) repeated.
        """
        canonical = json.dumps(self.item, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def parse_envelope(body: bytes) -> etree._Element:
    """
    The root element of a pushed body, parsed by the hardened parser.

    :raises PushPayloadError: empty, not well-formed XML, or carrying a DTD.
    """
    if not body.strip():
        raise PushPayloadError("empty body")
    try:
        root = etree.fromstring(body, HARDENED_PARSER)
    except etree.XMLSyntaxError:
        raise PushPayloadError("not well-formed XML") from None
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        # The platform never sends a DTD: one is an attack (XXE, entity bomb).
        raise PushPayloadError("a DTD is not accepted")
    return root


def passphrase_of(root: etree._Element) -> str:
    """The ``<passphrase>`` text of a parsed payload ('' when there is none)."""
    return (root.findtext("passphrase") or "").strip()


def parse(body: bytes) -> PushPayload:
    """
    Parse one pushed payload.

    :param body: the request body as received.
    :raises PushPayloadError: not XML, a DTD, an unknown root, or a documented field breaking its rule.
    """
    root = parse_envelope(body)
    return payload_of(root)


def payload_of(root: etree._Element) -> PushPayload:
    """
    The :class:`PushPayload` of an envelope :func:`parse_envelope` accepted.

    The rules every item shares are checked first (root, ``api_did``, ``iccid``, ``msisdn``, ``timestamp``, in
    that order), then the ones of its type; the first broken rule is the error.
    """
    kind = root.tag if isinstance(root.tag, str) else ""
    asset = ASSET_BY_ROOT.get(kind)
    if asset is None:
        raise PushPayloadError("not a SIM Insight push payload (unknown root element)")
    fields = {child.tag: (child.text or "").strip() or None for child in root if isinstance(child.tag, str)}
    item = _common_item(kind, root, fields)
    item.update(_ITEM_DETAILS[kind](kind, fields))
    return PushPayload(asset=asset, item=item, passphrase=passphrase_of(root))


def _common_item(kind: str, root: etree._Element, fields: dict[str, str | None]) -> dict:
    """What every item carries: its type, ``api_did``, ``iccid``, ``msisdn`` and ``timestamp``, each checked."""
    api_did = (root.get("api_did") or "").strip()
    if not api_did or not api_did.isdigit():
        raise PushPayloadError("api_did: every item carries its api_did, digits only")
    try:
        iccid = iccid_rule.validate(fields.get("iccid") or "", field="iccid")
    except InvalidRequestError as error:
        raise PushPayloadError(f"iccid: {error.rule}") from None
    msisdn = fields.get("msisdn")
    if msisdn is not None and not (msisdn.isdigit() and msisdn.isascii()):
        raise PushPayloadError("msisdn: international form, digits only")
    item: dict = {"payload": kind, "api_did": api_did, "iccid": iccid, "msisdn": msisdn}
    # A receipt's delivery time may come as <delivered_timestamp> (as in Query SMS-MT Details): UNVERIFIED.
    item["timestamp"] = _iso_time(fields.get("timestamp") or fields.get("delivered_timestamp"))
    return item


def _mo_sms_details(kind: str, fields: dict[str, str | None]) -> dict:
    """``post_sms``: the message text ('' when empty)."""
    return {"text": fields.get("message_text") or ""}


def _receipt_details(kind: str, fields: dict[str, str | None]) -> dict:
    """``post_delivery_receipt``: the message's uid and status (lower case); at least one of them."""
    sms_uid = fields.get("sms_uid")
    status = (fields.get("status") or "").lower() or None
    if sms_uid is None and status is None:
        raise PushPayloadError("post_delivery_receipt: needs sms_uid or status")
    return {"sms_uid": sms_uid, "status": status}


def _alert_details(kind: str, fields: dict[str, str | None]) -> dict:
    """``post_alert_sim_warning`` / ``post_alert_sim_limit``: the level crossed and its threshold in MB."""
    level, element = _ALERT_LEVELS[kind]
    return {"level": level, "level_mb": _megabytes(fields.get(element), element)}


# Payload root -> the fields only its items carry, checked after the common ones. One entry per ASSET_BY_ROOT key.
_ITEM_DETAILS = {
    "post_sms": _mo_sms_details,
    "post_delivery_receipt": _receipt_details,
    "post_alert_sim_warning": _alert_details,
    "post_alert_sim_limit": _alert_details,
}


def _iso_time(text: str | None) -> str | None:
    try:
        moment = parse_timestamp(text)
    except ProtocolError:
        raise PushPayloadError("timestamp: must be dd/mm/yyyy hh:mm:ss") from None
    return moment.isoformat() if moment is not None else None


def _megabytes(text: str | None, element: str) -> float:
    try:
        value = float(text or "")
    except ValueError:
        raise PushPayloadError(f"{element}: a number of MB") from None
    if not value >= 0 or value == float("inf"):
        raise PushPayloadError(f"{element}: a number of MB")
    return value
