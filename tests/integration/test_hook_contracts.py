"""
The hooks' contracts a user meets first, over real HTTP: test_connection answers and never raises, a
4xx is the platform's final word, a batch of nothing yields nothing, a list arrives as Jinja renders it,
network failures say where, and the sync batches under a running event loop.
"""

from __future__ import annotations

import asyncio
import gc
import http.server
import json
import socket
import threading
import warnings

import pytest

from airflow_provider_m2m.exceptions import InvalidRequestError, M2mApiError, TransientError
from airflow_provider_m2m.hooks.daraja import DarajaHook
from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.protocol import iccid, msisdn
from airflow_provider_m2m.utils.transport import RetryPolicy

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)


def set_connection(monkeypatch, conn_id: str, **conn) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def m2m_connection(monkeypatch, sb, conn_id: str, **changes) -> str:
    """An m2m connection to the sandbox with some fields changed (``extra`` replaces the extras)."""
    creds = sb.credentials
    conn = {
        "conn_type": "m2m",
        "host": sb.url,
        "login": creds["m2m_username"],
        "password": creds["m2m_password"],
        "extra": {"api_id": creds["m2m_api_id"], "timeout": 5},
        **changes,
    }
    return set_connection(monkeypatch, conn_id, **conn)


def free_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Answer400(http.server.BaseHTTPRequestHandler):
    """A front end that refuses every request with HTTP 400 and a body that is not XML."""

    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"Bad Request: malformed envelope"
        self.send_response(400)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing_server():
    _Answer400.requests = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer400)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------------------------- test_connection
def test_m2m_test_connection_answers_every_failure_shape(sb, monkeypatch):
    creds = sb.credentials
    shapes = {
        "no host": m2m_connection(monkeypatch, sb, "m2m_nohost", host=""),
        "bad host": m2m_connection(monkeypatch, sb, "m2m_badhost", host="http://bad host name"),
        "no api_id": m2m_connection(monkeypatch, sb, "m2m_noapi2", extra={}),
        "refused credentials": m2m_connection(monkeypatch, sb, "m2m_wrongpw", password="wrong-password-123"),
        "connection refused": m2m_connection(monkeypatch, sb, "m2m_closed", host=f"http://127.0.0.1:{free_port()}"),
        "not defined": "m2m_never_defined",
    }
    answers = {shape: M2mHook(m2m_conn_id=conn_id).test_connection() for shape, conn_id in shapes.items()}
    assert all(ok is False for ok, _ in answers.values()), answers
    assert answers["no host"][1] == "connection 'm2m_nohost' host: must be the platform's base URL"
    assert answers["bad host"][1].startswith("Connection 'm2m_badhost': ")  # requests' words follow
    assert answers["no api_id"][1] == "connection 'm2m_noapi2' extra 'api_id': is required by SIM Insight"
    assert answers["refused credentials"][1].startswith("Connection 'm2m_wrongpw': SIM Insight refused")
    closed = answers["connection refused"][1]
    assert "connection failed at http://127.0.0.1:" in closed and "gave up after 1 attempts" in closed
    assert "m2m_never_defined" in answers["not defined"][1]
    assert creds["m2m_password"] not in repr(answers)


def test_daraja_test_connection_answers_refusal_and_a_closed_port(sb, monkeypatch):
    creds = sb.credentials
    base = {"conn_type": "daraja", "login": creds["daraja_key"], "password": "wrong-secret-123"}
    wrong = set_connection(monkeypatch, "daraja_wrong2", host=sb.url, **base)
    closed = set_connection(monkeypatch, "daraja_closed", host=f"http://127.0.0.1:{free_port()}", **base)
    ok, message = DarajaHook(daraja_conn_id=wrong).test_connection()
    assert (ok, message) == (False, "Connection 'daraja_wrong2': Daraja refused the consumer key/secret (HTTP 400)")
    ok, message = DarajaHook(daraja_conn_id=closed).test_connection()
    assert ok is False and "connection failed at http://127.0.0.1:" in message


# ---------------------------------------------------------------------------------------------- 4xx
def test_a_4xx_with_a_non_xml_body_is_final_and_sent_once(monkeypatch, refusing_server):
    conn_id = set_connection(
        monkeypatch, "m2m_refusing", conn_type="m2m", host=refusing_server, login="u", password="p-123456",
        extra={"api_id": "1"},
    )  # fmt: skip
    hook = M2mHook(m2m_conn_id=conn_id, retry_policy=FAST)
    sim = "8925401000000000012"
    with pytest.raises(
        M2mApiError, match=rf"^SIM Insight query_imei for SIM {sim} failed: HTTP 400: 'Bad Request"
    ) as info:
        hook.query_imei(sim)
    assert info.value.status == 400 and info.value.iccid == sim
    assert _Answer400.requests == 1
    records = list(hook.query_imeis([sim, "8925401000000000013"]))
    assert [r.error.startswith(f"SIM Insight query_imei for SIM {r.iccid} failed: HTTP 400") for r in records] == [
        True,
        True,
    ]
    assert _Answer400.requests == 3  # one request per SIM, none repeated
    ok, message = hook.test_connection()
    assert ok is False and "HTTP 400" in message  # a refusal proves nothing about the credentials


