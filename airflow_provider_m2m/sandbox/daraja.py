"""
The Safaricom Daraja side of the sandbox: OAuth client-credentials tokens and the IMSI / SIM-swap check.

Like :mod:`.sim_insight`, this is the other side of the wire: its MSISDN rule is Daraja's (12 digits
``254XXXXXXXXX``, nothing else accepted), written here on purpose instead of imported from the provider.
Daraja's Authorization FAQ: "Can I generate multiple tokens? Yes, but each request invalidates the previous
token": each app (consumer key) has one live token; a request with an older one gets HTTP 401 ``404.001.03``
(the knob ``one_live_token``, on by default).

A new endpoint is one handler function ``(state, request, entry) -> Reply`` registered in :data:`ROUTES`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from .fleet import DOCUMENTATION_SWAPS
from .messages import JSON_CT, Reply, Request, json_reply
from .state import SandboxState

PLATFORM = "daraja"
EMPTY_CTYPE = JSON_CT

_MSISDN_RE = re.compile(r"^254[0-9]{9}$")


def owns(path: str) -> bool:
    """Whether a request path is Daraja's (everything else but the control API is SIM Insight's)."""
    return path.startswith(("/oauth", "/imsi"))


def error(status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """Daraja's error body ``{"requestId", "errorCode", "errorMessage"}``."""
    body = {"requestId": uuid.uuid4().hex[:20], "errorCode": code, "errorMessage": message}
    return json_reply(status, body, headers)


# ---------------------------------------------------------------------- failure shapes (rate limit, faults)
def too_many(retry_after: int) -> Reply:
    """Daraja's HTTP 429."""
    return error(429, "429.001.01", "Too Many Requests", (("Retry-After", str(max(1, retry_after))),))


def server_error(status: HTTPStatus, headers: tuple[tuple[str, str], ...]) -> Reply:
    """A 502/503/504 in Daraja's error shape."""
    return error(status.value, f"{status.value}.001.01", status.phrase, headers)


def malformed(entry: dict[str, Any]) -> Reply:
    """HTTP 200 with a truncated JSON answer."""
    return Reply(200, b'{"access_token": "trunc', JSON_CT)


# ---------------------------------------------------------------------- requests
def _command(path: str) -> str:
    return "oauth" if path.startswith("/oauth") else "checkATI"


def peek(request: Request, entry: dict[str, Any]) -> None:
    """Note the command and, for a check, the number asked about in the log entry (before any fault decides)."""
    entry["command"] = _command(request.path)
    if entry["command"] == "checkATI":
        entry["msisdn"] = _customer_number(request.body)


def _customer_number(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    number = data.get("customerNumber") if isinstance(data, dict) else None
    return number if isinstance(number, str) else None


def answer(state: SandboxState, request: Request, peeked: None, entry: dict[str, Any]) -> Reply:
    """Route to the endpoint's handler; an unknown path or method is Daraja's 404."""
    handler = ROUTES.get((request.method, request.path.rstrip("/")))
    if handler is None:
        return error(404, "404.001.01", "Resource not found")
    return handler(state, request, entry)


def oauth(state: SandboxState, request: Request, entry: dict[str, Any]) -> Reply:
    """``GET /oauth/v1/generate?grant_type=client_credentials`` with HTTP Basic key:secret."""
    if request.query_value("grant_type") != "client_credentials":
        return error(400, "400.008.01", "Invalid grant type passed")
    auth = request.headers.get("Authorization") or ""
    ok = False
    if auth[:6].lower() == "basic ":
        try:
            key, _, secret = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            key = secret = ""
        creds = state.creds
        ok = secrets.compare_digest(key.encode(), creds["daraja_key"].encode()) and secrets.compare_digest(
            secret.encode(), creds["daraja_secret"].encode()
        )
    if not ok:
        return Reply(400, b"", JSON_CT)  # what Daraja answers to bad credentials: 400, empty body
    token, ttl = state.issue_token(key)  # Daraja: "each request invalidates the previous token" of the app
    return json_reply(200, {"access_token": token, "expires_in": ttl})


def check_ati(state: SandboxState, request: Request, entry: dict[str, Any]) -> Reply:
    """``POST /imsi/v1/checkATI`` with a bearer token: the last SIM swap and the registration date of a number."""
    auth = request.headers.get("Authorization") or ""
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not token or not state.token_valid(token):
        return error(401, "404.001.03", "Invalid Access Token")
    number = entry["msisdn"]
    if number is None or not _MSISDN_RE.match(number):
        return error(400, "400.002.02", "Bad Request - Invalid customerNumber")
    # The fleet's numbers first, then the documentation's own examples (so copied recipes work).
    swap = state.fleet.swaps.get(number) or DOCUMENTATION_SWAPS.get(number)
    if swap is None:
        return error(404, "404.001.01", "Resource not found")
    state.count(state.c_checks, number)
    return json_reply(
        200,
        {
            "requestRefID": str(uuid.uuid4()),
            "responseCode": "200",
            "responseDesc": "Success",
            "imsi": swap.imsi_hash,
            "lastSwapDate": swap.last_swap_text,
            "msisdnRegistrationDate": swap.registration_text,
            "customerNumber": number,
        },
    )


#: The endpoints the sandbox serves: (method, path) -> handler.
ROUTES: dict[tuple[str, str], Callable[[SandboxState, Request, dict[str, Any]], Reply]] = {
    ("GET", "/oauth/v1/generate"): oauth,
    ("POST", "/imsi/v1/checkATI"): check_ati,
}
