"""
The push receiver: SIM Insight POSTs its items here, inside Airflow's api-server, and each becomes an asset event.

One URL for every payload type, ``POST /sim-insight/push`` (a FastAPI app mounted by the api-server; the
prefix is outside Airflow's reserved ``/api/v2``, ``/ui``, ``/execution``, ``/auth``, ``/pluginsv2``).
Airflow's authentication does not cover plugin apps, so the receiver checks the passphrase in the body itself
against the password of the Airflow connection ``m2m_push_default``, in constant time.

Answers, in the order they are decided (a refusal records nothing and quotes nothing of the body):

* 413 body over :data:`MAX_BODY_BYTES`; 415 not ``text/xml`` / ``application/xml``;
* 400 not well-formed XML or a DTD (XXE, entity bombs);
* 401 wrong or missing passphrase (checked before the payload's content, so strangers learn nothing about it);
* 400 an unknown payload root or a documented field breaking its rule;
* 503 the ``m2m_push_default`` connection is missing or has no password; 500 the event could not be recorded
  (both: the platform retries later);
* 200 the item's event is committed (or already was: a redelivery).
"""

from __future__ import annotations

import hmac
import logging

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_m2m.protocol import push
from airflow_provider_m2m.push.events import record

log = logging.getLogger(__name__)

URL_PREFIX = "/sim-insight"
PUSH_PATH = "/push"
CONNECTION_ID = "m2m_push_default"
# One item is a few hundred bytes; 64 KiB leaves room for long texts and undocumented elements.
MAX_BODY_BYTES = 64 * 1024
_XML_TYPES = ("text/xml", "application/xml")

app = FastAPI(title="SIM Insight push receiver", docs_url=None, redoc_url=None, openapi_url=None)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


def _answer(status: int, text: str) -> PlainTextResponse:
    return PlainTextResponse(text + "\n", status_code=status)


@app.post(PUSH_PATH)
async def receive(request: Request) -> PlainTextResponse:
    """Receive one pushed item (see the module docstring for every answer)."""
    try:
        body = await _read_body(request)
        root = _envelope(body)
        passphrase = await run_in_threadpool(_expected_passphrase)
        # compare_digest on bytes: constant time whatever the texts hold.
        if not hmac.compare_digest(push.passphrase_of(root).encode(), passphrase.encode()):
            raise _Refused(401, "wrong or missing passphrase")
        try:
            payload = push.payload_of(root)
        except push.PushPayloadError as error:
            raise _Refused(400, str(error)) from None
    except _Refused as refused:
        log.warning("SIM Insight push refused: HTTP %s, %s", refused.status, refused.reason)
        return _answer(refused.status, refused.reason)
    try:
        event_id, created = await run_in_threadpool(record, payload)
    except Exception as error:  # any DB failure: 5xx, and the platform's retry delivers the item again
        log.error(
            "SIM Insight push %s api_did=%s not recorded: %s",
            payload.item["payload"],
            payload.item["api_did"],
            type(error).__name__,
        )
        return _answer(500, "not recorded; retry later")
    verb = "recorded as" if created else "already recorded as"
    log.info(
        "SIM Insight push %s api_did=%s %s %s event %s",
        payload.item["payload"],
        payload.item["api_did"],
        verb,
        payload.asset,
        event_id,
    )
    return _answer(200, "recorded")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise _Refused(413, f"body over {MAX_BODY_BYTES} bytes")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _XML_TYPES:
        raise _Refused(415, "content type must be text/xml")
    chunks, size = [], 0
    async for chunk in request.stream():  # chunked bodies have no length: count while reading
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Refused(413, f"body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _envelope(body: bytes):
    try:
        return push.parse_envelope(body)
    except push.PushPayloadError as error:
        raise _Refused(400, str(error)) from None


def _expected_passphrase() -> str:
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        connection = Connection.get_connection_from_secrets(CONNECTION_ID)
    except AirflowNotFoundException:
        log.error("SIM Insight push: no connection %s; define it with the passphrase as its password", CONNECTION_ID)
        raise _Refused(503, "receiver not configured") from None
    if not connection.password:
        # An empty passphrase would let anyone record events: refuse until one is set.
        log.error("SIM Insight push: connection %s has no password (the passphrase)", CONNECTION_ID)
        raise _Refused(503, "receiver not configured")
    return connection.password


class SimInsightPushPlugin(AirflowPlugin):
    """
    Serves :data:`app` under ``/sim-insight`` in the api-server.

    Registered through the ``airflow.plugins`` entry point, which Airflow loads with its default settings; not
    in ``get_provider_info``, whose plugins Airflow loads only with ``[core] lazy_discover_providers = False``
    (listed in both, eager discovery registered it twice and reported the second as an import error).
    """

    name = "sim_insight_push"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "SIM Insight push receiver"}]
