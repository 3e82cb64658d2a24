"""
The sandbox HTTP server: SIM Insight (XML) and Safaricom Daraja (JSON) on one local port.

Stdlib + lxml only. No Airflow imports. See :class:`Sandbox` for the Python API and the package
docstring for the control API.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import math
import random
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
from lxml import etree

from . import sim_status
from .fleet import Fleet, midnight_utc

SANDBOX_CREDENTIALS: dict[str, str] = {
    "m2m_username": "sandbox-user",
    "m2m_password": "sandbox-password",
    "m2m_api_id": "100001",
    "daraja_key": "sandbox-consumer-key",
    "daraja_secret": "sandbox-consumer-secret",
}

FAULT_KINDS = ("503", "429", "502", "504", "drop", "drop_after", "slow", "malformed", "html", "empty")
PLATFORMS = ("any", "m2m", "daraja")
COMMANDS = ("query_imei", "send_sms", "query_sms_mt_details", *sim_status.HANDLERS, "oauth", "checkATI")
_KNOBS = ("latency", "rate_limit", "token_ttl", "seed", "sms_delivery_delay", *SANDBOX_CREDENTIALS)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
XML_CT = "application/xml"
JSON_CT = "application/json"
_UID_RE = re.compile(r"^[A-Za-z0-9]{1,12}$")
_ORIGIN_RE = re.compile(r"^[0-9]{1,15}$")
_MSISDN_RE = re.compile(r"^254[0-9]{9}$")
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_TS_FMT = "%d/%m/%Y %H:%M:%S"
_XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'

_ENTRY: dict[str, Any] = dict.fromkeys(
    (
        "command",
        "iccid",
        "msisdn",
        "message_text",
        "data_coding",
        "origin",
        "sms_uid",
        "status",
        "fault",
        "outcome",
        "error",
        "time",
    )
)
_ENTRY["command"] = "unknown"

_parsers = threading.local()


def _parser() -> etree.XMLParser:
    p = getattr(_parsers, "p", None)
    if p is None:
        p = _parsers.p = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    return p


def _fmt(dt: datetime | None) -> str:
    return dt.strftime(_TS_FMT) if dt is not None else ""


class _Fault:
    __slots__ = ("count", "kind", "platform", "rate", "retry_after", "slow_seconds")

    def __init__(self, kind, count, rate, platform, retry_after, slow_seconds):
        self.kind, self.count, self.rate, self.platform = kind, count, rate, platform
        self.retry_after, self.slow_seconds = retry_after, slow_seconds


class _Reply:
    """A response to write: status, body, content type, extra headers; or a connection drop."""

    __slots__ = ("body", "ctype", "drop", "headers", "status")

    def __init__(self, status=200, body=b"", ctype=XML_CT, headers=(), drop=False):
        self.status, self.body, self.ctype, self.headers, self.drop = status, body, ctype, headers, drop


class SandboxState:
    """
    Everything the server knows: fleet, knobs, faults, stored SMS, tokens, counters and the log.

    Thread-safe; a single lock guards the mutable parts.

    :param fleet: the :class:`Fleet` served.
    :param latency: seconds added to every platform request.
    :param rate_limit: platform requests per second (token bucket); 0 = unlimited.
    :param token_ttl: lifetime of a Daraja access token in seconds (served as ``expires_in``).
    :param seed: seed of the fault RNG (faults with ``rate``).
    :param sms_delivery_delay: seconds after which a message to a SIM whose fate is ``delivered`` or
        ``failed`` (:meth:`Fleet.sms_fate`) leaves ``pending``.
    :param credentials: ``m2m_username``, ``m2m_password``, ``m2m_api_id``, ``daraja_key``,
        ``daraja_secret`` overrides.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        latency: float = 0.0,
        rate_limit: float = 0.0,
        token_ttl: float = 3599,
        seed: int = 0,
        sms_delivery_delay: float = 2.0,
        **credentials: str,
    ) -> None:
        unknown = set(credentials) - set(SANDBOX_CREDENTIALS)
        if unknown:
            raise TypeError(f"unknown sandbox options: {sorted(unknown)}")
        self.fleet = fleet
        self.lock = threading.Lock()
        self.creds = {**SANDBOX_CREDENTIALS, **{k: str(v) for k, v in credentials.items()}}
        self._defaults = {
            "latency": latency,
            "rate_limit": rate_limit,
            "token_ttl": token_ttl,
            "seed": seed,
            "sms_delivery_delay": sms_delivery_delay,
        }
        self.tokens: dict[str, float] = {}
        self.issued: list[str] = []  # every access token ever issued (kept across reset/revoke), for leak checks
        self._apply_defaults()
        self._clear()

    # ------------------------------------------------------------------ knobs
    def _apply_defaults(self) -> None:
        d = self._defaults
        self.latency = float(d["latency"])
        self.token_ttl = float(d["token_ttl"])
        self.seed = int(d["seed"])
        self.rng = random.Random(self.seed)
        self.sms_delivery_delay = float(d["sms_delivery_delay"])
        self._set_rate(float(d["rate_limit"]))

    def _set_rate(self, rate: float) -> None:
        self.rate_limit = max(0.0, rate)
        self.burst = max(1.0, min(20.0, self.rate_limit / 10))
        self.bucket = self.burst
        self.bucket_t = time.monotonic()

    def configure(self, **knobs: Any) -> None:
        """Change knobs at run time: ``latency``, ``rate_limit``, ``token_ttl``, ``seed``,
        ``sms_delivery_delay`` (for messages sent from then on), credentials."""
        unknown = set(knobs) - set(_KNOBS)
        if unknown:
            raise TypeError(f"unknown sandbox knobs: {sorted(unknown)}")
        with self.lock:
            for k, v in knobs.items():
                if v is None:
                    continue
                if k == "latency":
                    self.latency = max(0.0, float(v))
                elif k == "rate_limit":
                    self._set_rate(float(v))
                elif k == "token_ttl":
                    self.token_ttl = float(v)
                elif k == "sms_delivery_delay":
                    self.sms_delivery_delay = max(0.0, float(v))
                elif k == "seed":
                    self.seed = int(v)
                    self.rng = random.Random(self.seed)
                else:
                    self.creds[k] = str(v)

    def inject(
        self,
        kind: str,
        *,
        count: int | None = None,
        rate: float | None = None,
        platform: str = "any",
        retry_after: float | None = None,
        slow_seconds: float = 2.0,
    ) -> None:
        """Add a fault; see :meth:`Sandbox.inject`."""
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r}; expected one of {PLATFORMS}")
        if count is not None and int(count) < 1:
            raise ValueError("count must be >= 1")
        if rate is not None and not 0.0 <= float(rate) <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        with self.lock:
            self.faults.append(
                _Fault(
                    kind,
                    None if count is None else int(count),
                    None if rate is None else float(rate),
                    platform,
                    retry_after,
                    float(slow_seconds),
                )
            )

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self.lock:
            self.faults.clear()

    def revoke_tokens(self) -> None:
        """Invalidate every Daraja access token issued so far."""
        with self.lock:
            self.tokens.clear()

    def _clear(self) -> None:
        self.faults: list[_Fault] = []
        self.sms: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.statuses = sim_status.SimStatuses(self.fleet.seed, self.fleet.by_iccid)
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=200_000)
        self.c_requests = 0
        self.c_by_command: collections.Counter[str] = collections.Counter()
        self.c_by_status: collections.Counter[int] = collections.Counter()
        self.c_faults: collections.Counter[str] = collections.Counter()
        self.c_rate_limited = 0
        # A gauge, not a counter: a reset must not zero it while a request is still being answered (its end()
        # would take it below zero, and "settled" checks would wait forever).
        self.in_flight = getattr(self, "in_flight", 0)
        self.max_in_flight = self.in_flight
        self.c_tokens = 0
        self.c_sms: collections.Counter[str] = collections.Counter()
        self.c_imei: collections.Counter[str] = collections.Counter()
        self.c_checks: collections.Counter[str] = collections.Counter()

    def reset(self) -> None:
        """Clear counters, log, stored SMS and faults; restore the default knobs (not credentials)."""
        with self.lock:
            self._clear()
            self._apply_defaults()

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (see :meth:`Sandbox.stats`)."""
        with self.lock:
            return {
                "requests": self.c_requests,
                "by_command": dict(self.c_by_command),
                "by_status": dict(self.c_by_status),
                "faults": dict(self.c_faults),
                "rate_limited": self.c_rate_limited,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "tokens_issued": self.c_tokens,
                "sms_per_iccid": dict(self.c_sms),
                "imei_queries_per_iccid": dict(self.c_imei),
                "checks_per_msisdn": dict(self.c_checks),
            }

    def received(self, command: str | None = None) -> list[dict[str, Any]]:
        """What was received, oldest first, optionally only one command."""
        with self.lock:
            if command is None:
                return [dict(e) for e in self.log]
            return [dict(e) for e in self.log if e["command"] == command]

    def stored_sms(self, iccid: str) -> list[dict[str, Any]]:
        """The messages stored for ``iccid``, oldest first."""
        with self.lock:
            return [dict(m) for m in self.sms.get(iccid, ())]

    # ------------------------------------------------------------------ per request
    def begin(self) -> tuple[float, float]:
        """Count a platform request entering; return (latency, retry_after or 0 if admitted)."""
        with self.lock:
            self.c_requests += 1
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight
            wait = 0.0
            if self.rate_limit > 0:
                now = time.monotonic()
                self.bucket = min(self.burst, self.bucket + (now - self.bucket_t) * self.rate_limit)
                self.bucket_t = now
                if self.bucket >= 1.0:
                    self.bucket -= 1.0
                else:
                    wait = max(1.0, math.ceil((1.0 - self.bucket) / self.rate_limit))
                    self.c_rate_limited += 1
            return self.latency, wait

    def end(self) -> None:
        """Count a platform request leaving."""
        with self.lock:
            self.in_flight -= 1

    def record(self, entry: dict[str, Any]) -> None:
        """Count and log a platform request's outcome."""
        with self.lock:
            self.c_by_command[entry["command"]] += 1
            if entry.get("status") is not None:
                self.c_by_status[entry["status"]] += 1
            if entry.get("fault"):
                self.c_faults[entry["fault"]] += 1
            self.log.append(entry)

    def pick_fault(self, platform: str) -> _Fault | None:
        """The fault (if any) that hits this request; consumes one of its ``count``."""
        with self.lock:
            for f in self.faults:
                if f.platform != "any" and f.platform != platform:
                    continue
                if f.rate is not None and self.rng.random() >= f.rate:
                    continue
                if f.count is not None:
                    f.count -= 1
                    if f.count <= 0:
                        self.faults.remove(f)
                return f
            return None

    def check_m2m_auth(self, username: str | None, password: str | None, api_id: str | None) -> bool:
        c = self.creds
        return (
            username is not None
            and secrets.compare_digest(username.encode(), c["m2m_username"].encode())
            and password is not None
            and secrets.compare_digest(password.encode(), c["m2m_password"].encode())
            and api_id == c["m2m_api_id"]
        )

    def store_sms(self, iccid: str, msg: dict[str, Any]) -> None:
        with self.lock:
            self.sms[iccid].append(msg)
            self.c_sms[iccid] += 1

    def issue_token(self) -> tuple[str, str]:
        token = "".join(secrets.choice(_ALNUM) for _ in range(28))
        with self.lock:
            ttl = self.token_ttl
            self.tokens[token] = time.monotonic() + ttl
            self.issued.append(token)
            self.c_tokens += 1
        return token, str(int(ttl))

    def token_valid(self, token: str) -> bool:
        with self.lock:
            exp = self.tokens.get(token)
            if exp is None:
                return False
            if time.monotonic() >= exp:
                del self.tokens[token]
                return False
            return True


