"""M2mHook against the sandbox SIM Insight over real HTTP (no mocks)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter

import pytest
from conftest import M2M_PASSWORD

from airflow_provider_m2m.exceptions import (
    AuthenticationError,
    InvalidRequestError,
    M2mApiError,
    M2mProviderError,
    OutcomeUnknownError,
)
from airflow_provider_m2m.hooks.m2m import ImeiRecord, M2mHook, SmsReceipt
from airflow_provider_m2m.utils.transport import RetryPolicy

FAST = RetryPolicy(base_delay=0.01, max_delay=2)
NOT_IN_FLEET = "8900000000000000000"  # well-formed, unknown to the platform
HOOK_LOGGER = "airflow.task.hooks.airflow_provider_m2m.hooks.m2m.M2mHook"
# Hook logs go through structlog to stdout (Airflow 3.3), so retries are read from captured stdout.
_RETRY_LINE = re.compile(r"\[(\w+)\s*\] (Retrying .*?)\s+\[" + re.escape(HOOK_LOGGER) + r"\]")


def retry_lines(capsys) -> list[str]:
    """The hook's ``Retrying ...`` log lines written since the last read, each checked to be at INFO."""
    out = capsys.readouterr().out
    found = _RETRY_LINE.findall(out)
    assert all(level == "info" for level, _ in found), found
    return [message for _, message in found]


