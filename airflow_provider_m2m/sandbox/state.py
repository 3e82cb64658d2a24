"""
What the sandbox knows and counts: the fleet, the knobs, injected faults, stored SMS, Daraja tokens, counters
and the log of received requests.

Both platform sides (:mod:`.sim_insight`, :mod:`.daraja`) and the control API (:mod:`.controls`) act on one
:class:`SandboxState`; nothing here speaks HTTP.
"""

from __future__ import annotations

import collections
import math
import random
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .fleet import Fleet
from .sim_status import SimStatuses

if TYPE_CHECKING:
    from .push import Pusher

SANDBOX_CREDENTIALS: dict[str, str] = {
    "m2m_username": "sandbox-user",
    "m2m_password": "sandbox-password",
    "m2m_api_id": "100001",
    "daraja_key": "sandbox-consumer-key",
    "daraja_secret": "sandbox-consumer-secret",
}

FAULT_KINDS = ("503", "429", "502", "504", "drop", "drop_after", "slow", "malformed", "html", "empty")
PLATFORMS = ("any", "m2m", "daraja")
KNOBS = (
    "latency",
    "rate_limit",
    "token_ttl",
    "one_live_token",
    "seed",
    "sms_delivery_delay",
    "now",
    *SANDBOX_CREDENTIALS,
)
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

#: The fields of one log entry (see :meth:`SandboxState.received`); a request fills those it knows.
LOG_ENTRY: dict[str, Any] = {
    **dict.fromkeys(
        ("iccid", "msisdn", "message_text", "data_coding", "origin", "sms_uid", "status", "fault", "outcome", "error")
    ),
    "command": "unknown",
    "time": None,
}


def _moment(value: Any) -> datetime | None:
    """A ``now`` knob: an aware datetime or ISO 8601 string, or ``""`` (the real clock)."""
    if value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("now must carry a timezone (e.g. 2026-11-22T00:05:00Z)")
    return moment.astimezone(UTC)


def random_alnum(length: int) -> str:
    """``length`` random ASCII letters and digits (sandbox-made SMS uids and access tokens)."""
    return "".join(secrets.choice(ALNUM) for _ in range(length))


class Fault:
    """One injected fault (see :meth:`SandboxState.inject`)."""

    __slots__ = ("count", "kind", "platform", "rate", "retry_after", "slow_seconds")

    def __init__(self, kind, count, rate, platform, retry_after, slow_seconds):
        self.kind, self.count, self.rate, self.platform = kind, count, rate, platform
        self.retry_after, self.slow_seconds = retry_after, slow_seconds


