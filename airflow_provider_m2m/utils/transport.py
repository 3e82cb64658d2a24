"""
HTTP plumbing shared by both hooks; no Airflow imports.

* :class:`RetryPolicy` and :class:`Attempts`: one decision procedure for retries (exponential backoff with
  jitter, ``Retry-After`` honoured, bounded in attempts and in time) used by the synchronous and the
  concurrent path alike.
* :class:`RateLimiter`: a token bucket shared by every call of a task, so a task stays under the platform's
  rate limit instead of bouncing off 429s; a 429 pauses the whole bucket for its ``Retry-After``.
* :func:`send_sync` (requests, for single calls) and :func:`send_async` (aiohttp, for batches: about a third
  of the client CPU per call of requests from threads), both returning a :class:`Reply` or raising
  :class:`SendError` that says whether the request may have reached the server.

Running a batch of such calls concurrently is :mod:`airflow_provider_m2m.utils.batches`.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import requests
import urllib3.exceptions
import urllib3.response

from airflow_provider_m2m.exceptions import OutcomeUnknownError, ProtocolError, TransientError

if TYPE_CHECKING:
    from airflow_provider_m2m.utils.version_compat import TaskLog

T = TypeVar("T")
R = TypeVar("R")

RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})
# A request that must not run twice is retried only on answers that prove it was not carried out:
# 408, 429 and 503 are refusals; 502 and 504 come from a gateway whose upstream may have acted.
REFUSED_STATUSES = frozenset({408, 429, 503})
# Any other 4xx is the platform's final word on the request, whatever its body says (or fails to say):
# the hooks turn it into the platform's error, never into an unreadable answer worth another attempt.
MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, headers (case-insensitive mapping) and the body, read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked us to wait (``Retry-After`` as seconds or an HTTP date), if any."""
        return parse_retry_after(self.headers.get("Retry-After"))


class BodyTooLargeError(ProtocolError):
    """An answer larger than :data:`MAX_BODY_BYTES`: refused, and not retried (it would come back as big)."""

    def __init__(self) -> None:
        super().__init__(f"response body is larger than {MAX_BODY_BYTES} bytes; refused")


