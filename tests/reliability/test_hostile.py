"""
Suite 4, hostile responses: a server that answers with XXE, entity bombs, 50 MB bodies, a never-ending
trickle, HTML, JSON instead of XML and XML instead of JSON. Each call ends with a clear provider error
within the timeout, memory stays bounded and the local file's content appears nowhere.
"""

from __future__ import annotations

import json
import logging
import resource
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_provider_m2m.exceptions import M2mProviderError
from airflow_provider_m2m.hooks.daraja import DarajaHook, clear_token_cache
from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.utils.transport import RetryPolicy

MARKER = "FILE-CONTENT-MARKER-7f3a9c"
ICCID = "8925401000000000012"
TIMEOUT = 2
POLICY = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.1, max_elapsed=20)
ONE_ATTEMPT = RetryPolicy(max_attempts=1)
BIG = 50 * 1024 * 1024
RESULTS: list[str] = []


def xml_response(inner: str, doctype: str = "") -> bytes:
    return (f'<?xml version="1.0"?>{doctype}<query_imei_response api_id="1">{inner}</query_imei_response>').encode()


def bomb() -> bytes:
    entities = '<!ENTITY lol0 "lol">' + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    return xml_response(
        "<api_outcome>success</api_outcome><current_imei>&lol9;</current_imei>",
        f"<!DOCTYPE r [{entities}]>",
    )


class Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    secret_file = ""

    def log_message(self, *args):
        pass

    def _send(self, body: bytes, ctype: str = "application/xml", status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.do_POST()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.close_connection = True
        kind = self.path.strip("/").split("/")[0]
        xxe = f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{self.secret_file}">]>'
        try:
            if kind == "xxe":
                self._send(xml_response("<api_outcome>success</api_outcome><current_imei>&x;</current_imei>", xxe))
            elif kind == "xxe_fail":
                self._send(
                    xml_response("<api_outcome>failure</api_outcome><error_description>&x;</error_description>", xxe)
                )
            elif kind == "xxe_param":
                doctype = f'<!DOCTYPE r [<!ENTITY % p SYSTEM "file://{self.secret_file}"> %p;]>'
                self._send(xml_response("<api_outcome>success</api_outcome><current_imei/>", doctype))
            elif kind == "bomb":
                self._send(bomb())
            elif kind in ("big", "big_chunked"):
                self._big(chunked=kind == "big_chunked")
            elif kind == "trickle":
                self._trickle()
            elif kind == "html":
                self._send(b"<!DOCTYPE html><html><body><h1>Maintenance</h1></body></html>", "text/html")
            elif kind == "json":
                self._send(
                    json.dumps({"api_outcome": "success", "current_imei": "1" * 15}).encode(), "application/json"
                )
            elif kind == "xmltoken":  # Daraja token endpoint answers XML
                self._send(b"<?xml version='1.0'?><token><access_token>abc</access_token></token>")
            elif kind == "xmlcheck":  # token fine, checkATI answers XML
                if "oauth" in self.path:
                    self._send(
                        json.dumps({"access_token": "tok-hostile-1", "expires_in": "3599"}).encode(), "application/json"
                    )
                else:
                    self._send(b"<?xml version='1.0'?><checkATI><responseCode>200</responseCode></checkATI>")
            else:
                self._send(b"not found", "text/plain", 404)
        except OSError:  # the client gave up on us: that is the point
            pass

    def _big(self, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(BIG))
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"<a>" + b"x" * (65536 - 7) + b"</a>"
        for _ in range(BIG // len(chunk)):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)

    def _trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(10 * 1024 * 1024))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b'<?xml version="1.0"?><query_imei_response api_id="1">')
        ends = time.monotonic() + 30
        while time.monotonic() < ends:
            self.wfile.write(b" ")
            self.wfile.flush()
            time.sleep(0.05)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    secret = tmp_path_factory.mktemp("hostile") / "secret.txt"
    secret.write_text(MARKER)
    Hostile.secret_file = str(secret)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    print("\n[hostile] " + "\n[hostile] ".join(RESULTS))