# ---------------------------------------------------------------------------------------------- empty batches
def test_a_batch_of_nothing_yields_nothing_and_sends_nothing(sb):
    m2m, daraja = M2mHook(), DarajaHook()
    assert list(m2m.query_imeis([])) == []
    assert list(m2m.query_sms_histories(iter(()))) == []
    assert list(daraja.check_sim_swaps([])) == []

    async def twins():
        return await m2m.aquery_imeis([]), await m2m.aquery_sms_histories([]), await daraja.acheck_sim_swaps(())

    assert asyncio.run(twins()) == ([], [], [])
    assert sb.stats()["requests"] == 0  # not even a token


def test_validators_keep_refusing_an_empty_list_unless_told():
    with pytest.raises(InvalidRequestError, match=r"^iccids: at least one ICCID is required$"):
        iccid.validate_many([])
    assert iccid.validate_many([], allow_empty=True) == []


# ---------------------------------------------------------------------------------------------- rendered lists
def test_a_rendered_list_is_read_back_as_that_list(sb):
    sims = sb.fleet.iccids[:3]
    assert iccid.validate_many(str(sims)) == sims  # what "{{ params.iccids }}" renders
    assert iccid.validate_many(json.dumps(sims)) == sims
    assert iccid.validate_many(str(tuple(sims))) == sims
    assert msisdn.validate_many("['0722000000', '+254722000001']") == ["254722000000", "254722000001"]
    records = list(M2mHook().query_imeis(str(sims)))
    assert sorted(r.iccid for r in records) == sorted(sims)
    assert all(r.error is None for r in records)


@pytest.mark.parametrize("text", ["[8925401000000000012", "['8925401000000000012', None]", "[{'iccid': 1}]"])
def test_text_that_opens_like_a_list_but_is_not_one_says_what_to_do(text):
    with pytest.raises(InvalidRequestError, match=r"^iccids: this text is not a list of strings: pass the list") as e:
        iccid.validate_many(text)
    assert "render_template_as_native_obj=True" in str(e.value)


def test_a_plain_string_stays_one_identifier_never_split():
    with pytest.raises(InvalidRequestError, match=r"^iccids: an ICCID has digits only"):
        iccid.validate_many("8925401000000000012,8925401000000000013")


# ---------------------------------------------------------------------------------------------- where it failed
def test_a_host_without_scheme_against_plain_http_fails_at_once_saying_https_was_assumed(sb, monkeypatch, capsys):
    bare = sb.url.removeprefix("http://")
    conn_id = m2m_connection(monkeypatch, sb, "m2m_noscheme", host=bare)
    hook = M2mHook(m2m_conn_id=conn_id)  # the default policy: five attempts, if it retried
    capsys.readouterr()
    with pytest.raises(InvalidRequestError) as info:
        hook.query_imei(sb.fleet.iccids[0])
    message = str(info.value)
    assert message.startswith(
        f"connection 'm2m_noscheme' host: TLS handshake failed (WRONG_VERSION_NUMBER) at https://{bare}"
    )
    assert message.endswith(
        "https:// was assumed because the connection's host has no scheme (plain HTTP needs http://)"
    )
    records = list(hook.query_imeis(sb.fleet.iccids[:20]))  # a batch fails the same way, at once
    assert {r.error for r in records} == {message}
    assert sb.credentials["m2m_password"] not in message
    assert "Retrying" not in capsys.readouterr().out  # never retried: another attempt would fail the same way


def test_a_connection_failure_names_the_url_but_never_the_credentials(monkeypatch):
    port = free_port()
    conn_id = set_connection(
        monkeypatch, "m2m_userinfo", conn_type="m2m", host=f"http://someone:pw-in-url-999@127.0.0.1:{port}",
        login="u", password="p-123456", extra={"api_id": "1"},
    )  # fmt: skip
    with pytest.raises(TransientError) as info:
        M2mHook(m2m_conn_id=conn_id, retry_policy=FAST).query_imei("8925401000000000012")
    message = str(info.value)
    assert f"connection failed at http://127.0.0.1:{port}, gave up after 5 attempts" in message
    assert "pw-in-url-999" not in message and "someone" not in message


# ---------------------------------------------------------------------------------------------- a running event loop
def test_sync_batches_inside_a_running_loop_name_the_coroutine_and_leave_no_unawaited_coroutine(sb):
    m2m, daraja = M2mHook(), DarajaHook()
    sims = sb.fleet.iccids[:5]
    numbers = sb.fleet.msisdns[:3]

    async def in_a_notebook():
        refusals = []
        for call, twin in (
            (lambda: list(m2m.query_imeis(sims)), "M2mHook.aquery_imeis"),
            (lambda: list(m2m.query_sms_histories(sims)), "M2mHook.aquery_sms_histories"),
            (lambda: list(daraja.check_sim_swaps(numbers)), "DarajaHook.acheck_sim_swaps"),
        ):
            with pytest.raises(
                RuntimeError, match=rf"^This is called inside a running event loop: use `await {twin}\("
            ) as e:
                call()
            refusals.append(e.value)
        return refusals, await m2m.aquery_imeis(sims), await daraja.acheck_sim_swaps(numbers + numbers[:1])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refusals, records, swaps = asyncio.run(in_a_notebook())
        gc.collect()
    assert len(refusals) == 3
    assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]
    assert sorted(r.iccid for r in records) == sorted(sims) and all(r.error is None for r in records)
    assert sorted(records, key=str) == sorted(m2m.query_imeis(sims), key=str)  # the same records as the sync batch
    assert sorted(s.msisdn for s in swaps) == sorted(numbers + numbers[:1])  # one per input, duplicates too
    assert all(s.error is None for s in swaps)