class RetryableStatus(Exception):
    """A transient HTTP status (429, 502, 503, 504, 408): raised by :meth:`Attempts.result` to retry."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        super().__init__(f"HTTP {reply.status}")


class SendError(Exception):
    """
    A request got no HTTP answer.

    :param reason: what happened, e.g. ``connection refused`` or ``read timed out``.
    :param reached_server: False only when the request certainly never left (connect failed).
    :param retryable: False when another attempt would fail the same way (a failed TLS handshake: the
        wrong scheme or a certificate the client does not trust); raised at once, never retried.
    """

    def __init__(self, reason: str, *, reached_server: bool, retryable: bool = True) -> None:
        self.reason = reason
        self.reached_server = reached_server
        self.retryable = retryable
        super().__init__(reason)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """
    How transient failures are retried inside a hook.

    :param max_attempts: attempts per call, the first included.
    :param base_delay: the first backoff, doubled on each retry (with jitter).
    :param max_delay: the longest single wait, ``Retry-After`` included.
    :param max_elapsed: give up rather than start a wait that would end past this many seconds.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_elapsed: float = 120.0

    def backoff(self, retry: int) -> float:
        """Wait before retry number ``retry`` (1-based): exponential with "equal jitter"."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class Attempts:
    """
    The retry decisions for one logical call.

    :param policy: the retry policy.
    :param what: a secret-free description of the call for logs and errors, e.g. ``query_imei 8925...``.
    :param log: where retries are logged (INFO, with the reason).
    :param idempotent: False for requests that must not run twice (an SMS).
    :param limiter: the task-wide rate limit, honoured before each attempt and paused for ``Retry-After``
        on a 429 so the task's other calls wait too; None for no limit.
    :param where: appended to the reason of a network failure (no HTTP answer): where it happened.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        what: str,
        log: TaskLog,
        *,
        idempotent: bool = True,
        limiter: RateLimiter | None = None,
        where: str = "",
    ) -> None:
        self.policy = policy
        self.what = what
        self.log = log
        self.idempotent = idempotent
        self.limiter = limiter
        self.where = where
        self.started = time.monotonic()
        self.count = 1

    def turns(self) -> Iterator[float]:
        """
        The seconds to wait before sending the next attempt (the rate limit's share), resumed after each wait:
        usually one wait.

        A caller that wakes well after its turn (a busy CPU held its thread or event loop up) takes a fresh turn
        instead of sending at once: every call held up with it would go out together, a burst beyond the
        platform's allowance, and each 429 it earns pauses the whole task for its ``Retry-After``. After
        :data:`MAX_FRESH_TURNS` it sends anyway, so a saturated machine still makes progress.
        """
        if self.limiter is None:
            return
        for fresh in range(1 + MAX_FRESH_TURNS):
            wait = self.limiter.reserve(retaken=fresh > 0)
            turn = time.monotonic() + wait
            yield wait
            if not self.limiter.is_late(turn):
                return

    def is_final(self, reply: Reply) -> bool:
        """True when ``reply`` is the call's answer (not a transient status to retry)."""
        return reply.status not in RETRYABLE_STATUSES

    def result(self, reply: Reply, interpret: Callable[[Reply], R]) -> R:
        """
        The call's result from ``reply``, through ``interpret``.

        :raises RetryableStatus: ``reply`` is a transient status, worth another attempt.
        :raises ProtocolError: ``interpret`` could not understand the answer (also worth another attempt).
        """
        if not self.is_final(reply):
            raise RetryableStatus(reply)
        return interpret(reply)

    def wait_after(self, failure: Reply | RetryableStatus | SendError | ProtocolError) -> float:
        """
        Seconds to wait before the next attempt after ``failure``.

        :raises OutcomeUnknownError: a non-idempotent request may have been carried out.
        :raises TransientError: the budget is spent.
        :raises SendError, BodyTooLargeError: ``failure`` itself, when no attempt could fix it.
        """
        retry_after = None
        if isinstance(failure, BodyTooLargeError) or (isinstance(failure, SendError) and not failure.retryable):
            raise failure
        if isinstance(failure, RetryableStatus):
            failure = failure.reply
        if isinstance(failure, Reply):
            reason, retry_after = f"HTTP {failure.status}", failure.retry_after
            maybe_done = failure.status not in REFUSED_STATUSES
        elif isinstance(failure, SendError):
            reason, maybe_done = f"{failure.reason}{self.where}", failure.reached_server
        else:  # an answer came but could not be understood: the request did arrive
            reason, maybe_done = str(failure), True
        if maybe_done and not self.idempotent:
            raise OutcomeUnknownError(f"{self.what}: {reason}; it may have been carried out")
        if self.count >= self.policy.max_attempts:
            raise TransientError(f"{self.what}: {reason}, gave up after {self.count} attempts")
        wait = self.policy.backoff(self.count)
        if retry_after is not None:
            wait = max(wait, retry_after)
            if self.limiter is not None and isinstance(failure, Reply) and failure.status == 429:
                self.limiter.pause(retry_after)
        wait = min(wait, self.policy.max_delay)
        elapsed = time.monotonic() - self.started
        if elapsed + wait > self.policy.max_elapsed:
            raise TransientError(
                f"{self.what}: {reason}, gave up after {self.count} attempts in {elapsed:.1f}s "
                f"(the next wait of {wait:.1f}s would pass the {self.policy.max_elapsed:.0f}s budget)"
            )
        self.count += 1
        self.log.info("Retrying %s in %.2fs (attempt %d): %s", self.what, wait, self.count, reason)
        return wait


#: A caller of a rate-limited task that wakes more than this after its turn takes a fresh one (see
#: :meth:`Attempts.turns`): a platform's burst allowance is a few tens of milliseconds of its rate.
LATE_AFTER = 0.025
#: How many fresh turns a caller held up again and again takes before it sends anyway.
MAX_FRESH_TURNS = 3


