"""Retry decisions, Retry-After parsing, backoff bounds and the rate limiter (no network)."""

from __future__ import annotations

import email.utils
import logging
import time

import pytest

from airflow_provider_m2m.exceptions import OutcomeUnknownError, ProtocolError, TransientError
from airflow_provider_m2m.utils import transport
from airflow_provider_m2m.utils.transport import (
    Attempts,
    RateLimiter,
    Reply,
    RetryPolicy,
    SendError,
    parse_retry_after,
)

LOG = logging.getLogger("test.transport")
FAST = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=2, max_elapsed=60)


def reply(status: int, retry_after: str | None = None) -> Reply:
    return Reply(status, {"Retry-After": retry_after} if retry_after is not None else {}, b"")


# ---------------------------------------------------------------------------------------------- backoff
@pytest.mark.parametrize("retry", range(1, 12))
def test_backoff_stays_within_equal_jitter_bounds(retry):
    policy = RetryPolicy(base_delay=0.5, max_delay=30)
    ceiling = min(30, 0.5 * 2 ** (retry - 1))
    waits = [policy.backoff(retry) for _ in range(200)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert max(waits) - min(waits) > 0  # jittered


def test_backoff_grows_then_caps():
    policy = RetryPolicy(base_delay=1, max_delay=8)
    assert 0.5 <= policy.backoff(1) <= 1
    assert 2 <= policy.backoff(3) <= 4
    assert 4 <= policy.backoff(10) <= 8


# ---------------------------------------------------------------------------------------------- Retry-After
@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("7", 7.0), (" 120 ", 120.0)])
def test_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_retry_after_http_date():
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(future) <= 31
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert parse_retry_after(past) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e3x"])
def test_retry_after_unreadable_is_none(value):
    assert parse_retry_after(value) is None


def test_reply_retry_after_reads_the_header_case_insensitively():
    from requests.structures import CaseInsensitiveDict

    assert Reply(503, CaseInsensitiveDict({"retry-after": "3"}), b"").retry_after == 3.0
    assert reply(503).retry_after is None


