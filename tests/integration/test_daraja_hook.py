"""DarajaHook against the sandbox over real HTTP: token cache, refresh, retries, batches, no secret leaks."""

from __future__ import annotations

import json
import logging
import threading
import time

import pendulum
import pytest
from conftest import DARAJA_SECRET

from airflow_provider_m2m.exceptions import AuthenticationError, DarajaApiError, InvalidRequestError
from airflow_provider_m2m.hooks.daraja import DarajaHook, clear_token_cache
from airflow_provider_m2m.utils.transport import RetryPolicy

FAST = RetryPolicy(base_delay=0.01)


@pytest.fixture(autouse=True)
def _fresh_token_cache():
    clear_token_cache()
    yield
    clear_token_cache()


def hook(conn_id: str = "daraja_default") -> DarajaHook:
    return DarajaHook(conn_id, retry_policy=FAST)


@pytest.fixture
def bad_conn(sb, monkeypatch) -> str:
    """A connection to the sandbox with a wrong consumer secret."""
    conn = json.loads(sb.conn_env()["AIRFLOW_CONN_DARAJA_DEFAULT"])
    conn["password"] = "wrong-" + DARAJA_SECRET
    monkeypatch.setenv("AIRFLOW_CONN_DARAJA_BAD", json.dumps(conn))
    return "daraja_bad"


def numbers(sb, count: int) -> list[str]:
    return list(sb.fleet.swaps)[:count]


def test_records_match_the_fleet(sb):
    h = hook()
    for name, number in sb.fleet.swap_edge_cases.items():
        record = h.check_sim_swap("0" + number[3:])  # the local form
        truth = sb.fleet.swaps[number]
        assert record.msisdn == number, name
        assert record.last_swap_date == truth.last_swap, name
        assert record.registration_date == truth.registration, name
        assert record.registration_note == truth.registration_note, name
        assert record.imsi_hash == truth.imsi_hash, name
        assert record.request_ref_id and record.error is None
    cases = sb.fleet.swap_edge_cases
    assert h.check_sim_swap(cases["no_swap"]).last_swap_date is None
    assert (
        h.check_sim_swap(cases["registration_note"]).registration_note
        == "MSISDN registration is more than one year old"
    )


def test_token_fetched_once_across_50_checks(sb):
    h = hook()
    for number in numbers(sb, 50):
        assert h.check_sim_swap("+" + number).error is None
    stats = sb.stats()
    assert stats["tokens_issued"] == 1
    assert stats["by_command"] == {"oauth": 1, "checkATI": 50}
    # A second hook on the same connection reuses the process-wide cached token.
    hook().check_sim_swap(numbers(sb, 1)[0])
    assert sb.stats()["tokens_issued"] == 1


def test_concurrent_first_calls_fetch_once(sb):
    sb.configure(latency=0.2)
    tokens: list[str] = []
    barrier = threading.Barrier(8)

    def fetch() -> None:
        h = hook()
        h.fetch_connection()  # before the race
        barrier.wait()
        tokens.append(h.get_access_token())

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(tokens) == 8 and len(set(tokens)) == 1
    assert sb.stats()["tokens_issued"] == 1


def test_expiry_triggers_a_refresh_before_the_call(sb):
    sb.configure(token_ttl=1)
    h = hook()
    number = numbers(sb, 1)[0]
    first = h.get_access_token()
    h.check_sim_swap(number)
    time.sleep(0.95)  # within 10 % of the 1 s lifetime of its end: renewed before use
    h.check_sim_swap(number)
    assert h.get_access_token() != first
    stats = sb.stats()
    assert stats["tokens_issued"] == 2
    assert stats["by_command"]["checkATI"] == 2  # no call was refused: the token was renewed first
    assert 401 not in stats["by_status"]


def test_revoked_token_is_refreshed_once_and_the_call_succeeds(sb):
    h = hook()
    number = numbers(sb, 1)[0]
    before = h.check_sim_swap(number)
    sb.revoke_tokens()
    after = h.check_sim_swap(number)
    assert after.imsi_hash == before.imsi_hash and after.error is None
    stats = sb.stats()
    assert stats["tokens_issued"] == 2
    assert stats["by_command"]["checkATI"] == 3  # ok, 401, ok
    assert stats["by_status"][401] == 1


def test_revoked_token_in_a_batch_is_refreshed_once(sb):
    h = hook()
    batch = numbers(sb, 64)
    h.get_access_token()
    sb.revoke_tokens()
    records = list(h.check_sim_swaps(batch, max_workers=16))
    assert [r.error for r in records] == [None] * 64
    stats = sb.stats()
    assert stats["tokens_issued"] == 2  # 16 workers saw 401 at once; one new token
    assert stats["by_status"][401] <= 16


