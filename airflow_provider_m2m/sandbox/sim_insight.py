"""
The SIM Insight side of the sandbox: XML commands over ``POST`` to any path that is not Daraja's or the control
API's.

This is the other side of the wire: the rules below (what an ICCID of the fleet is, the GSM-7 limit, the binary
payload, ``sms_uid`` and ``origin`` shapes) are the platform's, written from its documentation, and deliberately
do not import the provider's ``protocol`` modules. A provider bug then shows up as a disagreement instead of
being repeated on both sides.

A new command is one handler function ``(state, root, entry) -> (error, fields_xml)`` registered in
:data:`COMMANDS`.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
from lxml import etree

from . import sim_status
from .messages import XML_CT, Reply, Request
from .state import SandboxState, random_alnum

PLATFORM = "m2m"
EMPTY_CTYPE = XML_CT

_UID_RE = re.compile(r"^[A-Za-z0-9]{1,12}$")
_ORIGIN_RE = re.compile(r"^[0-9]{1,15}$")
_TS_FMT = "%d/%m/%Y %H:%M:%S"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'

_parsers = threading.local()


def _parser() -> etree.XMLParser:
    # lxml parsers are not thread-safe: one per server thread, never resolving entities or fetching anything.
    p = getattr(_parsers, "p", None)
    if p is None:
        p = _parsers.p = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    return p


def _fmt(dt: datetime | None) -> str:
    return dt.strftime(_TS_FMT) if dt is not None else ""


def _attr_safe(value: str) -> str:
    return re.sub(r"[^0-9A-Za-z_-]", "", value)[:64]


def _child_text(el: etree._Element, name: str) -> str | None:
    c = el.find(name)
    if c is None:
        return None
    return c.text or ""


def _response(command: str, api_id: str, outcome: str, fields: str = "") -> bytes:
    return (
        f'{_XML_DECL}<{command}_response api_id="{api_id}">'
        f"<api_outcome>{outcome}</api_outcome>{fields}</{command}_response>"
    ).encode()


def _failure(command: str, api_id: str, description: str) -> bytes:
    return _response(command, api_id, "failure", f"<error_description>{description}</error_description>")


# ---------------------------------------------------------------------- failure shapes (rate limit, faults)
def too_many(retry_after: int) -> Reply:
    """The platform's HTTP 429."""
    body = b"<error><description>rate limit exceeded</description></error>"
    return Reply(429, body, XML_CT, (("Retry-After", str(max(1, retry_after))),))


def server_error(status: HTTPStatus, headers: tuple[tuple[str, str], ...]) -> Reply:
    """A gateway error page (502/503/504) as a proxy in front of the platform answers it."""
    return Reply(status.value, status.phrase.encode(), "text/plain", headers)


def malformed(entry: dict[str, Any]) -> Reply:
    """HTTP 200 with a truncated XML answer."""
    cmd = entry["command"] if entry["command"] != "unknown" else "query_imei"
    return Reply(200, f'{_XML_DECL}<{_attr_safe(cmd)}_response api_id="'.encode(), XML_CT)


# ---------------------------------------------------------------------- requests
def peek(request: Request, entry: dict[str, Any]) -> etree._Element | None:
    """Parse the command and note its ICCID and SMS fields in the log entry (before any fault decides)."""
    if request.method != "POST":
        return None
    try:
        root = etree.fromstring(request.body, _parser())
    except (etree.XMLSyntaxError, ValueError):
        return None
    if isinstance(root.tag, str):
        entry["command"] = root.tag
        iccid = _child_text(root, "iccid")
        if iccid is not None:
            entry["iccid"] = iccid.strip()
        if root.tag == "send_sms":
            for name in ("message_text", "data_coding", "origin", "sms_uid"):
                entry[name] = _child_text(root, name)
    return root


def _authenticated(state: SandboxState, root: etree._Element) -> bool:
    auth = root.find("authentication")
    username = password = None
    if auth is not None:
        username, password = _child_text(auth, "username"), _child_text(auth, "password")
    c = state.creds
    return (
        username is not None
        and secrets.compare_digest(username.encode(), c["m2m_username"].encode())
        and password is not None
        and secrets.compare_digest(password.encode(), c["m2m_password"].encode())
        and root.get("api_id") == c["m2m_api_id"]
    )


def answer(state: SandboxState, request: Request, root: etree._Element | None, entry: dict[str, Any]) -> Reply:
    """Run one command; every answer the platform gives to a readable request is HTTP 200."""
    if request.method != "POST":
        return Reply(405, b"use POST", "text/plain", (("Allow", "POST"),))
    if root is None or not isinstance(root.tag, str):
        entry["outcome"], entry["error"] = "failure", "invalid content"
        return Reply(200, _failure("unknown", "", "invalid content"))
    command = _attr_safe(root.tag)
    echo_id = _attr_safe(root.get("api_id") or "")
    error: str | None
    if not _authenticated(state, root):
        error, fields = "authentication failed", ""
    elif (handler := COMMANDS.get(root.tag)) is None or root.get("version") != "1":
        error, fields = "invalid content", ""
    else:
        error, fields = handler(state, root, entry)
    if error:
        entry["outcome"], entry["error"] = "failure", error
        return Reply(200, _failure(command, echo_id, error))
    entry["outcome"] = "success"
    return Reply(200, _response(command, echo_id, "success", fields))


