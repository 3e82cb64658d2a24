"""
The sandbox's control API, defined once: the table of control calls, and :class:`SandboxControls`, the one
interface of both front ends (:class:`~.in_process.Sandbox` calls the table directly on its state,
:class:`~.remote.RemoteSandbox` calls it over ``/_sandbox/<name>``).

Control calls are not counted, delayed, rate-limited or faulted. A new control call is one :class:`Control`
in :data:`CONTROLS` and one method of :class:`SandboxControls`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import push
from .fleet import Fleet
from .state import SandboxState


@dataclass(frozen=True, slots=True)
class Control:
    """
    One control call.

    :param method: the HTTP method of ``/_sandbox/<name>``: ``GET`` reads (arguments in the query string),
        ``POST`` changes (arguments as a JSON object).
    :param run: ``(state, arguments) -> result`` (JSON-safe).
    """

    method: str
    run: Callable[[SandboxState, dict[str, Any]], Any]


def _info(state: SandboxState, args: dict[str, Any]) -> dict[str, Any]:
    f = state.fleet
    now = state.set_now
    return {
        "size": f.size,
        "seed": f.seed,
        "anchor": f.anchor.isoformat(),
        "timeline_days": f.timeline_days,
        "now": now.isoformat() if now else None,
    }


def _push_to(state: SandboxState, args: dict[str, Any]) -> None:
    url = args.pop("url", None)
    pusher = push.Pusher(url, args.pop("passphrase", ""), **args) if url else None
    with state.lock:
        state.pusher = pusher


def _push(state: SandboxState, args: dict[str, Any]) -> dict[str, str]:
    pusher = state.pusher
    if pusher is None:
        raise ValueError("push: no receiver to push to; call push_to(url, passphrase) first")
    iccid = str(args.pop("iccid", ""))
    sim = state.fleet.by_iccid.get(iccid)
    if sim is None:
        raise ValueError(f"push: iccid {iccid!r} is not a SIM of the sandbox's fleet")
    when = state.now().strftime("%d/%m/%Y %H:%M:%S")
    api_did, body = push.item(str(args.pop("kind", "")), iccid, sim.msisdn, when, **args)
    pusher.push_later(body)  # the platform pushes on its own time: the call does not wait for the receiver
    return {"api_did": f"{api_did:010d}"}


#: The control calls: name (the path under ``/_sandbox/``) -> :class:`Control`.
CONTROLS: dict[str, Control] = {
    "stats": Control("GET", lambda state, args: state.stats()),
    "received": Control("GET", lambda state, args: state.received(args.get("command"))),
    "issued_tokens": Control("GET", lambda state, args: state.issued_tokens()),
    "credentials": Control("GET", lambda state, args: state.credentials()),
    "info": Control("GET", _info),
    "config": Control("POST", lambda state, args: state.configure(**args)),
    "inject": Control("POST", lambda state, args: state.inject(**args)),
    "clear_faults": Control("POST", lambda state, args: state.clear_faults()),
    "revoke_tokens": Control("POST", lambda state, args: state.revoke_tokens()),
    "reset": Control("POST", lambda state, args: state.reset()),
    "push_to": Control("POST", _push_to),
    "push": Control("POST", _push),
}


def conn_env(url: str, creds: dict[str, str], timeout: float) -> dict[str, str]:
    """``AIRFLOW_CONN_M2M_DEFAULT`` / ``AIRFLOW_CONN_DARAJA_DEFAULT`` for a sandbox at ``url``."""
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


class SandboxControls:
    """
    What a test, demo or benchmark can do with a running sandbox, in process or in a subprocess alike.

    Subclasses set ``fleet`` and ``url``, and implement :meth:`start`, :meth:`stop` and :meth:`_control`.
    Use a sandbox as a context manager: it starts on ``__enter__`` and stops on ``__exit__``.
    """

    fleet: Fleet
    url: str

    def _control(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Run the control call ``name`` of :data:`CONTROLS` with ``args``; return its result."""
        raise NotImplementedError

    def start(self) -> SandboxControls:
        """Start serving; returns self."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving."""
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ knobs and faults
    def configure(self, **knobs: Any) -> None:
        """
        Change knobs at run time, e.g. ``configure(now="2026-03-02T00:05:00Z")`` to stop the platforms' clock
        at that moment (a fleet with ``timeline_days`` answers its device changes recorded by then);
        ``configure(now="")`` for the real clock again (as does :meth:`reset`).

        :param knobs: ``latency``, ``rate_limit``, ``token_ttl``, ``one_live_token`` (Daraja's rule that a new
            token invalidates the app's previous one; on by default), ``seed``, ``sms_delivery_delay`` (seconds
            until a message settles into its SIM's :meth:`Fleet.sms_fate`, for messages sent from then on),
            ``now`` (an aware datetime or ISO 8601 string; ``""`` = the real clock) and the credential names
            of ``SANDBOX_CREDENTIALS``.
        """
        if hasattr(knobs.get("now"), "isoformat"):
            knobs["now"] = knobs["now"].isoformat()  # JSON-safe for the subprocess sandbox
        self._control("config", knobs)

    def inject(self, kind: str, **options: Any) -> None:
        """
        Inject a fault into platform requests: ``kind`` and the options of :meth:`.state.SandboxState.inject`
        (``count``, ``rate``, ``platform``, ``retry_after``, ``slow_seconds``).
        """
        self._control("inject", {"kind": kind, **options})

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._control("clear_faults")

    def revoke_tokens(self) -> None:
        """Invalidate every Daraja access token issued so far."""
        self._control("revoke_tokens")

    def reset(self) -> None:
        """Clear counters, log, stored SMS and faults; restore construction-time knobs (not credentials)."""
        self._control("reset")

    # ------------------------------------------------------------------ what it saw
    def stats(self) -> dict[str, Any]:
        """
        Counters: ``requests``, ``by_command``, ``by_status`` (int status -> count), ``faults``,
        ``rate_limited``, ``in_flight``, ``max_in_flight``, ``tokens_issued``, ``tokens_issued_per_app`` (consumer
        key -> Daraja tokens issued to that app), ``sms_per_iccid``,
        ``imei_queries_per_iccid``, ``checks_per_msisdn``, ``pushes`` (of the :meth:`push_to` target:
        ``delivered``, ``refused``, ``posts``, ``duplicates_sent``; empty when not pushing).
        """
        stats = self._control("stats")
        stats["by_status"] = {int(k): v for k, v in stats["by_status"].items()}  # JSON made the keys strings
        return stats

    def received(self, command: str | None = None) -> list[dict[str, Any]]:
        """
        What platform requests were received, oldest first (at most 200 000 kept).

        Each entry: ``command``, ``status`` (None for a dropped connection), ``fault``, ``time`` (epoch
        seconds), ``outcome``/``error`` for SIM Insight, ``iccid``, ``msisdn``, and for ``send_sms``
        ``message_text``, ``data_coding``, ``origin``, ``sms_uid``.

        :param command: only this command (``query_imei``, ``send_sms``, ``oauth``, ``checkATI``...).
        """
        return self._control("received", {"command": command} if command else {})

    def issued_tokens(self) -> list[str]:
        """Every Daraja access token this sandbox has issued since it started, for leak checks."""
        return self._control("issued_tokens")

    @property
    def credentials(self) -> dict[str, str]:
        """The credentials accepted now (as given at start or set since with :meth:`configure`)."""
        return self._control("credentials")

    def conn_env(self, timeout: float = 10) -> dict[str, str]:
        """``AIRFLOW_CONN_M2M_DEFAULT`` / ``AIRFLOW_CONN_DARAJA_DEFAULT`` in Airflow's JSON format."""
        return conn_env(self.url, self.credentials, timeout)

    # ------------------------------------------------------------------ pushing, as SIM Insight's push services
    def push_to(
        self,
        url: str | None,
        passphrase: str = "",
        *,
        retry_scale: float = 1.0,
        duplicate_ratio: float = 0.0,
        max_attempts: int = 50,
    ) -> None:
        """
        Push to a receiver from now on: a delivery receipt of every message that settles as delivered or failed,
        and the items of :meth:`send_mo` and :meth:`raise_alert`. ``None`` stops pushing (as does :meth:`reset`).

        :param url: the receiver, e.g. ``http://127.0.0.1:8080/sim-insight/push``.
        :param passphrase: put in every item.
        :param retry_scale: factor on the documented retry delays (0.01 for tests).
        :param duplicate_ratio: share of items sent a second time after their delivery.
        :param max_attempts: give an item up after this many POSTs.
        """
        options = {"retry_scale": retry_scale, "duplicate_ratio": duplicate_ratio, "max_attempts": max_attempts}
        self._control("push_to", {"url": url, "passphrase": passphrase, **options} if url else {})

    def send_mo(self, iccid: str, text: str) -> str:
        """
        Push an MO message (``post_sms``) from the fleet SIM ``iccid`` (its MSISDN from the fleet, the platforms'
        clock as its time) to the :meth:`push_to` receiver, in the background; return the item's ``api_did``.
        """
        return self._control("push", {"kind": "mo_sms", "iccid": iccid, "text": text})["api_did"]

    def raise_alert(self, iccid: str, level: str = "warning", level_mb: float = 1024) -> str:
        """
        Push a usage alert for the fleet SIM ``iccid`` to the :meth:`push_to` receiver, in the background:
        ``level`` ``warning`` (``post_alert_sim_warning``) or ``cut_off`` (``post_alert_sim_limit``) at
        ``level_mb``; return the item's ``api_did``.
        """
        return self._control("push", {"kind": level, "iccid": iccid, "level_mb": level_mb})["api_did"]