def test_bad_secret_fails_clearly_and_never_leaks(sb, bad_conn, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    h = hook(bad_conn)
    with pytest.raises(
        AuthenticationError,
        match=r"^Connection 'daraja_bad': Daraja refused the consumer key/secret \(HTTP 400\)$",
    ) as info:
        h.check_sim_swap(numbers(sb, 1)[0])
    assert sb.stats()["by_command"] == {"oauth": 1}  # not retried, nothing checked
    assert h.test_connection() == (
        False,
        "Connection 'daraja_bad': Daraja refused the consumer key/secret (HTTP 400)",
    )
    with pytest.raises(AuthenticationError):
        list(h.check_sim_swaps(numbers(sb, 3)))
    assert sb.stats()["by_command"] == {"oauth": 3}
    out = capsys.readouterr()
    for text in (str(info.value), repr(info.value), caplog.text, out.out, out.err):
        assert DARAJA_SECRET not in text
    assert sb.credentials["daraja_key"] not in str(info.value)


def test_token_never_in_logs(sb, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    h = hook()
    h.check_sim_swap(numbers(sb, 1)[0])
    list(h.check_sim_swaps(numbers(sb, 5)))
    token = h.get_access_token()
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err):
        assert token not in text
        assert DARAJA_SECRET not in text
        assert "Bearer" not in text


def test_429_is_honoured(sb):
    h = hook()
    h.get_access_token()
    sb.inject("429", count=1, retry_after=1, platform="daraja")
    started = time.monotonic()
    record = h.check_sim_swap(numbers(sb, 1)[0])
    assert record.error is None
    assert time.monotonic() - started >= 0.95
    assert len(sb.received("checkATI")) == 2
    assert sb.stats()["by_status"][429] == 1


def test_other_errors_are_not_retried(sb):
    h = hook()
    # "Resource not found" names the number it was about, masked as the operators mask numbers in logs.
    pattern = r"^Daraja error for \*\*\*\*\*\*\*0000: HTTP 404 404\.001\.01: Resource not found"
    with pytest.raises(DarajaApiError, match=pattern) as info:
        h.check_sim_swap("0700000000")
    assert (info.value.status, info.value.error_code) == (404, "404.001.01")
    assert "700000000" not in str(info.value)
    assert sb.stats()["by_command"] == {"oauth": 1, "checkATI": 1}


def test_bad_input_sends_nothing(sb):
    h = hook()
    with pytest.raises(InvalidRequestError, match=r"^msisdn: must be a Kenyan mobile number: .*\(got '0202000000'\)$"):
        h.check_sim_swap("0202000000")
    with pytest.raises(InvalidRequestError, match=r"^msisdns\[1\]: must be a Kenyan mobile number"):
        h.check_sim_swaps(["0722000000", "not a number", "0722000001"])
    assert sb.stats()["requests"] == 0


def test_batch_one_record_per_input_each_number_checked_once(sb):
    h = hook()
    a, b, c = numbers(sb, 3)
    inputs = [a, "+" + a, "0" + b[3:], b, c, "0700000000", a]
    records = list(h.check_sim_swaps(inputs, max_workers=4))
    assert len(records) == len(inputs)
    assert sorted(r.msisdn for r in records) == sorted([a, a, b, b, c, "254700000000", a])
    assert sb.stats()["checks_per_msisdn"] == {a: 1, b: 1, c: 1}
    assert len(sb.received("checkATI")) == 4
    failed = [r for r in records if r.error]
    assert len(failed) == 1 and failed[0].msisdn == "254700000000"
    assert failed[0].error.startswith("Daraja error for *******0000: HTTP 404 404.001.01: Resource not found")
    assert failed[0].last_swap_date is None and failed[0].imsi_hash is None
    by_number = {r.msisdn: r for r in records if not r.error}
    assert by_number[a].imsi_hash == sb.fleet.swaps[a].imsi_hash
    # A plain string is one number.
    assert [r.msisdn for r in h.check_sim_swaps("0" + c[3:])] == [c]


def test_batch_swap_dates_are_relative_to_today(sb):
    h = hook()
    today = pendulum.now("UTC").date()
    cases = sb.fleet.swap_edge_cases
    records = {r.msisdn: r for r in h.check_sim_swaps(list(cases.values()))}
    swapped = records[cases["swapped_1_day_ago"]]
    assert swapped.swapped_within((today - swapped.last_swap_date).days, today)
    assert not records[cases["no_swap"]].swapped_within(90, today)


def test_test_connection_fetches_a_token(sb):
    assert hook().test_connection() == (True, "Connection 'daraja_default': Daraja issued an access token")
    assert sb.stats()["by_command"] == {"oauth": 1}


def test_a_fresh_token_refused_again_stops_with_authentication_error(sb):
    # Tokens live 1 s but every request takes 1.2 s: each token has expired when its check is read.
    sb.configure(token_ttl=1, latency=1.2)
    h = hook()
    with pytest.raises(
        AuthenticationError,
        match=r"^Connection 'daraja_default': Daraja refused a freshly issued access token \(HTTP 401 404\.001\.03\)",
    ):
        h.check_sim_swap(numbers(sb, 1)[0])
    stats = sb.stats()
    assert stats["tokens_issued"] == 2  # refreshed once, not in a loop
    assert stats["by_command"] == {"oauth": 2, "checkATI": 2}
