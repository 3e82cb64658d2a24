"""RateLimiter defaults: evenly spaced sends, so a platform's own burst allowance absorbs network jitter."""

from __future__ import annotations

import pytest

from airflow_provider_m2m.utils.transport import RateLimiter


def test_sends_are_evenly_spaced_never_a_burst():
    limiter = RateLimiter(200)
    waits = [limiter.reserve() for _ in range(5)]
    assert waits[0] <= 0.001
    # the n-th request may go at n/rate: never two at once, however many are asked for together
    for n, wait in enumerate(waits):
        assert wait == pytest.approx(n / 200, abs=0.003)


def test_after_a_pause_sends_resume_evenly_spaced():
    limiter = RateLimiter(100)
    limiter.pause(0.5)
    waits = [limiter.reserve() for _ in range(3)]
    assert waits[0] == pytest.approx(0.5, abs=0.01)
    assert waits[1] - waits[0] == pytest.approx(0.01, abs=0.003)
    assert waits[2] - waits[1] == pytest.approx(0.01, abs=0.003)