# ---------------------------------------------------------------------- request handling
def _m2m_reply(command: str, api_id: str, outcome: str, fields: str = "") -> bytes:
    return (
        f'{_XML_DECL.decode()}<{command}_response api_id="{api_id}">'
        f"<api_outcome>{outcome}</api_outcome>{fields}</{command}_response>"
    ).encode()


def _m2m_fail(command: str, api_id: str, description: str) -> bytes:
    return _m2m_reply(command, api_id, "failure", f"<error_description>{description}</error_description>")


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _daraja_error(code: str, message: str) -> bytes:
    return _json({"requestId": uuid.uuid4().hex[:20], "errorCode": code, "errorMessage": message})


def _attr_safe(value: str) -> str:
    return re.sub(r"[^0-9A-Za-z_-]", "", value)[:64]


def _child_text(el: etree._Element, name: str) -> str | None:
    c = el.find(name)
    if c is None:
        return None
    return c.text or ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "m2m-sandbox/1.0"
    sys_version = ""
    server: SandboxHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -------------------------------------------------------------- plumbing
    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            n = int(length)
            return self.rfile.read(n) if n > 0 else b""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        return b""

    def _write(self, reply: _Reply) -> None:
        if reply.drop:
            self._drop()
            return
        body = reply.body
        head = [
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}\r\n"
            f"Server: m2m-sandbox\r\nContent-Type: {reply.ctype}\r\nContent-Length: {len(body)}\r\n"
        ]
        for k, v in reply.headers:
            head.append(f"{k}: {v}\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        self.wfile.write("".join(head).encode("latin-1") + body)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        path, _, query = self.path.partition("?")
        if path.startswith("/_sandbox"):
            try:
                reply = self._control(method, path, query, body)
            except (TypeError, ValueError, KeyError) as exc:
                reply = _Reply(400, _json({"error": str(exc)}), JSON_CT)
            self._write(reply)
            return
        self._platform(method, path, query, body)

    # -------------------------------------------------------------- control API
    def _control(self, method: str, path: str, query: str, body: bytes) -> _Reply:
        st = self.server.state
        name = path[len("/_sandbox") :].strip("/")
        data = json.loads(body) if body.strip() else {}
        if name == "stats" and method == "GET":
            return _Reply(200, _json(st.stats()), JSON_CT)
        if name == "received" and method == "GET":
            cmd = urllib.parse.parse_qs(query).get("command", [None])[0]
            return _Reply(200, _json(st.received(cmd)), JSON_CT)
        if name == "info" and method == "GET":
            f = st.fleet
            info = {"size": f.size, "seed": f.seed, "anchor": f.anchor.isoformat(), "url": self.server.url}
            return _Reply(200, _json(info), JSON_CT)
        if method != "POST":
            return _Reply(405, _json({"error": "method not allowed"}), JSON_CT)
        if name == "config":
            st.configure(**data)
        elif name == "inject":
            st.inject(**data)
        elif name == "clear_faults":
            st.clear_faults()
        elif name == "reset":
            st.reset()
        elif name == "revoke_tokens":
            st.revoke_tokens()
        else:
            return _Reply(404, _json({"error": f"unknown control endpoint {name!r}"}), JSON_CT)
        return _Reply(200, _json({"ok": True}), JSON_CT)

    # -------------------------------------------------------------- platform requests
    def _platform(self, method: str, path: str, query: str, body: bytes) -> None:
        st = self.server.state
        latency, wait = st.begin()
        entry = dict(_ENTRY, time=time.time())
        logged = False
        try:
            reply = self._platform_reply(method, path, query, body, entry, latency, wait)
            entry["status"] = None if reply.drop else reply.status
            st.record(entry)  # before answering, so a client that saw the answer also sees the log
            logged = True
            self._write(reply)
        except Exception as exc:  # pragma: no cover - keep the client from hanging
            entry["status"] = 500
            entry["error"] = f"{type(exc).__name__}: {exc}"
            if not logged:
                st.record(entry)
            try:
                self._write(_Reply(500, b"internal sandbox error", "text/plain"))
            except OSError:
                pass
        finally:
            st.end()

    def _platform_reply(self, method, path, query, body, entry, latency, wait) -> _Reply:
        if path.startswith("/oauth"):
            platform, entry["command"] = "daraja", "oauth"
        elif path.startswith("/imsi"):
            platform, entry["command"] = "daraja", "checkATI"
        else:
            platform = "m2m"
        if latency:
            time.sleep(latency)
        root = None
        if platform == "m2m":
            root = self._peek_m2m(method, body, entry)
        elif entry["command"] == "checkATI":
            try:
                number = json.loads(body).get("customerNumber")
            except (ValueError, UnicodeDecodeError, AttributeError):
                number = None
            entry["msisdn"] = number if isinstance(number, str) else None
        if wait:
            return self._too_many(platform, int(wait))
        fault = self.server.state.pick_fault(platform)
        if fault is None:
            return self._process(platform, method, path, query, body, root, entry)
        entry["fault"] = fault.kind
        if fault.kind == "slow":
            time.sleep(fault.slow_seconds)
            return self._process(platform, method, path, query, body, root, entry)
        if fault.kind == "drop_after":
            self._process(platform, method, path, query, body, root, entry)
            return _Reply(drop=True)
        return self._fault_reply(fault, platform, entry)

    def _peek_m2m(self, method: str, body: bytes, entry: dict[str, Any]) -> etree._Element | None:
        if method != "POST":
            return None
        try:
            root = etree.fromstring(body, _parser())
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

    def _too_many(self, platform: str, retry_after: int) -> _Reply:
        headers = (("Retry-After", str(max(1, retry_after))),)
        if platform == "daraja":
            return _Reply(429, _daraja_error("429.001.01", "Too Many Requests"), JSON_CT, headers)
        body = b"<error><description>rate limit exceeded</description></error>"
        return _Reply(429, body, XML_CT, headers)

    def _fault_reply(self, fault: _Fault, platform: str, entry: dict[str, Any]) -> _Reply:
        kind = fault.kind
        if kind == "drop":
            return _Reply(drop=True)
        if kind == "429":
            return self._too_many(platform, int(math.ceil(fault.retry_after or 1)))
        if kind in ("502", "503", "504"):
            status = int(kind)
            headers = ()
            if fault.retry_after is not None:
                headers = (("Retry-After", str(int(math.ceil(fault.retry_after)))),)
            if platform == "daraja":
                return _Reply(status, _daraja_error(f"{status}.001.01", _REASONS[status]), JSON_CT, headers)
            return _Reply(status, _REASONS[status].encode(), "text/plain", headers)
        if kind == "malformed":
            if platform == "daraja":
                return _Reply(200, b'{"access_token": "trunc', JSON_CT)
            cmd = entry["command"] if entry["command"] != "unknown" else "query_imei"
            return _Reply(200, f'{_XML_DECL.decode()}<{_attr_safe(cmd)}_response api_id="'.encode(), XML_CT)
        if kind == "html":
            page = b"<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Service error</h1></body></html>"
            return _Reply(200, page, "text/html; charset=utf-8")
        if kind == "empty":
            return _Reply(200, b"", JSON_CT if platform == "daraja" else XML_CT)
        raise ValueError(kind)  # pragma: no cover

    def _process(self, platform, method, path, query, body, root, entry) -> _Reply:
        if platform == "daraja":
            if entry["command"] == "oauth" and path.rstrip("/") == "/oauth/v1/generate" and method == "GET":
                return self._oauth(query)
            if entry["command"] == "checkATI" and path.rstrip("/") == "/imsi/v1/checkATI" and method == "POST":
                return self._check_ati(body, entry)
            return _Reply(404, _daraja_error("404.001.01", "Resource not found"), JSON_CT)
        if method != "POST":
            return _Reply(405, b"use POST", "text/plain", (("Allow", "POST"),))
        return _Reply(200, self._m2m(root, entry), XML_CT)

    # -------------------------------------------------------------- SIM Insight
    def _m2m(self, root: etree._Element | None, entry: dict[str, Any]) -> bytes:
        st = self.server.state
        if root is None or not isinstance(root.tag, str):
            entry["outcome"], entry["error"] = "failure", "invalid content"
            return _m2m_fail("unknown", "", "invalid content")
        command = _attr_safe(root.tag)
        api_id = root.get("api_id")
        echo_id = _attr_safe(api_id or "")
        auth = root.find("authentication")
        username = password = None
        if auth is not None:
            username, password = _child_text(auth, "username"), _child_text(auth, "password")
        if not st.check_m2m_auth(username, password, api_id):
            entry["outcome"], entry["error"] = "failure", "authentication failed"
            return _m2m_fail(command, echo_id, "authentication failed")
        handler = _M2M_COMMANDS.get(root.tag)
        if handler is None or root.get("version") != "1":
            entry["outcome"], entry["error"] = "failure", "invalid content"
            return _m2m_fail(command, echo_id, "invalid content")
        error, fields = handler(self, root, entry)
        if error:
            entry["outcome"], entry["error"] = "failure", error
            return _m2m_fail(command, echo_id, error)
        entry["outcome"] = "success"
        return _m2m_reply(command, echo_id, "success", fields)

    def _sim(self, root: etree._Element) -> tuple[str | None, str | None]:
        iccid = _child_text(root, "iccid")
        if iccid is None or not iccid.strip():
            return None, "invalid content"
        if iccid.strip() not in self.server.state.fleet.by_iccid:
            return None, "invalid iccid"
        return iccid.strip(), None

    def _query_imei(self, root, entry) -> tuple[str | None, str]:
        iccid, err = self._sim(root)
        if err:
            return err, ""
        sim = self.server.state.fleet.by_iccid[iccid]
        st = self.server.state
        with st.lock:
            st.c_imei[iccid] += 1
        return None, (
            f"<current_imei>{sim.current_imei or ''}</current_imei>"
            f"<last_change>{_fmt(sim.last_change)}</last_change>"
            f"<previous_imei>{sim.previous_imei or ''}</previous_imei>"
        )

    def _send_sms(self, root, entry) -> tuple[str | None, str]:
        text = _child_text(root, "message_text")
        coding = (_child_text(root, "data_coding") or "default").strip()
        origin = _child_text(root, "origin")
        uid = _child_text(root, "sms_uid")
        origin = origin.strip() if origin and origin.strip() else None
        uid = uid.strip() if uid and uid.strip() else None
        entry.update(message_text=text, data_coding=coding, origin=origin, sms_uid=uid)
        iccid, err = self._sim(root)
        if err:
            return err, ""
        if not text or coding not in ("default", "binary"):
            return "invalid content", ""
        if coding == "default":
            try:
                if len(text.encode("gsm03.38")) > 160:
                    return "invalid content", ""
            except UnicodeError:
                return "invalid content", ""
        else:
            try:
                payload = base64.b64decode(text.strip(), validate=True)
            except (binascii.Error, ValueError):
                return "invalid content", ""
            if not payload or len(payload) > 120:
                return "invalid content", ""
        if origin is not None and not _ORIGIN_RE.match(origin):
            return "invalid content", ""
        if uid is not None and not _UID_RE.match(uid):
            return "invalid content", ""
        if uid is None:
            uid = "".join(secrets.choice(_ALNUM) for _ in range(12))
            entry["sms_uid"] = uid
        st = self.server.state
        now = datetime.now(UTC)
        st.store_sms(
            iccid,
            {
                "iccid": iccid,
                "message_text": text,
                "data_coding": coding,
                "origin": origin,
                "sms_uid": uid,
                "sent": now,
                "settles": now + timedelta(seconds=st.sms_delivery_delay),
                "fate": st.fleet.sms_fate(iccid),
            },
        )
        return None, f"<sms_uid>{uid}</sms_uid>"

    def _query_sms(self, root, entry) -> tuple[str | None, str]:
        iccid, err = self._sim(root)
        if err:
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
        msgs = self.server.state.stored_sms(iccid)[-n:][::-1]
        if not msgs:
            return None, "<sms/>"
        parts = []
        now = datetime.now(UTC)
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

    # -------------------------------------------------------------- Daraja
    def _oauth(self, query: str) -> _Reply:
        st = self.server.state
        grant = urllib.parse.parse_qs(query).get("grant_type", [None])[0]
        if grant != "client_credentials":
            entry_body = _daraja_error("400.008.01", "Invalid grant type passed")
            return _Reply(400, entry_body, JSON_CT)
        auth = self.headers.get("Authorization") or ""
        ok = False
        if auth[:6].lower() == "basic ":
            try:
                key, _, secret = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, ValueError, UnicodeDecodeError):
                key = secret = ""
            ok = secrets.compare_digest(key.encode(), st.creds["daraja_key"].encode()) and secrets.compare_digest(
                secret.encode(), st.creds["daraja_secret"].encode()
            )
        if not ok:
            return _Reply(400, b"", JSON_CT)
        token, ttl = st.issue_token()
        return _Reply(200, _json({"access_token": token, "expires_in": ttl}), JSON_CT)

    def _check_ati(self, body: bytes, entry: dict[str, Any]) -> _Reply:
        st = self.server.state
        auth = self.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token or not st.token_valid(token):
            return _Reply(401, _daraja_error("404.001.03", "Invalid Access Token"), JSON_CT)
        try:
            data = json.loads(body)
            number = data.get("customerNumber") if isinstance(data, dict) else None
        except (ValueError, UnicodeDecodeError):
            number = None
        entry["msisdn"] = number if isinstance(number, str) else None
        if not isinstance(number, str) or not _MSISDN_RE.match(number):
            return _Reply(400, _daraja_error("400.002.02", "Bad Request - Invalid customerNumber"), JSON_CT)
        swap = st.fleet.swaps.get(number)
        if swap is None:
            return _Reply(404, _daraja_error("404.001.01", "Resource not found"), JSON_CT)
        with st.lock:
            st.c_checks[number] += 1
        return _Reply(
            200,
            _json(
                {
                    "requestRefID": str(uuid.uuid4()),
                    "responseCode": "200",
                    "responseDesc": "Success",
                    "imsi": swap.imsi_hash,
                    "lastSwapDate": swap.last_swap_text,
                    "msisdnRegistrationDate": swap.registration_text,
                    "customerNumber": number,
                }
            ),
            JSON_CT,
        )


