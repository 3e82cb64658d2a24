"""The SMS ledger's rules without a task state store, its window size, the delivery wait's budget, the progress line."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from airflow_provider_m2m.sms.delivery import DEFAULT_REQUESTS_PER_POKE, requests_per_poke
from airflow_provider_m2m.sms.ledger import PENDING, SmsLedger
from airflow_provider_m2m.sms.sending import MAX_WINDOW, MIN_WINDOW, window_size
from airflow_provider_m2m.utils.progress import Progress

LOG = logging.getLogger("test")
SIMS = ["8925401000000000012", "8925401000000000020"]


def test_first_try_without_a_store_needs_no_lookups():
    ledger = SmsLedger({"ti": SimpleNamespace(try_number=1)}, LOG)
    assert ledger.prior(0, SIMS) == {}
    ledger.save(0, {SIMS[0]: "sent"})
    assert ledger.prior(0, SIMS) == {SIMS[0]: "sent"}  # within the try, remembered in memory
    assert not ledger.durable and ledger.round_trips == 0


def test_retry_without_a_store_treats_every_sim_as_unconfirmed(caplog):
    with caplog.at_level(logging.WARNING):
        ledger = SmsLedger({"ti": SimpleNamespace(try_number=2)}, LOG)
    assert ledger.prior(3, SIMS) == dict.fromkeys(SIMS, PENDING)  # each one looked up before it is sent
    assert "looks every SIM up in the platform's SMS history" in caplog.text


def test_bare_execute_is_a_first_try():
    assert SmsLedger({}, LOG).prior(0, SIMS) == {}


@pytest.mark.parametrize(
    ("workers", "rate", "expected"),
    [(1, None, MIN_WINDOW), (16, None, 256), (16, 195, 780), (16, 1000, MAX_WINDOW), (256, None, MAX_WINDOW)],
)
def test_window_size(workers, rate, expected):
    assert window_size(workers, rate) == expected


@pytest.mark.parametrize(
    ("asked", "interval", "rate", "expected"),
    [
        (7, 60, 200, 7),  # the user's own budget wins
        (None, 10, 195, 1950),  # what the limit allows in one interval
        (None, 0.2, 2, 1),  # never zero
        (None, 60, None, DEFAULT_REQUESTS_PER_POKE),  # no rate on the connection
    ],
)
def test_requests_per_poke(asked, interval, rate, expected):
    assert requests_per_poke(asked, interval, rate) == expected


def test_progress_never_says_done_for_a_failed_send():
    progress = Progress(LOG, "SMS", 2, outcomes=("sent", "failed", "unknown"))
    progress.step(outcome="sent")
    assert progress.line().startswith("SMS: 1/2 (1 sent, 0 failed, 0 unknown) in ")
    assert "ETA" in progress.line()
    progress.step(outcome="failed")
    line = progress.line()
    assert "2/2 (1 sent, 1 failed, 0 unknown)" in line and line.endswith("- finished, not all sent")
    ok = Progress(LOG, "SMS", 1, outcomes=("sent", "failed", "unknown"))
    ok.step(outcome="sent")
    assert ok.line().endswith("- done")
