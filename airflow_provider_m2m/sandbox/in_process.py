"""The in-process front end: :class:`Sandbox`, a sandbox server in a daemon thread of this process."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from .controls import CONTROLS, SandboxControls
from .fleet import Fleet
from .remote import RemoteSandbox
from .server import SandboxHTTPServer
from .state import SandboxState


class Sandbox(SandboxControls):
    """
    A local SIM Insight + Daraja server running in a daemon thread of this process.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`)::

        with Sandbox(fleet=1000) as sb:
            os.environ.update(sb.conn_env())

    The control methods (:meth:`configure`, :meth:`inject`, :meth:`stats`...) are those of
    :class:`~.controls.SandboxControls`, shared with :meth:`spawn`'s subprocess sandbox.

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
    :param timeline_days: days after the anchor with device changes at known moments (see :class:`Fleet`;
        when ``fleet`` is a size). Set the platforms' clock with ``configure(now=...)``.
    :param one_live_token: Daraja's rule that a new token invalidates the app's previous one (on by default, as on
        the real platform; ``configure(one_live_token=False)`` turns it off later too).
    :param credentials: overrides of ``SANDBOX_CREDENTIALS`` (``m2m_username``, ``m2m_password``,
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
        timeline_days: int = 0,
        one_live_token: bool = True,
        **credentials: str,
    ) -> None:
        if not isinstance(fleet, Fleet):
            fleet = Fleet(int(fleet), seed=seed, anchor=anchor, timeline_days=timeline_days)
        self.fleet = fleet
        self.state = SandboxState(
            self.fleet,
            latency=latency,
            rate_limit=rate_limit,
            token_ttl=token_ttl,
            seed=seed,
            sms_delivery_delay=sms_delivery_delay,
            one_live_token=one_live_token,
            **credentials,
        )
        self._address = (host, port)
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _control(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return CONTROLS[name].run(self.state, args or {})

    # ------------------------------------------------------------------ lifecycle
    def _bound(self) -> SandboxHTTPServer:
        if self._server is None:
            self._server = SandboxHTTPServer(self._address, self.state)
        return self._server

    def start(self) -> Sandbox:
        """Bind and serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._bound().serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name="m2m-sandbox"
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
            self._server.server_close()
            self._server = None
            if self._thread is not None:
                self._thread.join(5)
                self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (used by the CLI)."""
        server = self._bound()
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()

    @property
    def port(self) -> int:
        """The bound TCP port (binding the socket if it is not yet bound)."""
        return self._bound().server_address[1]

    @property
    def url(self) -> str:  # type: ignore[override]  # read-only: it follows the socket, bound on first use
        """Base URL, e.g. ``http://127.0.0.1:54321`` (both platforms and the control API)."""
        return f"http://{self._address[0]}:{self.port}"

    # ------------------------------------------------------------------ out of process
    @staticmethod
    def spawn(fleet: int | Fleet = 1000, *args: Any, startup_timeout: float = 60.0, **options: Any) -> RemoteSandbox:
        """
        Run the sandbox in a subprocess; returns a :class:`RemoteSandbox` (a context manager) with the same
        control methods.

        Takes exactly the parameters of :class:`Sandbox` (checked against its signature), plus
        ``startup_timeout``: seconds to wait for the subprocess to listen. A :class:`Fleet` passed in is
        reduced to its size, seed, anchor and timeline_days, which the subprocess regenerates.
        """
        return RemoteSandbox(fleet, *args, startup_timeout=startup_timeout, **options)