_M2M_COMMANDS = {
    "query_imei": _Handler._query_imei,
    "send_sms": _Handler._send_sms,
    "query_sms_mt_details": _Handler._query_sms,
    **{name: lambda h, root, entry, f=f: f(h.server.state.statuses, root) for name, f in sim_status.HANDLERS.items()},
}


class SandboxHTTPServer(ThreadingHTTPServer):
    """The threading HTTP server; ``state`` holds the sandbox's :class:`SandboxState`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        self.state = state
        super().__init__(address, _Handler)
        host, port = self.server_address[:2]
        self.url = f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up (a batch closed early, a timed-out call) is normal: no traceback for it."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


# ---------------------------------------------------------------------- Python API
def _conn_env(url: str, creds: dict[str, str], timeout: float) -> dict[str, str]:
    m2m = {
        "conn_type": "m2m",
        "host": url,
        "login": creds["m2m_username"],
        "password": creds["m2m_password"],
        "extra": {"api_id": creds["m2m_api_id"], "timeout": timeout},
    }
    daraja = {
        "conn_type": "daraja",
        "host": url,
        "login": creds["daraja_key"],
        "password": creds["daraja_secret"],
        "extra": {"timeout": timeout},
    }
    return {"AIRFLOW_CONN_M2M_DEFAULT": json.dumps(m2m), "AIRFLOW_CONN_DARAJA_DEFAULT": json.dumps(daraja)}


class Sandbox:
    """
    A local SIM Insight + Daraja server running in a daemon thread of this process.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`)::

        with Sandbox(fleet=1000) as sb:
            os.environ.update(sb.conn_env())

    :param fleet: a :class:`Fleet`, or the number of SIMs to generate.
    :param latency: seconds added to every platform request (control requests excluded).
    :param port: TCP port on 127.0.0.1; 0 picks a free one.
    :param seed: fleet seed (when ``fleet`` is a size) and fault RNG seed.
    :param anchor: aware datetime, the end of "the last day" (default today's midnight UTC).
    :param rate_limit: platform requests per second over both platforms (0 = unlimited); excess
        answered HTTP 429 with ``Retry-After``.
    :param token_ttl: Daraja token lifetime in seconds.
    :param sms_delivery_delay: seconds until a message settles into its SIM's :meth:`Fleet.sms_fate`
        (``delivered`` or ``failed``; ``pending`` SIMs never settle). Default 2.
    :param host: interface to bind (default 127.0.0.1).
    :param credentials: overrides of :data:`SANDBOX_CREDENTIALS` (``m2m_username``, ``m2m_password``,
        ``m2m_api_id``, ``daraja_key``, ``daraja_secret``).
    """

    def __init__(
        self,
        fleet: Fleet | int = 1000,
        latency: float = 0.0,
        port: int = 0,
        seed: int = 0,
        anchor: datetime | None = None,
        *,
        rate_limit: float = 0.0,
        token_ttl: float = 3599,
        sms_delivery_delay: float = 2.0,
        host: str = "127.0.0.1",
        **credentials: str,
    ) -> None:
        self.fleet = fleet if isinstance(fleet, Fleet) else Fleet(int(fleet), seed=seed, anchor=anchor)
        self.state = SandboxState(
            self.fleet,
            latency=latency,
            rate_limit=rate_limit,
            token_ttl=token_ttl,
            seed=seed,
            sms_delivery_delay=sms_delivery_delay,
            **credentials,
        )
        self._address = (host, port)
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Sandbox:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is None:
            self._server = SandboxHTTPServer(self._address, self.state)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name="m2m-sandbox"
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            if self._thread is not None:
                self._thread.join(5)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (used by the CLI)."""
        if self._server is None:
            self._server = SandboxHTTPServer(self._address, self.state)
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None:
            self._server = SandboxHTTPServer(self._address, self.state)
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (both platforms and the control API)."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        """The credentials currently accepted."""
        return dict(self.state.creds)

    def conn_env(self, timeout: float = 10) -> dict[str, str]:
        """``AIRFLOW_CONN_M2M_DEFAULT`` / ``AIRFLOW_CONN_DARAJA_DEFAULT`` in Airflow's JSON format."""
        return _conn_env(self.url, self.state.creds, timeout)

    # ------------------------------------------------------------------ knobs
    def configure(self, **knobs: Any) -> None:
        """
        Change knobs at run time.

        :param knobs: ``latency``, ``rate_limit``, ``token_ttl``, ``seed``, ``sms_delivery_delay`` (seconds
            until a message settles into its SIM's :meth:`Fleet.sms_fate`) and the credential names.
        """
        self.state.configure(**knobs)

    def inject(
        self,
        kind: str,
        *,
        count: int | None = None,
        rate: float | None = None,
        platform: str = "any",
        retry_after: float | None = None,
        slow_seconds: float = 2.0,
    ) -> None:
        """
        Inject a fault into platform requests.

        :param kind: ``"503"``, ``"429"``, ``"502"``, ``"504"``, ``"drop"`` (close without answering, no
            side effect), ``"drop_after"`` (process, e.g. store the SMS, then close without answering),
            ``"slow"`` (sleep ``slow_seconds`` then answer normally), ``"malformed"`` (200, truncated
            body), ``"html"`` (200, an HTML page), ``"empty"`` (200, empty body).
        :param count: hit the next ``count`` matching requests, then disappear.
        :param rate: hit each matching request with this probability (seeded RNG). With neither
            ``count`` nor ``rate`` the fault hits every matching request until :meth:`clear_faults`.
        :param platform: ``"any"``, ``"m2m"`` or ``"daraja"``.
        :param retry_after: seconds sent as ``Retry-After`` (503/502/504 only when given; 429 default 1).
        :param slow_seconds: the delay of ``"slow"``.
        """
        self.state.inject(
            kind, count=count, rate=rate, platform=platform, retry_after=retry_after, slow_seconds=slow_seconds
        )

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self.state.clear_faults()

    def revoke_tokens(self) -> None:
        """Invalidate every Daraja access token issued so far."""
        self.state.revoke_tokens()

    def reset(self) -> None:
        """Clear counters, log, stored SMS and faults; restore construction-time knobs (not credentials)."""
        self.state.reset()

    def stats(self) -> dict[str, Any]:
        """
        Counters: ``requests``, ``by_command``, ``by_status`` (int status -> count), ``faults``,
        ``rate_limited``, ``in_flight``, ``max_in_flight``, ``tokens_issued``, ``sms_per_iccid``,
        ``imei_queries_per_iccid``, ``checks_per_msisdn``.
        """
        return self.state.stats()

    def issued_tokens(self) -> list[str]:
        """Every Daraja access token this sandbox has issued since it started (read-only copy), for leak checks."""
        with self.state.lock:
            return list(self.state.issued)

    def received(self, command: str | None = None) -> list[dict[str, Any]]:
        """
        What platform requests were received, oldest first (at most 200 000 kept).

        Each entry: ``command``, ``status`` (None for a dropped connection), ``fault``, ``time`` (epoch
        seconds), ``outcome``/``error`` for SIM Insight, ``iccid``, ``msisdn``, and for ``send_sms``
        ``message_text``, ``data_coding``, ``origin``, ``sms_uid``.

        :param command: only this command (``query_imei``, ``send_sms``, ``oauth``, ``checkATI``...).
        """
        return self.state.received(command)

    # ------------------------------------------------------------------ out of process
    @staticmethod
    def spawn(
        fleet: int | Fleet = 1000,
        latency: float = 0.0,
        port: int = 0,
        seed: int = 0,
        anchor: datetime | None = None,
        *,
        rate_limit: float = 0.0,
        token_ttl: float = 3599,
        startup_timeout: float = 60.0,
        **credentials: str,
    ) -> RemoteSandbox:
        """
        Run the sandbox in a subprocess; returns a :class:`RemoteSandbox` (a context manager).

        Parameters as for :class:`Sandbox`; a :class:`Fleet` passed in is reduced to its size, seed
        and anchor, which the subprocess regenerates.
        """
        if isinstance(fleet, Fleet):
            size, seed, anchor = fleet.size, fleet.seed, fleet.anchor
        else:
            size = int(fleet)
        anchor = anchor or midnight_utc()
        return RemoteSandbox(
            size=size,
            latency=latency,
            port=port,
            seed=seed,
            anchor=anchor,
            rate_limit=rate_limit,
            token_ttl=token_ttl,
            startup_timeout=startup_timeout,
            **credentials,
        )


READY_PREFIX = "SANDBOX_READY "


class RemoteSandbox:
    """
    A sandbox in a subprocess, driven over the control API; same methods as :class:`Sandbox`.

    The process starts on ``__enter__`` (or :meth:`start`) and is terminated on ``__exit__``.
    ``fleet`` is regenerated locally from the same size, seed and anchor.

    :param size: fleet size.
    :param latency: see :class:`Sandbox`.
    :param port: see :class:`Sandbox`.
    :param seed: see :class:`Sandbox`.
    :param anchor: see :class:`Sandbox`.
    :param rate_limit: see :class:`Sandbox`.
    :param token_ttl: see :class:`Sandbox`.
    :param startup_timeout: seconds to wait for the ready line.
    :param credentials: see :class:`Sandbox`.
    """

    def __init__(
        self,
        size: int = 1000,
        latency: float = 0.0,
        port: int = 0,
        seed: int = 0,
        anchor: datetime | None = None,
        *,
        rate_limit: float = 0.0,
        token_ttl: float = 3599,
        startup_timeout: float = 60.0,
        **credentials: str,
    ) -> None:
        unknown = set(credentials) - set(SANDBOX_CREDENTIALS)
        if unknown:
            raise TypeError(f"unknown sandbox options: {sorted(unknown)}")
        self.anchor = anchor or midnight_utc()
        self.fleet = Fleet(size, seed=seed, anchor=self.anchor)
        self._creds = {**SANDBOX_CREDENTIALS, **credentials}
        self._args = [
            sys.executable,
            "-m",
            "airflow_provider_m2m.sandbox",
            "--port",
            str(port),
            "--fleet",
            str(size),
            "--seed",
            str(seed),
            "--latency",
            str(latency),
            "--rate-limit",
            str(rate_limit),
            "--token-ttl",
            str(token_ttl),
            "--anchor",
            self.anchor.astimezone(UTC).isoformat(),
        ]
        for k, v in credentials.items():
            self._args += ["--" + k.replace("_", "-"), str(v)]
        self._timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> RemoteSandbox:
        """Start the subprocess and wait for its ready line."""
        if self.proc is not None:
            return self
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self._args, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        result: dict[str, Any] = {}

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith(READY_PREFIX):
                    result.update(json.loads(line[len(READY_PREFIX) :]))
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(self._timeout)
        if "url" not in result:
            self._stderr.seek(0)
            detail = self._stderr.read().decode(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"the sandbox subprocess did not become ready:\n{detail}")
        self.url = result["url"]
        self.port = int(result["port"])
        return self

    def stop(self) -> None:
        """Terminate the subprocess."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        self.proc = None

    def __enter__(self) -> RemoteSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ control API
    def _call(self, method: str, name: str, payload: Any = None, query: str = "") -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            f"{self.url}/_sandbox/{name}{query}",
            data=data if method == "POST" else None,
            method=method,
            headers={"Content-Type": JSON_CT},
        )
        if method == "POST" and data is None:
            req.data = b"{}"
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ValueError(f"sandbox control call {name} failed: {exc.code} {detail}") from None

    @property
    def credentials(self) -> dict[str, str]:
        """The credentials the subprocess accepts (as passed at spawn time or set since)."""
        return dict(self._creds)

    def conn_env(self, timeout: float = 10) -> dict[str, str]:
        """See :meth:`Sandbox.conn_env`."""
        return _conn_env(self.url, self._creds, timeout)

    def configure(self, **knobs: Any) -> None:
        """See :meth:`Sandbox.configure`."""
        self._call("POST", "config", knobs)
        self._creds.update({k: str(v) for k, v in knobs.items() if k in SANDBOX_CREDENTIALS})

    def inject(self, kind: str, **options: Any) -> None:
        """See :meth:`Sandbox.inject`."""
        self._call("POST", "inject", {"kind": kind, **options})

    def clear_faults(self) -> None:
        """See :meth:`Sandbox.clear_faults`."""
        self._call("POST", "clear_faults")

    def revoke_tokens(self) -> None:
        """See :meth:`Sandbox.revoke_tokens`."""
        self._call("POST", "revoke_tokens")

    def reset(self) -> None:
        """See :meth:`Sandbox.reset`."""
        self._call("POST", "reset")

    def stats(self) -> dict[str, Any]:
        """See :meth:`Sandbox.stats` (``by_status`` keys turned back into ints)."""
        s = self._call("GET", "stats")
        s["by_status"] = {int(k): v for k, v in s["by_status"].items()}
        return s

    def received(self, command: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`Sandbox.received`."""
        query = "?" + urllib.parse.urlencode({"command": command}) if command else ""
        return self._call("GET", "received", query=query)