class RateLimiter:
    """
    A token bucket shared by every call of a task (thread-safe); rate None or 0 means no limit.

    Requests are evenly spaced, never sent in a burst: a burst spends the platform's own burst allowance,
    leaving none for network jitter to bunch requests up on arrival, and every 429 then pauses the whole
    task for its ``Retry-After``; even spacing costs nothing in sustained throughput.

    :param rate: requests per second.
    """

    def __init__(self, rate: float | None) -> None:
        self.rate = rate or 0.0
        self._lock = threading.Lock()
        self._next_free = time.monotonic()  # when the bucket is next empty enough ("virtual time")
        self._paused_until = 0.0
        #: Where a batch's time at the limit went (:meth:`pacing`): turns taken again by callers that woke late,
        #: and the pauses the platform's 429s asked for.
        self.turns_retaken = self.pauses = 0
        self.paused_s = 0.0

    def reserve(self, *, retaken: bool = False) -> float:
        """
        Take a slot; return how many seconds the caller must wait before sending.

        :param retaken: the caller woke too late for the turn it had (see :meth:`Attempts.turns`); counted.
        """
        now = time.monotonic()
        with self._lock:
            self.turns_retaken += retaken
            start = max(now, self._paused_until)
            if not self.rate:
                return start - now
            # Each request moves the "theoretical arrival time" by 1/rate; it may go at that time.
            earliest = max(start, self._next_free)
            self._next_free = earliest + 1 / self.rate
            return earliest - now

    def is_late(self, turn: float) -> bool:
        """
        True when it is now well past ``turn`` (a time :meth:`reserve` gave): more than two sends' spacing,
        and at least :data:`LATE_AFTER` seconds.
        """
        return bool(self.rate) and time.monotonic() - turn > max(LATE_AFTER, 2 / self.rate)

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` from now (the platform said so with a 429)."""
        now = time.monotonic()
        with self._lock:
            until = max(self._paused_until, now + seconds)
            self.pauses += 1
            self.paused_s += until - max(self._paused_until, now)  # a pause within another adds what it extends
            self._paused_until = until

    def costs(self) -> tuple[int, int, float]:
        """What the limit has cost so far: turns taken again after a late wake, pauses for a 429, seconds paused."""
        with self._lock:
            return self.turns_retaken, self.pauses, self.paused_s

    def pacing(self, since: tuple[int, int, float] = (0, 0, 0.0)) -> str:
        """
        What the limit cost since ``since`` (a :meth:`costs` taken before; a hook's limiter serves all its batches),
        for a batch's log: the turns taken again after a late wake (each one a slot that went unused) and the pauses
        for a 429 (every caller held).
        """
        retaken, pauses, paused_s = (now - before for now, before in zip(self.costs(), since, strict=True))
        return (
            f"paced at {self.rate:g}/s; late wakes that took a fresh turn: {retaken:g}; "
            f"pauses for a 429: {pauses:g} ({paused_s:.1f} s)"
        )


def _read_bounded(chunks: Iterable[bytes], deadline: float) -> bytes:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLargeError
        if time.monotonic() > deadline:
            raise SendError("the response did not finish within the timeout", reached_server=True)
    return bytes(body)


def _arriving(raw: urllib3.response.BaseHTTPResponse, size: int = 65536) -> Iterator[bytes]:
    """
    Yield the body as it arrives: ``read1`` returns what is there instead of waiting to fill ``size``, so
    a server that trickles a byte at a time cannot hold a read open past the deadline (``iter_content``
    waits for a full chunk, and the socket timeout restarts with every byte).
    """
    while chunk := raw.read1(size, decode_content=True):
        yield chunk


def _in_chain(exc: BaseException, wanted: Callable[[BaseException], bool]) -> BaseException | None:
    """The first error in ``exc``'s chain (``reason``, ``args[0]``, cause, context) that is ``wanted``."""
    seen: BaseException | None = exc
    while seen is not None:
        if wanted(seen):
            return seen
        reason = getattr(seen, "reason", None)
        if isinstance(reason, BaseException) and reason is not seen:
            seen = reason
            continue
        args = getattr(seen, "args", ())
        seen = args[0] if args and isinstance(args[0], BaseException) else seen.__cause__ or seen.__context__
    return None


def _never_left(exc: BaseException) -> bool:
    """True when a requests/urllib3 error shows the connection was never made."""
    never = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    return _in_chain(exc, lambda e: isinstance(e, never)) is not None


# What OpenSSL says when the far end does not speak TLS at all (a plain-HTTP port) or its certificate is
# refused: both can only happen in the handshake, before a byte of the request is sent.
_HANDSHAKE_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"}
)


def _is_handshake_failure(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLCertVerificationError) or (
        isinstance(exc, ssl.SSLError) and exc.reason in _HANDSHAKE_REASONS
    )


def _handshake_error(error: BaseException) -> SendError:
    reason = getattr(error, "verify_message", None) or getattr(error, "reason", None) or error
    return SendError(f"TLS handshake failed ({reason})", reached_server=False, retryable=False)


def send_sync(session: requests.Session, method: str, url: str, *, timeout: float, **kwargs: object) -> Reply:
    """
    Send one request with ``session``; read at most ``MAX_BODY_BYTES`` within ``timeout`` seconds.

    :raises SendError: no HTTP answer (``reached_server`` says whether the request may have arrived).
    """
    deadline = time.monotonic() + timeout
    try:
        with session.request(method, url, timeout=timeout, stream=True, **kwargs) as resp:  # type: ignore[arg-type]
            body = _read_bounded(_arriving(resp.raw), deadline)
            return Reply(resp.status_code, resp.headers, body)
    except requests.exceptions.ConnectTimeout:
        raise SendError("connect timed out", reached_server=False) from None
    except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError):
        raise SendError("read timed out", reached_server=True) from None
    except urllib3.exceptions.DecodeError:
        raise ProtocolError("the response body could not be decoded (Content-Encoding)") from None
    except requests.exceptions.SSLError as exc:  # raised before the response: the handshake, or the send
        handshake = _in_chain(exc, _is_handshake_failure)
        if handshake is not None:
            raise _handshake_error(handshake) from None
        raise SendError("connection dropped before the answer", reached_server=True) from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError) as exc:  # the body broke off
        raise SendError("connection dropped before the answer", reached_server=True) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        if _never_left(exc):
            raise SendError("connection failed", reached_server=False) from None
        raise SendError("connection dropped before the answer", reached_server=True) from None


async def send_async(session: aiohttp.ClientSession, method: str, url: str, **kwargs: object) -> Reply:
    """The aiohttp twin of :func:`send_sync` (timeouts come from the session)."""
    try:
        async with session.request(method, url, **kwargs) as resp:  # type: ignore[arg-type]
            if resp.content_length is not None and resp.content_length <= MAX_BODY_BYTES:
                return Reply(resp.status, resp.headers, await resp.read())  # the common, cheap case
            body = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise BodyTooLargeError
            return Reply(resp.status, resp.headers, bytes(body))
    except (aiohttp.ClientConnectorSSLError, aiohttp.ClientConnectorCertificateError) as exc:  # connect phase
        raise _handshake_error(getattr(exc, "certificate_error", None) or exc.os_error) from None
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
        raise SendError("connection failed", reached_server=False) from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise SendError("read timed out", reached_server=True) from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
        raise SendError("connection dropped before the answer", reached_server=True) from None


#: What an attempt can raise that :meth:`Attempts.wait_after` decides about.
_FAILED_ATTEMPT = (RetryableStatus, SendError, ProtocolError)


def call_sync(attempts: Attempts, send: Callable[[], Reply], interpret: Callable[[Reply], R]) -> R:
    """
    Send until ``interpret`` accepts a final reply, sleeping as ``attempts`` decides.

    ``interpret`` turns the reply into the caller's result; its :class:`ProtocolError` (an answer that
    cannot be understood) counts as a transient failure. The rate limit is honoured before each send.
    """
    while True:
        for wait in attempts.turns():
            time.sleep(max(0.0, wait))
        try:
            return attempts.result(send(), interpret)
        except _FAILED_ATTEMPT as failure:
            time.sleep(attempts.wait_after(failure))


async def call_async(attempts: Attempts, send: Callable[[], Awaitable[Reply]], interpret: Callable[[Reply], R]) -> R:
    """The asyncio twin of :func:`call_sync`: the same decisions, awaiting instead of sleeping."""
    while True:
        for wait in attempts.turns():
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            return attempts.result(await send(), interpret)
        except _FAILED_ATTEMPT as failure:
            await asyncio.sleep(attempts.wait_after(failure))
