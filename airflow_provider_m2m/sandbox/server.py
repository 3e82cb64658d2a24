"""
The sandbox's HTTP server: one port for SIM Insight (:mod:`.sim_insight`), Daraja (:mod:`.daraja`) and the
control API (:mod:`.controls`).

Every platform request goes through the same steps here: count it, apply latency and the rate limit, let an
injected fault hit it, hand it to its platform side, log it, answer. Stdlib + lxml only; no Airflow imports.
"""

from __future__ import annotations

import json
import math
import socket
import sys
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import daraja, sim_insight
from .controls import CONTROLS
from .messages import Reply, Request, json_reply
from .state import LOG_ENTRY, Fault, SandboxState

_HTML_PAGE = b"<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Service error</h1></body></html>"


# Reason phrases from the stdlib's table, looked up once per status rather than through the enum per answer.
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # without it, keep-alive adds ~40 ms per request (Nagle + delayed ACK)
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

    def _write(self, reply: Reply) -> None:
        if reply.drop:
            self._drop()
            return
        body = reply.body
        # One write of head and body: the stdlib's send_response/send_header would write line by line.
        head = [
            f"HTTP/1.1 {reply.status} {_PHRASES.get(reply.status, 'Unknown')}\r\n"
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
        request = Request(method, path, query, self.headers, body)
        if path.startswith("/_sandbox"):
            try:
                reply = self._control(request)
            except (TypeError, ValueError, KeyError) as exc:
                reply = json_reply(400, {"error": str(exc)})
            self._write(reply)
            return
        self._platform(request)

    # -------------------------------------------------------------- control API
    def _control(self, request: Request) -> Reply:
        name = request.path[len("/_sandbox") :].strip("/")
        control = CONTROLS.get(name)
        if control is None:
            return json_reply(404, {"error": f"unknown control endpoint {name!r}"})
        if request.method != control.method:
            return json_reply(405, {"error": f"use {control.method} for {name!r}"}, (("Allow", control.method),))
        if control.method == "GET":
            args = {k: v[0] for k, v in urllib.parse.parse_qs(request.query).items()}
        else:
            args = json.loads(request.body) if request.body.strip() else {}
            if not isinstance(args, dict):
                raise ValueError("a control call takes a JSON object")
        result = control.run(self.server.state, args)
        if name == "info":
            result = {**result, "url": self.server.url}
        return json_reply(200, {"ok": True} if result is None else result)

    # -------------------------------------------------------------- platform requests
    def _platform(self, request: Request) -> None:
        st = self.server.state
        latency, wait, generation = st.begin()
        entry = dict(LOG_ENTRY, time=time.time())
        logged = False
        try:
            reply = self._platform_reply(request, entry, latency, wait)
            entry["status"] = None if reply.drop else reply.status
            st.record(entry, generation)  # before answering, so a client that saw the answer also sees the log
            logged = True
            self._write(reply)
        except Exception as exc:  # pragma: no cover - keep the client from hanging
            entry["status"] = 500
            entry["error"] = f"{type(exc).__name__}: {exc}"
            if not logged:
                st.record(entry, generation)
            try:
                self._write(Reply(500, b"internal sandbox error", "text/plain"))
            except OSError:
                pass
        finally:
            st.end()

    def _platform_reply(self, request: Request, entry: dict[str, Any], latency: float, wait: float) -> Reply:
        side = daraja if daraja.owns(request.path) else sim_insight
        if latency:
            time.sleep(latency)
        peeked = side.peek(request, entry)
        if wait:
            return side.too_many(int(wait))
        st = self.server.state
        fault = st.pick_fault(side.PLATFORM)
        if fault is None:
            return side.answer(st, request, peeked, entry)
        entry["fault"] = fault.kind
        if fault.kind == "slow":
            time.sleep(fault.slow_seconds)
            return side.answer(st, request, peeked, entry)
        if fault.kind == "drop_after":
            side.answer(st, request, peeked, entry)
            return Reply(drop=True)
        return _fault_reply(fault, side, entry)


def _fault_reply(fault: Fault, side: Any, entry: dict[str, Any]) -> Reply:
    """What an injected fault answers instead of the platform (``slow`` and ``drop_after`` answer normally)."""
    kind = fault.kind
    if kind == "drop":
        return Reply(drop=True)
    if kind == "429":
        return side.too_many(int(math.ceil(fault.retry_after or 1)))
    if kind in ("502", "503", "504"):
        headers: tuple[tuple[str, str], ...] = ()
        if fault.retry_after is not None:
            headers = (("Retry-After", str(int(math.ceil(fault.retry_after)))),)
        return side.server_error(HTTPStatus(int(kind)), headers)
    if kind == "malformed":
        return side.malformed(entry)
    if kind == "html":
        return Reply(200, _HTML_PAGE, "text/html; charset=utf-8")
    if kind == "empty":
        return Reply(200, b"", side.EMPTY_CTYPE)
    raise ValueError(kind)  # pragma: no cover


class SandboxHTTPServer(ThreadingHTTPServer):
    """The threading HTTP server; ``state`` holds the sandbox's :class:`SandboxState`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        self.state = state
        super().__init__(address, _Handler)
        host, port = self.socket.getsockname()[:2]  # an IPv4 address as text (server_address may be bytes)
        self.url = f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up (a batch closed early, a timed-out call) is normal: no traceback for it."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)
