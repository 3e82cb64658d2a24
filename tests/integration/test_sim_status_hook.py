"""M2mHook's SIM status and usage calls against the sandbox over real HTTP: each path, bad input, faults."""

from __future__ import annotations

import time

import pytest
from test_m2m_hook import FAST, NOT_IN_FLEET, add_connection

from airflow_provider_m2m.exceptions import InvalidRequestError, M2mApiError, OutcomeUnknownError
from airflow_provider_m2m.hooks.m2m import M2mHook, SimStatus, StatusChange, UsageRecord


@pytest.fixture
def hook(sb):
    h = M2mHook(retry_policy=FAST)
    yield h
    h.close()


def edge(sb, status: str) -> str:
    return sb.state.statuses.edge_cases(sb.fleet.iccids)[status]


def set_requests(sb, iccid: str, at_least: int = 0) -> list[dict]:
    """The set_status requests the sandbox logged for ``iccid``, waiting up to 5 s for ``at_least`` of them
    (a request is logged once handled, which may be after the client gave up on it)."""
    deadline = time.monotonic() + 5
    while True:
        found = [e for e in sb.received("set_status") if e["iccid"] == iccid]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("status", ["active", "deactivated", "closed"])
def test_query_status_reads_each_status(sb, hook, status):
    iccid = edge(sb, status)
    assert hook.query_status(iccid) == SimStatus(iccid, status)


def test_query_statuses_one_record_per_sim_equal_to_the_sandbox(sb, hook):
    iccids = sb.fleet.iccids[:200]
    records = list(hook.query_statuses(iccids + [NOT_IN_FLEET], max_workers=8))
    assert sorted(r.iccid for r in records) == sorted(iccids + [NOT_IN_FLEET])
    by_iccid = {r.iccid: r for r in records}
    assert all(by_iccid[i] == SimStatus(i, sb.state.statuses.get(i)) for i in iccids)
    assert by_iccid[NOT_IN_FLEET].status is None and "invalid iccid" in by_iccid[NOT_IN_FLEET].error
    assert {r.status for r in records} == {"active", "deactivated", "closed", None}


@pytest.mark.parametrize(
    ("given", "sent", "now"), [("Deactivated", "de-activated", "deactivated"), ("ACTIVE", "active", "active")]
)
def test_set_status_sends_the_platforms_spelling_and_changes_the_sim(sb, hook, given, sent, now):
    iccid = edge(sb, "active" if now == "deactivated" else "deactivated")
    assert hook.set_status(iccid, given) == StatusChange(iccid, now)
    (request,) = sb.received("set_status")
    assert request["iccid"] == iccid and request["outcome"] == "success"
    assert sb.state.statuses.get(iccid) == now
    assert hook.query_status(iccid).status == now


def test_set_status_on_a_closed_sim_is_refused_by_the_platform(sb, hook):
    iccid = edge(sb, "closed")
    with pytest.raises(M2mApiError, match="invalid iccid"):
        hook.set_status(iccid, "active")
    assert sb.state.statuses.get(iccid) == "closed"


@pytest.mark.parametrize(
    ("iccid", "status", "match"),
    [
        ("8925401000000000012", "closed", "status: closed is permanent"),
        ("8925401000000000012", "suspended", "status: must be 'active' or 'deactivated'"),
        ("8925401000000000012", None, "status: must be a string"),
        ("89254010000", "deactivated", "iccid: an ICCID has 18 to 22 digits"),
        ("8925401O00000000012", "deactivated", "iccid: an ICCID has digits only"),
    ],
)
def test_bad_status_or_iccid_is_refused_before_anything_is_sent(sb, hook, iccid, status, match):
    with pytest.raises(InvalidRequestError, match=match):
        hook.set_status(iccid, status)
    assert sb.stats()["requests"] == 0


def test_query_statuses_validates_every_iccid_before_sending(sb, hook):
    with pytest.raises(InvalidRequestError, match=r"iccids\[1\]"):
        list(hook.query_statuses([sb.fleet.iccids[0], "123"]))
    assert sb.stats()["requests"] == 0


def test_unknown_iccid_is_an_api_error(sb, hook):
    for call in (hook.query_status, hook.query_usage, lambda i: hook.set_status(i, "deactivated")):
        with pytest.raises(M2mApiError, match="invalid iccid"):
            call(NOT_IN_FLEET)


def test_query_usage_reads_the_figures(sb, hook):
    iccid = sb.fleet.iccids[3]
    usage = hook.query_usage(iccid)
    assert isinstance(usage, UsageRecord) and usage.iccid == iccid and usage.error is None
    assert isinstance(usage.data_mb, float) and isinstance(usage.sms, int) and isinstance(usage.voice_mins, int)
    assert hook.query_usage(iccid) == usage  # the month's figures do not move between two reads
    assert usage.as_dict()["data_mb"] == usage.data_mb


# ---------------------------------------------------------------------------------------------- faults
@pytest.mark.parametrize("kind", ["503", "429"])
def test_set_status_refused_by_503_or_429_is_retried_and_carried_out_once(sb, hook, kind):
    iccid = edge(sb, "active")
    sb.inject(kind, count=1, retry_after=1)
    assert hook.set_status(iccid, "deactivated").outcome == "success"
    attempts = set_requests(sb, iccid)
    assert [e["fault"] for e in attempts] == [kind, None]  # the refused one never reached the handler
    assert [e.get("outcome") for e in attempts][-1] == "success"


@pytest.mark.parametrize("kind", ["drop", "drop_after", "502"])
def test_set_status_that_may_have_been_carried_out_is_not_retried(sb, hook, kind):
    iccid = edge(sb, "active")
    sb.inject(kind, count=1)
    with pytest.raises(OutcomeUnknownError, match=f"set_status {iccid}"):
        hook.set_status(iccid, "deactivated")
    assert len(set_requests(sb, iccid, at_least=1)) == 1
    # drop_after carried it out; drop and 502 did not: either way only reading back can tell.
    assert hook.query_status(iccid).status == ("deactivated" if kind == "drop_after" else "active")


def test_set_status_answered_after_the_timeout_is_outcome_unknown_with_one_request(sb, monkeypatch):
    hook = M2mHook(add_connection(monkeypatch, sb, "m2m_fast_timeout", timeout=0.5), retry_policy=FAST)
    iccid = edge(sb, "active")
    sb.state.statuses.answer_late(1.5)
    with pytest.raises(OutcomeUnknownError, match="read timed out"):
        hook.set_status(iccid, "deactivated")
    assert len(set_requests(sb, iccid, at_least=1)) == 1 and sb.state.statuses.get(iccid) == "deactivated"


def test_query_statuses_with_faults_every_sim_exactly_once(sb, hook):
    iccids = sb.fleet.iccids[:300]
    sb.inject("429", count=2, retry_after=1)
    sb.inject("503", rate=0.05)
    sb.inject("drop", rate=0.05)
    records = list(hook.query_statuses(iccids, max_workers=16))
    assert sorted(r.iccid for r in records) == sorted(iccids)
    assert all(r.error is None and r.status == sb.state.statuses.get(r.iccid) for r in records)