def add_connection(monkeypatch, sb, conn_id: str, *, password=None, api_id=None, timeout=10) -> str:
    """An extra m2m connection pointing at the sandbox, with some settings changed."""
    creds = sb.credentials
    conn = {
        "conn_type": "m2m",
        "host": sb.url,
        "login": creds["m2m_username"],
        "password": creds["m2m_password"] if password is None else password,
        "extra": {"api_id": creds["m2m_api_id"] if api_id is None else api_id, "timeout": timeout},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


@pytest.fixture
def hook(sb):
    h = M2mHook(retry_policy=FAST)
    yield h
    h.close()


def settle(sb, limit: float = 5.0) -> None:
    """Wait until the sandbox has finished every request (a slow one outlives the client's timeout)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        stats = sb.stats()
        if stats["in_flight"] == 0 and len(sb.received()) == stats["requests"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"the sandbox did not settle: {sb.stats()}")


def expected(sb, iccid: str) -> ImeiRecord:
    sim = sb.fleet.by_iccid[iccid]
    return ImeiRecord(iccid, sim.normalized_imei, sim.last_change, sim.previous_imei)


# ---------------------------------------------------------------------------------------------- query_imei
@pytest.mark.parametrize("edge", ["interval_start", "interval_end", "just_before", "last_second", "never_changed"])
def test_query_imei_edge_cases_match_the_fleet(sb, hook, edge):
    iccid = sb.fleet.edge_cases[edge]
    record = hook.query_imei(iccid)
    assert record == expected(sb, iccid)
    assert record.last_change.utcoffset().total_seconds() == 0
    assert record.error is None


def test_query_imei_every_kind_of_sim(sb, hook):
    firsts = {}
    for sim in sb.fleet.sims[7:]:
        firsts.setdefault(sim.kind, sim.iccid)
    assert set(firsts) == {"recent", "old", "never", "unknown"}
    for kind, iccid in firsts.items():
        assert hook.query_imei(iccid) == expected(sb, iccid), kind
    assert sb.stats()["imei_queries_per_iccid"] == dict.fromkeys(firsts.values(), 1)


def test_query_imei_normalises_imeisv(sb, hook):
    iccid = sb.fleet.edge_cases["imeisv"]
    served = sb.fleet.by_iccid[iccid].current_imei
    assert len(served) == 16
    record = hook.query_imei(iccid)
    assert len(record.current_imei) == 15
    assert record.current_imei[:14] == served[:14]
    assert record.current_imei == sb.fleet.by_iccid[iccid].normalized_imei


def test_query_imei_nothing_known(sb, hook):
    iccid = sb.fleet.edge_cases["unknown"]
    record = hook.query_imei(iccid)
    assert record == ImeiRecord(iccid)
    assert record.as_dict() == {
        "iccid": iccid,
        "current_imei": None,
        "last_change": None,
        "previous_imei": None,
        "error": None,
    }


def test_query_imei_unknown_iccid_is_api_error(sb, hook):
    with pytest.raises(
        M2mApiError, match=rf"^SIM Insight query_imei for SIM {NOT_IN_FLEET} failed: invalid iccid$"
    ) as info:
        hook.query_imei(NOT_IN_FLEET)
    assert info.value.description == "invalid iccid"
    assert info.value.iccid == NOT_IN_FLEET
    assert sb.stats()["requests"] == 1  # a platform failure is an answer: not retried


def test_query_imei_bad_iccid_sends_nothing(sb, hook):
    with pytest.raises(InvalidRequestError, match=r"^iccid: an ICCID has 18 to 22 digits, this one has 5"):
        hook.query_imei("12345")
    assert sb.stats()["requests"] == 0


def test_bad_password_is_authentication_error_naming_the_connection_not_retried(sb, monkeypatch):
    conn_id = add_connection(monkeypatch, sb, "m2m_badpw", password="not-the-password")
    hook = M2mHook(m2m_conn_id=conn_id, retry_policy=FAST)
    with pytest.raises(AuthenticationError, match=r"^Connection 'm2m_badpw': SIM Insight refused the credentials"):
        hook.query_imei(sb.fleet.iccids[10])
    assert sb.stats()["requests"] == 1
    with pytest.raises(AuthenticationError, match=r"^Connection 'm2m_badpw'"):
        list(hook.query_imeis(sb.fleet.iccids[:50], max_workers=1))  # stops the whole batch
    assert sb.stats()["requests"] == 2
    assert [e["error"] for e in sb.received()] == ["authentication failed"] * 2


def test_timeout_is_retried_for_query_imei(sb, monkeypatch, capsys):
    conn_id = add_connection(monkeypatch, sb, "m2m_fast_timeout", timeout=1)
    hook = M2mHook(m2m_conn_id=conn_id, retry_policy=FAST)
    iccid = sb.fleet.iccids[20]
    sb.inject("slow", count=1, slow_seconds=2.0)
    capsys.readouterr()
    started = time.monotonic()
    record = hook.query_imei(iccid)
    assert 1.0 <= time.monotonic() - started < 2.0
    assert record == expected(sb, iccid)
    assert sb.stats()["requests"] == 2
    (line,) = retry_lines(capsys)
    assert line.startswith(f"Retrying query_imei {iccid} in ")
    assert line.endswith(f"(attempt 2): read timed out at {sb.url}")
    settle(sb)
    assert [e["fault"] for e in sb.received("query_imei")] == [None, "slow"]  # the retry answered first


def test_retry_after_is_honoured_and_each_retry_logged(sb, hook, capsys):
    iccid = sb.fleet.iccids[30]
    sb.inject("503", count=1, retry_after=1)
    capsys.readouterr()
    started = time.monotonic()
    record = hook.query_imei(iccid)
    assert time.monotonic() - started >= 1.0
    assert record == expected(sb, iccid)
    assert sb.stats()["by_status"] == {503: 1, 200: 1}
    assert retry_lines(capsys) == [f"Retrying query_imei {iccid} in 1.00s (attempt 2): HTTP 503"]


def test_transient_failures_are_logged_once_per_retry(sb, hook, capsys):
    sb.inject("429", count=1, retry_after=1)
    sb.inject("502", count=1)
    sb.inject("malformed", count=1)
    capsys.readouterr()
    assert hook.query_imei(sb.fleet.iccids[31]) == expected(sb, sb.fleet.iccids[31])
    messages = retry_lines(capsys)
    assert len(messages) == 3
    assert "HTTP 429" in messages[0]
    assert "HTTP 502" in messages[1]
    assert "not well-formed XML" in messages[2]
    assert sb.stats()["requests"] == 4


# ---------------------------------------------------------------------------------------------- query_imeis
def test_query_imeis_whole_fleet_one_record_each_equal_to_the_fleet(sb, hook):
    iccids = sb.fleet.iccids
    records = list(hook.query_imeis(iccids))
    assert len(records) == len(iccids) == 1000
    assert Counter(r.iccid for r in records) == Counter(iccids)
    for record in records:
        assert record == expected(sb, record.iccid)
    assert sb.stats()["requests"] == 1000


def test_query_imeis_takes_a_plain_string_as_one_iccid(sb, hook):
    sim = sb.fleet.sims[10]
    (record,) = hook.query_imeis(sim.iccid)
    assert record == expected(sb, sim.iccid)
    assert sb.stats()["requests"] == 1


def test_query_imeis_with_faults_every_sim_exactly_once(sb, hook):
    iccids = sb.fleet.iccids[:400]
    sb.inject("429", count=2, retry_after=1)
    sb.inject("503", rate=0.04)
    sb.inject("drop", rate=0.03)
    sb.inject("malformed", rate=0.03)
    records = list(hook.query_imeis(iccids, max_workers=16))
    assert Counter(r.iccid for r in records) == Counter(iccids)
    stats = sb.stats()
    assert stats["faults"]["429"] == 2
    assert stats["faults"]["503"] > 0 and stats["faults"]["drop"] > 0 and stats["faults"]["malformed"] > 0
    good = [r for r in records if r.error is None]
    assert len(good) >= len(iccids) - 2
    for record in good:
        assert record == expected(sb, record.iccid)
    for record in records:
        if record.error:
            assert (record.current_imei, record.last_change, record.previous_imei) == (None, None, None)


def test_query_imeis_failed_sims_carry_the_error(sb, hook):
    iccids = [sb.fleet.iccids[40], NOT_IN_FLEET, sb.fleet.iccids[41]]
    records = {r.iccid: r for r in hook.query_imeis(iccids)}
    assert set(records) == set(iccids)
    assert records[NOT_IN_FLEET] == ImeiRecord(
        NOT_IN_FLEET, error=f"SIM Insight query_imei for SIM {NOT_IN_FLEET} failed: invalid iccid"
    )
    assert records[iccids[0]] == expected(sb, iccids[0])


def test_query_imeis_past_the_budget_is_an_error_row_not_a_crash(sb):
    hook = M2mHook(retry_policy=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05))
    sb.inject("503", count=2)
    records = list(hook.query_imeis([sb.fleet.iccids[42]], max_workers=1))
    assert len(records) == 1
    assert records[0].error == f"query_imei {sb.fleet.iccids[42]}: HTTP 503, gave up after 2 attempts"


def test_query_imeis_validates_everything_before_sending(sb, hook):
    with pytest.raises(InvalidRequestError, match=r"^iccids\[2\]: an ICCID has digits only"):
        list(hook.query_imeis([sb.fleet.iccids[0], sb.fleet.iccids[1], "89254010000000000x2"]))
    with pytest.raises(InvalidRequestError, match=r"^max_workers: must be an integer from 1 to 256$"):
        list(hook.query_imeis(sb.fleet.iccids[:2], max_workers=0))
    assert sb.stats()["requests"] == 0


@pytest.mark.parametrize(("workers", "bounded"), [(4, True), (16, False)])
def test_query_imeis_concurrency_bound(sb, hook, workers, bounded):
    sb.configure(latency=0.05)
    records = list(hook.query_imeis(sb.fleet.iccids[:64], max_workers=workers))
    assert len(records) == 64
    peak = sb.stats()["max_in_flight"]
    if bounded:
        assert 2 <= peak <= workers
    else:
        assert 4 < peak <= workers


# ---------------------------------------------------------------------------------------------- send_sms
def test_send_sms_success_stored_once_and_text_round_trips(sb, hook):
    iccid = sb.fleet.iccids[50]
    text = "Line1\r\nLine2 {x} [y] ~ | \\ ^ € @£$ ÇØ"
    receipt = hook.send_sms(iccid, text, origin="+254700000001", sms_uid="Uid001")
    assert receipt == SmsReceipt(iccid, "Uid001", "success")
    assert sb.stats()["sms_per_iccid"] == {iccid: 1}
    (entry,) = sb.received("send_sms")
    assert entry["message_text"] == text
    assert entry["message_text"].encode("utf-8") == text.encode("utf-8")
    assert (entry["sms_uid"], entry["origin"], entry["data_coding"]) == ("Uid001", "254700000001", "default")


def test_send_sms_generates_a_uid(sb, hook):
    receipt = hook.send_sms(sb.fleet.iccids[51], "hello")
    assert len(receipt.sms_uid) == 12 and receipt.sms_uid.isalnum()
    assert sb.received("send_sms")[0]["sms_uid"] == receipt.sms_uid


def test_send_sms_binary(sb, hook):
    receipt = hook.send_sms(sb.fleet.iccids[52], "AAECAw==", data_coding="binary", sms_uid="Bin1")
    assert receipt.outcome == "success"
    assert sb.received("send_sms")[0]["data_coding"] == "binary"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"message_text": "héllo á"}, r"^message_text: character 'á' \(U\+00E1\) at position 6"),
        ({"message_text": "x" * 161}, r"^message_text: 161 septets is over the 160-septet limit"),
        ({"message_text": "ok", "sms_uid": "has-dash"}, r"^sms_uid: must be 1 to 12 ASCII letters and digits"),
        ({"message_text": "ok", "origin": "sender"}, r"^origin: must be a number"),
        ({"message_text": "ok", "data_coding": "ucs2"}, r"^data_coding: must be 'default' or 'binary'"),
    ],
)
def test_send_sms_invalid_input_sends_nothing(sb, hook, kwargs, match):
    with pytest.raises(InvalidRequestError, match=match):
        hook.send_sms(sb.fleet.iccids[53], **kwargs)
    assert sb.stats()["requests"] == 0


def test_send_sms_read_timeout_is_outcome_unknown_with_one_request(sb, monkeypatch):
    conn_id = add_connection(monkeypatch, sb, "m2m_sms_timeout", timeout=1)
    hook = M2mHook(m2m_conn_id=conn_id, retry_policy=FAST)
    iccid = sb.fleet.iccids[54]
    sb.inject("slow", count=1, slow_seconds=1.5)
    unknown = r"^send_sms \d+ sms_uid=Slow1: read timed out at http://127\.0\.0\.1:\d+; it may"
    with pytest.raises(OutcomeUnknownError, match=unknown) as info:
        hook.send_sms(iccid, "hello", sms_uid="Slow1")
    assert info.value.sms_uid == "Slow1"
    settle(sb)  # let the slow request finish on the server
    stats = sb.stats()
    assert stats["requests"] == 1
    assert stats["sms_per_iccid"] == {iccid: 1}  # it did go through: the reason not to resend blindly


def test_send_sms_dropped_after_processing_is_outcome_unknown(sb, hook):
    iccid = sb.fleet.iccids[55]
    sb.inject("drop_after", count=1)
    with pytest.raises(OutcomeUnknownError, match=r"connection dropped before the answer") as info:
        hook.send_sms(iccid, "hello")
    assert info.value.sms_uid and len(info.value.sms_uid) == 12
    assert sb.stats()["requests"] == 1
    assert sb.stats()["sms_per_iccid"] == {iccid: 1}
    assert hook.find_sms(iccid, info.value.sms_uid)  # the uid settles the unknown outcome


def test_send_sms_refused_with_503_is_retried_and_delivered_once(sb, hook, capsys):
    iccid = sb.fleet.iccids[56]
    sb.inject("503", count=1)
    capsys.readouterr()
    receipt = hook.send_sms(iccid, "hello", sms_uid="Once503")
    assert receipt.outcome == "success"
    assert sb.stats()["requests"] == 2
    assert sb.stats()["sms_per_iccid"] == {iccid: 1}
    (line,) = retry_lines(capsys)
    assert line.startswith(f"Retrying send_sms {iccid} sms_uid=Once503 in ")
    assert line.endswith(": HTTP 503")


@pytest.mark.parametrize("status", ["502", "504"])
def test_send_sms_gateway_errors_are_outcome_unknown_not_retried(sb, hook, status):
    sb.inject(status, count=1)
    with pytest.raises(OutcomeUnknownError, match=rf"HTTP {status}; it may have been carried out$") as info:
        hook.send_sms(sb.fleet.iccids[57], "hello", sms_uid=f"Gw{status}")
    assert info.value.sms_uid == f"Gw{status}"
    assert sb.stats()["requests"] == 1


def test_send_sms_unknown_iccid_is_api_error(sb, hook):
    with pytest.raises(
        M2mApiError, match=rf"^SIM Insight send_sms for SIM {NOT_IN_FLEET} failed: invalid iccid$"
    ) as info:
        hook.send_sms(NOT_IN_FLEET, "hello")
    assert info.value.iccid == NOT_IN_FLEET
    assert sb.stats()["requests"] == 1


# ---------------------------------------------------------------------------------------------- test_connection
def test_test_connection_good_and_bad(sb, hook, monkeypatch):
    ok, message = hook.test_connection()
    assert ok is True
    assert message == "Credentials accepted (the probe query answered: invalid iccid)"
    conn_id = add_connection(monkeypatch, sb, "m2m_wrong", password="wrong-password-123")
    ok, message = M2mHook(m2m_conn_id=conn_id, retry_policy=FAST).test_connection()
    assert ok is False
    assert message.startswith("Connection 'm2m_wrong': SIM Insight refused the credentials")


def test_test_connection_queries_the_test_iccid_of_the_form(sb, monkeypatch):
    """The connection form's Test ICCID extra (as the UI stores it) is the SIM "Test connection" asks about."""
    sim = sb.fleet.sims[10]
    conn = json.loads(os.environ[f"AIRFLOW_CONN_{add_connection(monkeypatch, sb, 'm2m_probe').upper()}"])
    conn["extra"]["test_iccid"] = sim.iccid
    monkeypatch.setenv("AIRFLOW_CONN_M2M_PROBE", json.dumps(conn))
    ok, message = M2mHook(m2m_conn_id="m2m_probe", retry_policy=FAST).test_connection()
    assert (ok, message) == (
        True,
        f"Credentials accepted; SIM {sim.iccid} is in device {sim.normalized_imei or 'unknown'}",
    )
    assert [entry["iccid"] for entry in sb.received("query_imei")] == [sim.iccid]


def test_missing_api_id_is_invalid_request(sb, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_M2M_NOAPI", json.dumps({"conn_type": "m2m", "host": sb.url, "login": "u", "password": "p12345"})
    )
    with pytest.raises(
        InvalidRequestError, match=r"^connection 'm2m_noapi' extra 'api_id': is required by SIM Insight$"
    ):
        M2mHook(m2m_conn_id="m2m_noapi").query_imei(sb.fleet.iccids[0])
    assert sb.stats()["requests"] == 0


# ---------------------------------------------------------------------------------------------- secrets
def test_password_never_appears_in_logs_or_errors(sb, monkeypatch, caplog, capsys):
    assert sb.credentials["m2m_password"] == M2M_PASSWORD
    wrong_api = add_connection(monkeypatch, sb, "m2m_wrong_api", api_id="999999")  # right password, refused
    timeout_conn = add_connection(monkeypatch, sb, "m2m_leak_timeout", timeout=1)
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        hook = M2mHook(retry_policy=FAST)
        hook.query_imei(sb.fleet.iccids[70])
        list(hook.query_imeis(sb.fleet.iccids[70:90], max_workers=4))
        hook.send_sms(sb.fleet.iccids[71], "hello")
        texts.append(repr(hook.test_connection()))
        sb.inject("malformed", count=1)
        sb.inject("503", count=1)
        hook.query_imei(sb.fleet.iccids[72])
        sb.inject("html", count=5)
        with pytest.raises(M2mProviderError) as info:
            M2mHook(retry_policy=RetryPolicy(max_attempts=1)).query_imei(sb.fleet.iccids[73])
        texts.append(str(info.value))
        sb.clear_faults()
        sb.inject("html", count=3)
        sb.inject("empty", count=3)
        one_try = M2mHook(retry_policy=RetryPolicy(max_attempts=1))
        errors = [r.error for r in one_try.query_imeis(sb.fleet.iccids[80:90], max_workers=2) if r.error]
        assert len(errors) == 6
        texts.extend(errors)
        sb.inject("502", count=1)
        with pytest.raises(OutcomeUnknownError) as info:
            hook.send_sms(sb.fleet.iccids[74], "hello")
        texts.append(str(info.value))
        with pytest.raises(M2mApiError) as info:
            hook.query_imei(NOT_IN_FLEET)
        texts.append(str(info.value))
        for conn_id in (wrong_api,):
            bad = M2mHook(m2m_conn_id=conn_id, retry_policy=FAST)
            with pytest.raises(AuthenticationError) as info:
                bad.query_imei(sb.fleet.iccids[75])
            texts.append(str(info.value))
            with pytest.raises(AuthenticationError) as info:
                bad.send_sms(sb.fleet.iccids[75], "hello")
            texts.append(str(info.value))
            texts.append(repr(bad.test_connection()))
        sb.inject("slow", count=1, slow_seconds=1.3)
        with pytest.raises(OutcomeUnknownError) as info:
            M2mHook(m2m_conn_id=timeout_conn, retry_policy=FAST).send_sms(sb.fleet.iccids[76], "hello")
        texts.append(str(info.value))
        settle(sb)
    captured = capsys.readouterr()
    assert len(texts) == 14
    assert caplog.records  # the check below looked at something
    everything = "\n".join([*texts, caplog.text, captured.out, captured.err])
    everything += "\n".join(repr(r.args) + repr(getattr(r, "__dict__", {})) for r in caplog.records)
    assert M2M_PASSWORD not in everything
    assert "Retrying" in everything