class SandboxState:
    """
    Everything the server knows: fleet, knobs, faults, stored SMS, tokens, counters and the log.

    Thread-safe; a single lock guards the mutable parts.

    :param fleet: the :class:`Fleet` served.
    :param latency: seconds added to every platform request.
    :param rate_limit: platform requests per second (token bucket); 0 = unlimited.
    :param token_ttl: lifetime of a Daraja access token in seconds (served as ``expires_in``).
    :param one_live_token: Daraja's rule (on by default, as on the real platform): issuing a token for a
        consumer key invalidates that app's previous token ("each request invalidates the previous token").
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
        one_live_token: bool = True,
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
            "one_live_token": one_live_token,
            "seed": seed,
            "sms_delivery_delay": sms_delivery_delay,
        }
        self.tokens: dict[str, float] = {}  # live token -> its expiry (time.monotonic())
        self.live_token: dict[str, str] = {}  # consumer key -> its app's last issued token
        self.issued: list[str] = []  # every access token ever issued (kept across reset/revoke), for leak checks
        self._apply_defaults()
        self.in_flight = 0
        self.generation = 0
        self._clear()

    # ------------------------------------------------------------------ knobs
    def _apply_defaults(self) -> None:
        d = self._defaults
        self.latency = float(d["latency"])
        self.token_ttl = float(d["token_ttl"])
        self.one_live_token = bool(d["one_live_token"])
        self.seed = int(d["seed"])
        self.rng = random.Random(self.seed)
        self.sms_delivery_delay = float(d["sms_delivery_delay"])
        self.set_now: datetime | None = None  # the platforms' clock: the real one
        self._set_rate(float(d["rate_limit"]))

    def _set_rate(self, rate: float) -> None:
        self.rate_limit = max(0.0, rate)
        self.burst = max(1.0, min(20.0, self.rate_limit / 10))
        self.bucket = self.burst
        self.bucket_t = time.monotonic()

    def configure(self, **knobs: Any) -> None:
        """Change knobs at run time: ``latency``, ``rate_limit``, ``token_ttl``, ``seed``,
        ``sms_delivery_delay`` (for messages sent from then on), ``now`` (the platforms' clock: an aware
        datetime or ISO 8601 string it stands still at; ``""`` for the real clock again), credentials."""
        unknown = set(knobs) - set(KNOBS)
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
                elif k == "one_live_token":
                    self.one_live_token = v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")
                elif k == "sms_delivery_delay":
                    self.sms_delivery_delay = max(0.0, float(v))
                elif k == "seed":
                    self.seed = int(v)
                    self.rng = random.Random(self.seed)
                elif k == "now":
                    self.set_now = _moment(v)
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
        """
        Add a fault that hits platform requests (control calls are never hit).

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
                Fault(
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
        # A sandbox.push.Pusher, set by the control call push_to: it pushes a receipt of every message that
        # settles, and the items of the control call push. Reset stops pushing.
        self.pusher: Pusher | None = None
        self.faults: list[Fault] = []
        self.sms: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.statuses = SimStatuses(self.fleet.seed, self.fleet.by_iccid)
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=200_000)
        self.c_requests = 0
        self.c_by_command: collections.Counter[str] = collections.Counter()
        self.c_by_status: collections.Counter[int] = collections.Counter()
        self.c_faults: collections.Counter[str] = collections.Counter()
        self.c_rate_limited = 0
        # in_flight is a gauge of requests being served right now, not a counter: a reset leaves it alone
        # (a slow request from before a reset still leaves later). Its generation tells it apart.
        self.max_in_flight = self.in_flight
        self.generation += 1
        self.c_tokens = 0
        self.c_tokens_per_app: collections.Counter[str] = collections.Counter()
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
        """A snapshot of the counters (see :meth:`.controls.SandboxControls.stats`)."""
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
                "tokens_issued_per_app": dict(self.c_tokens_per_app),
                "sms_per_iccid": dict(self.c_sms),
                "imei_queries_per_iccid": dict(self.c_imei),
                "checks_per_msisdn": dict(self.c_checks),
                "pushes": self.pusher.report.counts() if self.pusher is not None else {},
            }

    def received(self, command: str | None = None) -> list[dict[str, Any]]:
        """What was received, oldest first, optionally only one command."""
        with self.lock:
            if command is None:
                return [dict(e) for e in self.log]
            return [dict(e) for e in self.log if e["command"] == command]

    def now(self) -> datetime:
        """The platforms' clock (UTC): the real one, or the moment set with ``configure(now=...)``."""
        return self.set_now or datetime.now(UTC)

    def issued_tokens(self) -> list[str]:
        """Every access token issued since the start (kept across reset and revoke), for leak checks."""
        with self.lock:
            return list(self.issued)

    def credentials(self) -> dict[str, str]:
        """The credentials accepted now."""
        with self.lock:
            return dict(self.creds)

    def count(self, counter: collections.Counter[str], key: str) -> None:
        """Add one to ``counter[key]`` (one of the per-ICCID / per-MSISDN counters) under the lock."""
        with self.lock:
            counter[key] += 1

    def stored_sms(self, iccid: str) -> list[dict[str, Any]]:
        """The messages stored for ``iccid``, oldest first."""
        with self.lock:
            return [dict(m) for m in self.sms.get(iccid, ())]

    # ------------------------------------------------------------------ per request
    def begin(self) -> tuple[float, float, int]:
        """Count a platform request entering; return (latency, retry_after or 0 if admitted, generation)."""
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
            return self.latency, wait, self.generation

    def end(self) -> None:
        """Count a platform request leaving."""
        with self.lock:
            self.in_flight -= 1

    def record(self, entry: dict[str, Any], generation: int) -> None:
        """Count and log a platform request's outcome, unless it began before the last :meth:`reset`."""
        with self.lock:
            if generation != self.generation:
                return
            self.c_by_command[entry["command"]] += 1
            if entry.get("status") is not None:
                self.c_by_status[entry["status"]] += 1
            if entry.get("fault"):
                self.c_faults[entry["fault"]] += 1
            self.log.append(entry)

    def pick_fault(self, platform: str) -> Fault | None:
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

    def store_sms(self, iccid: str, msg: dict[str, Any]) -> None:
        with self.lock:
            self.sms[iccid].append(msg)
            self.c_sms[iccid] += 1
            pusher = self.pusher
        if pusher is not None and msg["fate"] in ("delivered", "failed"):
            # Like the platform: the receipt is pushed when the message settles into its fate.
            delay = max(0.0, (msg["settles"] - self.now()).total_seconds())
            pusher.push_receipt(msg, self.fleet.by_iccid[iccid].msisdn, delay)

    def issue_token(self, consumer_key: str) -> tuple[str, str]:
        """A new access token for the app ``consumer_key``; with ``one_live_token``, its previous one dies."""
        token = random_alnum(28)
        with self.lock:
            ttl = self.token_ttl
            previous = self.live_token.get(consumer_key)
            if self.one_live_token and previous is not None:
                self.tokens.pop(previous, None)
            self.live_token[consumer_key] = token
            self.tokens[token] = time.monotonic() + ttl
            self.issued.append(token)
            self.c_tokens += 1
            self.c_tokens_per_app[consumer_key] += 1
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
