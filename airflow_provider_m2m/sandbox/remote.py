"""
The subprocess front end: :class:`RemoteSandbox` (what ``Sandbox.spawn(...)`` returns), a sandbox in its own
process driven over the ``/_sandbox/*`` control API.

A subprocess keeps the server's threads off the client's GIL, so benchmarks measure the client, not both.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC
from typing import Any

from .controls import CONTROLS, SandboxControls
from .fleet import Fleet, midnight_utc
from .state import SANDBOX_CREDENTIALS

#: The line the CLI prints once it listens: this prefix, then JSON ``{"url": ..., "port": ...}``.
READY_PREFIX = "SANDBOX_READY "


class RemoteSandbox(SandboxControls):
    """
    A sandbox in a subprocess; the same control methods as :class:`~.in_process.Sandbox`, over HTTP.

    The process starts on ``__enter__`` (or :meth:`start`) and is terminated on ``__exit__``.
    ``fleet`` is regenerated locally from the same size, seed and anchor.

    :param fleet: a fleet size or a :class:`Fleet` (reduced to its size, seed, anchor and timeline_days).
    :param args: the other parameters of :class:`~.in_process.Sandbox`, by position or (``options``) by name;
        they are bound against its signature, so both front ends take the same options.
    :param startup_timeout: seconds to wait for the ready line.
    :param options: see ``args``.
    """

    def __init__(self, fleet: int | Fleet = 1000, *args: Any, startup_timeout: float = 60.0, **options: Any) -> None:
        from .in_process import Sandbox  # the one definition of the options (it imports this module)

        bound = inspect.signature(Sandbox).bind(fleet, *args, **options)
        bound.apply_defaults()
        given = dict(bound.arguments)
        credentials = given.pop("credentials")
        unknown = set(credentials) - set(SANDBOX_CREDENTIALS)
        if unknown:
            raise TypeError(f"unknown sandbox options: {sorted(unknown)}")
        fleet = given.pop("fleet")
        if isinstance(fleet, Fleet):
            given.update(seed=fleet.seed, anchor=fleet.anchor, timeline_days=fleet.timeline_days)
            fleet = fleet.size
        self.anchor = given["anchor"] or midnight_utc()
        self.fleet = Fleet(int(fleet), seed=given["seed"], anchor=self.anchor, timeline_days=given["timeline_days"])
        given.update(fleet=int(fleet), anchor=self.anchor.astimezone(UTC).isoformat())
        self._args = [sys.executable, "-m", "airflow_provider_m2m.sandbox"]
        for name, value in {**given, **credentials}.items():
            self._args += ["--" + name.replace("_", "-"), str(value)]
        self._timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0

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

    def _control(self, name: str, args: dict[str, Any] | None = None) -> Any:
        args = args or {}
        url = f"{self.url}/_sandbox/{name}"
        if CONTROLS[name].method == "GET":
            req = urllib.request.Request(url + ("?" + urllib.parse.urlencode(args) if args else ""))
        else:
            req = urllib.request.Request(
                url, data=json.dumps(args).encode(), method="POST", headers={"Content-Type": "application/json"}
            )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # nosec B310  # the sandbox's http:// URL it printed
                result = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ValueError(f"sandbox control call {name} failed: {exc.code} {detail}") from None
        return result