# ---------------------------------------------------------------------- commands
def _sim(state: SandboxState, root: etree._Element) -> tuple[str | None, str | None]:
    iccid = _child_text(root, "iccid")
    if iccid is None or not iccid.strip():
        return None, "invalid content"
    if iccid.strip() not in state.fleet.by_iccid:
        return None, "invalid iccid"
    return iccid.strip(), None


def query_imei(state: SandboxState, root: etree._Element, entry: dict[str, Any]) -> tuple[str | None, str]:
    """``query_imei``: the device the SIM sits in, when that changed, and the device before."""
    iccid, err = _sim(state, root)
    if iccid is None:  # err says why
        return err, ""
    sim = state.fleet.as_of(iccid, state.now())
    state.count(state.c_imei, iccid)
    return None, (
        f"<current_imei>{sim.current_imei or ''}</current_imei>"
        f"<last_change>{_fmt(sim.last_change)}</last_change>"
        f"<previous_imei>{sim.previous_imei or ''}</previous_imei>"
    )


def _message_error(text: str | None, coding: str) -> str | None:
    """The platform's own message rules: 160 GSM 7-bit septets, or base64 of at most 120 bytes."""
    if not text or coding not in ("default", "binary"):
        return "invalid content"
    if coding == "default":
        try:
            return "invalid content" if len(text.encode("gsm03.38")) > 160 else None
        except UnicodeError:
            return "invalid content"
    try:
        payload = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "invalid content"
    return None if payload and len(payload) <= 120 else "invalid content"


def _stripped(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


def send_sms(state: SandboxState, root: etree._Element, entry: dict[str, Any]) -> tuple[str | None, str]:
    """``send_sms``: store the message for the SIM; it settles into the SIM's fate after the delivery delay."""
    text = _child_text(root, "message_text")
    coding = (_child_text(root, "data_coding") or "default").strip()
    origin = _stripped(_child_text(root, "origin"))
    uid = _stripped(_child_text(root, "sms_uid"))
    entry.update(message_text=text, data_coding=coding, origin=origin, sms_uid=uid)
    iccid, err = _sim(state, root)
    err = err or _message_error(text, coding)
    if not err and origin is not None and not _ORIGIN_RE.match(origin):
        err = "invalid content"
    if not err and uid is not None and not _UID_RE.match(uid):
        err = "invalid content"
    if err or iccid is None:  # iccid is None only with err set
        return err, ""
    if uid is None:
        uid = entry["sms_uid"] = random_alnum(12)
    now = state.now()
    state.store_sms(
        iccid,
        {
            "iccid": iccid,
            "message_text": text,
            "data_coding": coding,
            "origin": origin,
            "sms_uid": uid,
            "sent": now,
            "settles": now + timedelta(seconds=state.sms_delivery_delay),
            "fate": state.fleet.sms_fate(iccid),
        },
    )
    return None, f"<sms_uid>{uid}</sms_uid>"


def query_sms_mt_details(state: SandboxState, root: etree._Element, entry: dict[str, Any]) -> tuple[str | None, str]:
    """``query_sms_mt_details``: the last ``lastx`` (1-20, default 1) messages to the SIM, newest first."""
    iccid, err = _sim(state, root)
    if iccid is None:  # err says why
        return err, ""
    lastx = _child_text(root, "lastx")
    if lastx is None or not lastx.strip():
        n = 1
    else:
        try:
            n = int(lastx.strip())
        except ValueError:
            return "invalid content", ""
        if not 1 <= n <= 20:
            return "invalid content", ""
    msgs = state.stored_sms(iccid)[-n:][::-1]
    if not msgs:
        return None, "<sms/>"
    parts = []
    now = state.now()
    for m in msgs:
        # Every message is pending until it settles into its SIM's fate; "pending" SIMs never settle.
        status = m["fate"] if now >= m["settles"] else "pending"
        el = etree.Element("sms")
        for tag, value in (
            ("sent_timestamp", _fmt(m["sent"])),
            ("sms_uid", m["sms_uid"]),
            ("status", status),
            ("delivered_timestamp", _fmt(m["settles"]) if status == "delivered" else ""),
            ("origin", "api"),
            ("message_text", m["message_text"]),
        ):
            etree.SubElement(el, tag).text = value
        parts.append(etree.tostring(el, encoding="unicode"))
    return None, "".join(parts)


#: The commands the sandbox serves: root element name -> handler.
COMMANDS: dict[str, Callable[[SandboxState, etree._Element, dict[str, Any]], tuple[str | None, str]]] = {
    "query_imei": query_imei,
    "send_sms": send_sms,
    "query_sms_mt_details": query_sms_mt_details,
    **sim_status.HANDLERS,  # query_status, set_status, query_usage
}