def conn(monkeypatch, base: str, conn_type: str) -> str:
    extra = {"api_id": "1", "timeout": TIMEOUT} if conn_type == "m2m" else {"timeout": TIMEOUT}
    payload = {"conn_type": conn_type, "host": base, "login": "u", "password": "hostile-pass", "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_HOSTILE_{conn_type.upper()}", json.dumps(payload))
    return f"hostile_{conn_type}"


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


M2M_CASES = {
    # path: (what must be true of the outcome, deadline in seconds)
    "xxe": 10,
    "xxe_fail": 10,
    "xxe_param": 10,
    "bomb": 10,
    "big": 15,
    "big_chunked": 15,
    "trickle": 2 * (TIMEOUT + 2) + 2,
    "html": 10,
    "json": 10,
}


@pytest.mark.parametrize("mode", ["single", "batch"])
@pytest.mark.parametrize("path", list(M2M_CASES))
def test_m2m_hostile(hostile, monkeypatch, caplog, capfd, path, mode):
    caplog.set_level(logging.DEBUG)
    policy = ONE_ATTEMPT if path == "trickle" else POLICY  # one timeout is proof enough; keeps the suite fast
    hook = M2mHook(conn(monkeypatch, f"{hostile}/{path}", "m2m"), retry_policy=policy)
    before = maxrss_mb()
    started = time.monotonic()
    error, record = None, None
    if mode == "single":
        try:
            record = hook.query_imei(ICCID)
        except M2mProviderError as exc:
            error = exc
    else:
        (record,) = list(hook.query_imeis([ICCID]))
    elapsed = time.monotonic() - started
    grown = maxrss_mb() - before
    outcome = f"{type(error).__name__}: {error}" if error else repr(record)
    out = capfd.readouterr()
    for text in (outcome, repr(record), caplog.text, out.out, out.err):
        assert MARKER not in text
    assert elapsed < M2M_CASES[path], f"{path}/{mode} took {elapsed:.1f}s"
    assert grown < 40, f"{path}/{mode}: max RSS grew {grown:.0f} MB"
    if path in ("xxe", "xxe_param"):  # parsed without resolving: the IMEI is simply unknown, or refused
        assert error is not None or record.error or record.current_imei is None
    else:
        assert error is not None or record.error, outcome
    if path.startswith("big"):
        assert "larger than" in outcome, outcome
    if path == "trickle":
        assert "timed out" in outcome or "did not finish" in outcome, outcome
    RESULTS.append(f"M2M {path:<11} {mode:<6} {elapsed:5.2f}s  rss +{max(grown, 0):4.0f} MB  -> {outcome[:110]}")


@pytest.mark.parametrize("path", ["xmltoken", "xmlcheck", "html", "trickle", "big"])
def test_daraja_hostile(hostile, monkeypatch, caplog, capfd, path):
    caplog.set_level(logging.DEBUG)
    clear_token_cache()
    policy = ONE_ATTEMPT if path == "trickle" else POLICY
    hook = DarajaHook(conn(monkeypatch, f"{hostile}/{path}", "daraja"), retry_policy=policy)
    started = time.monotonic()
    with pytest.raises(M2mProviderError) as info:
        hook.check_sim_swap("0722000000")
    elapsed = time.monotonic() - started
    out = capfd.readouterr()
    for text in (str(info.value), caplog.text, out.out, out.err):
        assert "tok-hostile-1" not in text and "hostile-pass" not in text
    assert elapsed < 2 * (TIMEOUT + 2) + 2, f"{path} took {elapsed:.1f}s"
    RESULTS.append(f"Daraja {path:<9} {elapsed:5.2f}s  -> {type(info.value).__name__}: {str(info.value)[:110]}")