# ---------------------------------------------------------------------------------------------- RateLimiter
class FakeClock:
    """A controllable ``time`` stand-in for the transport module: the limiter's tests stay exact under load."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(transport, "time", fake)
    return fake


def test_rate_limiter_holds_the_rate_over_many_reserves(clock):
    limiter = RateLimiter(50)
    sent = []
    for _ in range(500):  # callers that sleep as told, back to back
        clock.sleep(limiter.reserve())
        sent.append(clock.now)
    assert sent[0] == 1000.0
    assert sent[-1] - sent[0] == pytest.approx(499 / 50)
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    assert min(gaps) == pytest.approx(1 / 50)
    # Over any window the count stays within the rate (+1 for the window's edge).
    assert sum(1 for t in sent if t < sent[0] + 1.0) <= 50 + 1


def test_rate_limiter_reservations_made_at_once_are_spread(clock):
    limiter = RateLimiter(20)
    waits = [limiter.reserve() for _ in range(100)]  # 100 concurrent callers reserve at the same instant
    assert waits == pytest.approx([i / 20 for i in range(100)])


def test_a_caller_woken_on_time_takes_its_one_turn(clock):
    limiter = RateLimiter(100)
    limiter.reserve()  # another caller's turn, now
    attempts = Attempts(FAST, "x", LOG, limiter=limiter)
    waits = []
    for wait in attempts.turns():
        waits.append(wait)
        clock.sleep(wait + 0.002)  # a scheduler's usual slack
    assert waits == pytest.approx([0.01])
    assert list(Attempts(FAST, "x", LOG).turns()) == []  # no limiter: no wait at all


def test_a_caller_held_up_past_its_turn_takes_a_fresh_one_instead_of_bursting(clock):
    limiter = RateLimiter(100)
    held_up = Attempts(FAST, "x", LOG, limiter=limiter)
    turns = held_up.turns()
    assert next(turns) == pytest.approx(0)
    others = [limiter.reserve() for _ in range(5)]  # five more callers queue up behind it
    clock.now += 0.2  # its event loop stalled for 200 ms: sending now would go out with everyone held up
    fresh = next(turns)
    assert fresh == pytest.approx(0)  # the next free turn is now: the ones it slept through are gone
    assert others[-1] == pytest.approx(0.05)
    clock.sleep(fresh)
    assert next(turns, "sent") == "sent"  # on time for the fresh turn: it sends


def test_a_caller_held_up_again_and_again_sends_after_a_few_fresh_turns(clock):
    limiter = RateLimiter(100)
    turns = Attempts(FAST, "x", LOG, limiter=limiter).turns()
    taken = 0
    for wait in turns:
        taken += 1
        clock.sleep(wait + 1.0)  # always a second late
    assert taken == 1 + transport.MAX_FRESH_TURNS
    assert limiter.turns_retaken == transport.MAX_FRESH_TURNS  # each a slot that went unused: the batch's log says
    assert limiter.is_late(clock.now - 0.03) and not limiter.is_late(clock.now - 0.02)
    assert not RateLimiter(None).is_late(clock.now - 100)  # without a rate nothing is late


def test_rate_limiter_unlimited_and_pause(clock):
    limiter = RateLimiter(None)
    assert all(limiter.reserve() == 0 for _ in range(1000))
    limiter.pause(2)
    assert limiter.reserve() == 2.0
    clock.now += 2
    assert limiter.reserve() == 0
    limited = RateLimiter(100)
    limited.pause(1)
    assert limited.reserve() == pytest.approx(1.0)
    assert limited.reserve() == pytest.approx(1.01)


def test_the_pacing_line_counts_pauses_by_what_they_held_everyone_up(clock):
    limiter = RateLimiter(250)
    limiter.pause(1)
    clock.now += 0.5
    limiter.pause(1)  # half a second into the first: it adds half a second
    limiter.pause(0.2)  # within the second: adds nothing
    assert (limiter.pauses, limiter.paused_s) == (3, pytest.approx(1.5))
    expected = "paced at 250/s; late wakes that took a fresh turn: 0; pauses for a 429: 3 (1.5 s)"
    assert limiter.pacing() == expected
    before = limiter.costs()  # the next batch of the same hook reports its own share only
    clock.now += 2
    limiter.pause(1)
    expected = "paced at 250/s; late wakes that took a fresh turn: 0; pauses for a 429: 1 (1.0 s)"
    assert limiter.pacing(since=before) == expected


# ---------------------------------------------------------------------------------------------- Attempts
@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_transient_statuses_are_not_final(status):
    assert not Attempts(FAST, "x", LOG).is_final(reply(status))


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 409, 422, 500])
def test_other_statuses_are_final(status):
    assert Attempts(FAST, "x", LOG).is_final(reply(status))


@pytest.mark.parametrize(
    "failure",
    [
        reply(429),
        reply(502),
        reply(503),
        reply(504),
        SendError("read timed out", reached_server=True),
        SendError("connection failed", reached_server=False),
        ProtocolError("not XML"),
    ],
    ids=["429", "502", "503", "504", "sent", "not-sent", "protocol"],
)
def test_idempotent_calls_retry_every_transient_failure(failure, caplog):
    attempts = Attempts(FAST, "query_imei 8925", LOG)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        wait = attempts.wait_after(failure)
    assert 0.005 <= wait <= 0.01
    assert attempts.count == 2
    assert "Retrying query_imei 8925" in caplog.text
    assert "(attempt 2)" in caplog.text


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (reply(408), "HTTP 408"),
        (reply(429), "HTTP 429"),
        (reply(503), "HTTP 503"),
        (SendError("connection failed", reached_server=False), "connection failed"),
    ],
)
def test_non_idempotent_retries_only_what_surely_was_not_done(failure, reason, caplog):
    attempts = Attempts(FAST, "send_sms 8925 sms_uid=U1", LOG, idempotent=False)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert attempts.wait_after(failure) > 0
    assert reason in caplog.text


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (reply(502), "HTTP 502"),
        (reply(504), "HTTP 504"),
        (SendError("read timed out", reached_server=True), "read timed out"),
        (SendError("connection dropped before the answer", reached_server=True), "connection dropped"),
        (ProtocolError("not well-formed"), "not well-formed"),
    ],
)
def test_non_idempotent_maybe_done_is_outcome_unknown(failure, reason):
    attempts = Attempts(FAST, "send_sms 8925 sms_uid=U1", LOG, idempotent=False)
    with pytest.raises(
        OutcomeUnknownError, match=rf"^send_sms 8925 sms_uid=U1: {reason}.*; it may have been carried out$"
    ):
        attempts.wait_after(failure)
    assert attempts.count == 1


def test_attempt_budget_exhaustion_message():
    attempts = Attempts(RetryPolicy(max_attempts=3, base_delay=0.001), "query_imei 8925", LOG)
    attempts.wait_after(reply(503))
    attempts.wait_after(reply(503))
    with pytest.raises(TransientError, match=r"^query_imei 8925: HTTP 503, gave up after 3 attempts$"):
        attempts.wait_after(reply(503))


def test_time_budget_exhaustion_message():
    attempts = Attempts(
        RetryPolicy(max_attempts=10, base_delay=0.01, max_delay=30, max_elapsed=5), "query_imei 8925", LOG
    )
    with pytest.raises(
        TransientError,
        match=r"^query_imei 8925: HTTP 429, gave up after 1 attempts in 0\.\ds "
        r"\(the next wait of 10\.0s would pass the 5s budget\)$",
    ):
        attempts.wait_after(reply(429, "10"))


def test_retry_after_is_honoured_but_capped_by_max_delay():
    attempts = Attempts(FAST, "x", LOG)
    assert attempts.wait_after(reply(503, "1")) == 1.0
    assert attempts.wait_after(reply(503, "100")) == 2.0  # max_delay


def test_429_pauses_the_shared_limiter():
    limiter = RateLimiter(None)
    attempts = Attempts(FAST, "x", LOG, limiter=limiter)
    attempts.wait_after(reply(429, "1"))
    assert 0.9 <= limiter.reserve() <= 1.0
    other = RateLimiter(None)
    Attempts(FAST, "x", LOG, limiter=other).wait_after(reply(503, "1"))
    assert other.reserve() <= 0


# ---------------------------------------------------------------------------------------------- call_sync
def test_an_oversized_answer_is_refused_at_once_not_retried():
    sends = []

    def send():
        sends.append(1)
        raise transport.BodyTooLargeError

    with pytest.raises(ProtocolError, match="larger than 1048576 bytes; refused"):
        transport.call_sync(Attempts(FAST, "x", LOG), send, lambda r: r)
    assert len(sends) == 1


def test_an_unreadable_answer_to_a_query_is_retried_then_accepted():
    answers = [ProtocolError("not XML"), reply(200)]

    def send():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    interpret_calls = []
    result = transport.call_sync(Attempts(FAST, "x", LOG), send, lambda r: interpret_calls.append(r) or r.status)
    assert result == 200 and len(interpret_calls) == 1 and not answers


def test_a_failed_tls_handshake_is_raised_at_once_not_retried():
    attempts = Attempts(FAST, "query_imei 8925", LOG, where=" at https://h:1")
    handshake = SendError("TLS handshake failed (WRONG_VERSION_NUMBER)", reached_server=False, retryable=False)
    with pytest.raises(SendError) as info:
        attempts.wait_after(handshake)
    assert info.value is handshake and attempts.count == 1


def test_a_network_failure_says_where_it_happened(caplog):
    attempts = Attempts(FAST, "query_imei 8925", LOG, where=" at https://h:1")
    with caplog.at_level(logging.INFO, logger=LOG.name):
        attempts.wait_after(SendError("connection failed", reached_server=False))
    assert "(attempt 2): connection failed at https://h:1" in caplog.text
