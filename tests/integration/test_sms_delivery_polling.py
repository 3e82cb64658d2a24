"""
SMS delivery against the sandbox's delivery model: the hook's query_sms_mt_details (single and batch),
the trigger's run() driven directly in an event loop, and the request budget over 500 pending messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import pendulum
import pytest

from airflow_provider_m2m.exceptions import AuthenticationError, InvalidRequestError, M2mApiError
from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.triggers import m2m as triggers
from airflow_provider_m2m.triggers.m2m import SmsDeliveryTrigger

NOT_IN_FLEET = "8925409999999999999"


@pytest.fixture
def hook(sb):
    return M2mHook()


def _send(hook: M2mHook, iccids: list[str], text: str = "Delivery check") -> list[list[str]]:
    return [[iccid, hook.send_sms(iccid, text).sms_uid] for iccid in iccids]


def _run(trigger: SmsDeliveryTrigger) -> dict:
    async def first_event():
        events = [event async for event in trigger.run()]
        assert len(events) == 1, events  # one event, then the trigger stops
        return events[0].payload

    return asyncio.run(first_event())


def _deadline(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


# ---------------------------------------------------------------------------------------------- hook
def test_query_sms_mt_details_follows_the_message_to_its_fate(sb, hook):
    sb.configure(sms_delivery_delay=1.0)
    cases = sb.fleet.sms_edge_cases
    assert hook.query_sms_mt_details(cases["delivered"]) == []  # no messages yet: the empty <sms/>
    before = pendulum.now("UTC").replace(microsecond=0)
    uids = {fate: hook.send_sms(iccid, f"to a {fate} SIM").sms_uid for fate, iccid in cases.items()}
    first = {fate: hook.query_sms_mt_details(iccid) for fate, iccid in cases.items()}
    assert {fate: [m.state for m in found] for fate, found in first.items()} == {fate: ["pending"] for fate in cases}
    time.sleep(1.2)
    for fate, iccid in cases.items():
        [message] = hook.query_sms_mt_details(iccid, lastx=1)
        assert (message.iccid, message.sms_uid, message.state, message.status) == (iccid, uids[fate], fate, fate)
        assert message.message_text == f"to a {fate} SIM" and message.origin == "api"
        assert before <= message.sent_timestamp <= pendulum.now("UTC")
        assert message.sent_timestamp.timezone_name == "UTC"
        if fate == "delivered":
            assert message.sent_timestamp <= message.delivered_timestamp <= pendulum.now("UTC")
        else:
            assert message.delivered_timestamp is None


def test_query_sms_mt_details_newest_first_and_lastx(sb, hook):
    iccid = sb.fleet.iccids[60]
    hook.send_sms(iccid, "one", sms_uid="First1")
    hook.send_sms(iccid, "two\r", sms_uid="Second2")
    assert [m.sms_uid for m in hook.query_sms_mt_details(iccid)] == ["Second2"]  # the platform's default: 1
    history = hook.query_sms_mt_details(iccid, lastx=20)
    assert [m.sms_uid for m in history] == ["Second2", "First1"]
    assert history[0].message_text == "two\r"  # a carriage return survives both ways
    assert hook.find_sms(iccid, "First1") and not hook.find_sms(iccid, "Other3")
    sent = sb.received("query_sms_mt_details")
    assert sent[0]["iccid"] == iccid


@pytest.mark.parametrize("lastx", [0, 21, "5", True, None])
def test_lastx_out_of_range_is_refused_before_sending(sb, hook, lastx):
    with pytest.raises(InvalidRequestError, match=r"^lastx: must be an integer from 1 to 20"):
        hook.query_sms_mt_details(sb.fleet.iccids[0], lastx=lastx)
    with pytest.raises(InvalidRequestError, match=r"^lastx: must be an integer from 1 to 20"):
        asyncio.run(hook.aquery_sms_histories(sb.fleet.iccids[:2], lastx=lastx))
    assert sb.stats()["requests"] == 0


def test_query_sms_mt_details_errors(sb, hook, monkeypatch):
    with pytest.raises(M2mApiError, match="invalid iccid"):
        hook.query_sms_mt_details(NOT_IN_FLEET)
    sb.inject("503", count=1)
    assert hook.query_sms_mt_details(sb.fleet.iccids[1]) == []  # retried like every other query
    monkeypatch.setenv("AIRFLOW_CONN_M2M_BAD", sb.conn_env()["AIRFLOW_CONN_M2M_DEFAULT"].replace("pw-", "wrong-"))
    with pytest.raises(AuthenticationError, match="m2m_bad"):
        M2mHook("m2m_bad").query_sms_mt_details(sb.fleet.iccids[1])


def test_batch_gives_one_history_per_sim_and_keeps_failures_apart(sb, hook):
    iccids = sb.fleet.iccids[:30]
    sent = dict(_send(hook, iccids[:10]))
    sb.inject("503", count=5)  # hook default policy: retried, so every SIM still answers
    histories = asyncio.run(hook.aquery_sms_histories([*iccids, NOT_IN_FLEET], lastx=3, max_workers=4))
    by_iccid = {h.iccid: h for h in histories}
    assert set(by_iccid) == {*iccids, NOT_IN_FLEET}
    assert "invalid iccid" in by_iccid[NOT_IN_FLEET].error
    for iccid in iccids:
        history = by_iccid[iccid]
        assert history.error is None
        assert [m.sms_uid for m in history.messages] == ([sent[iccid]] if iccid in sent else [])
    assert all(e.get("iccid") for e in sb.received("query_sms_mt_details"))
    assert sb.stats()["max_in_flight"] <= 4


def test_batch_stops_on_refused_credentials(sb, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_M2M_BAD", sb.conn_env()["AIRFLOW_CONN_M2M_DEFAULT"].replace("pw-", "wrong-"))
    with pytest.raises(AuthenticationError, match="m2m_bad"):
        asyncio.run(M2mHook("m2m_bad").aquery_sms_histories(sb.fleet.iccids[:50], max_workers=2))
    assert sb.stats()["requests"] < 50


# ---------------------------------------------------------------------------------------------- trigger
def test_trigger_serializes_to_json_and_back():
    trigger = SmsDeliveryTrigger(
        messages=[("8925401000000000012", "U1")],
        deadline=_deadline(60),
        m2m_conn_id="m2m_x",
        poke_interval=5,
        known=[{"iccid": "8925401000000000012", "sms_uid": "U1", "state": "pending"}],
        wait_first=True,
        max_wait=30,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_m2m.triggers.m2m.SmsDeliveryTrigger"
    kwargs = json.loads(json.dumps(kwargs))  # JSON payloads only
    assert SmsDeliveryTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["messages"] == [["8925401000000000012", "U1"]] and kwargs["wait_first"] is True


def test_trigger_waits_until_delivered_or_failed(sb, hook):
    sb.configure(sms_delivery_delay=1.0)
    cases = sb.fleet.sms_edge_cases
    messages = _send(hook, [cases["delivered"], cases["failed"]])
    started = time.monotonic()
    event = _run(SmsDeliveryTrigger(messages=messages, deadline=_deadline(30), poke_interval=0.3))
    assert time.monotonic() - started < 10
    assert event["status"] == "success"
    rows = {row["iccid"]: row for row in event["deliveries"]}
    assert rows[cases["delivered"]]["state"] == "delivered" and rows[cases["delivered"]]["delivered_at"]
    assert rows[cases["failed"]]["state"] == "failed" and rows[cases["failed"]]["delivered_at"] is None
    assert [[r["iccid"], r["sms_uid"]] for r in event["deliveries"]] == messages  # input order
    json.dumps(event)


def test_trigger_reports_pending_at_the_deadline(sb, hook):
    sb.configure(sms_delivery_delay=0)
    cases = sb.fleet.sms_edge_cases
    messages = _send(hook, [cases["delivered"], cases["pending"]])
    started = time.monotonic()
    event = _run(SmsDeliveryTrigger(messages=messages, deadline=_deadline(1.5), poke_interval=0.4))
    assert 1.4 < time.monotonic() - started < 8
    assert event["status"] == "timeout"
    assert [r["state"] for r in event["deliveries"]] == ["delivered", "pending"]
    # the delivered SIM was not asked again once final; the pending one every round
    asked = [e["iccid"] for e in sb.received("query_sms_mt_details")]
    assert asked.count(cases["delivered"]) == 1 and asked.count(cases["pending"]) >= 3


def test_trigger_restart_is_harmless(sb, hook):
    sb.configure(sms_delivery_delay=0)
    messages = _send(hook, [sb.fleet.sms_edge_cases["delivered"]])
    _, kwargs = SmsDeliveryTrigger(messages=messages, deadline=_deadline(30), poke_interval=0.2).serialize()
    first = _run(SmsDeliveryTrigger(**kwargs))
    again = _run(SmsDeliveryTrigger(**kwargs))  # what a triggerer restart does: run() from the same kwargs
    assert first == again and first["status"] == "success"
    assert sb.stats()["by_command"] == {"send_sms": 1, "query_sms_mt_details": 2}  # reads only


def test_trigger_backs_off_when_the_platform_struggles(sb, hook):
    sb.configure(sms_delivery_delay=0)
    messages = _send(hook, [sb.fleet.sms_edge_cases["pending"]])
    sb.inject("503")  # every query fails from now on
    event = _run(SmsDeliveryTrigger(messages=messages, deadline=_deadline(3.2), poke_interval=0.2))
    assert event["status"] == "timeout"
    [row] = event["deliveries"]
    assert row["state"] == "unchecked" and "HTTP 503" in row["error"]
    # one attempt per round, the interval doubling: rounds at 0, 0.4, 1.2, 2.8 s (not 16 at a steady 0.2 s)
    assert 3 <= sb.stats()["by_command"]["query_sms_mt_details"] <= 5


def test_trigger_reports_refused_credentials_as_an_error_event(sb, hook, monkeypatch):
    messages = _send(hook, [sb.fleet.iccids[3]])
    monkeypatch.setenv("AIRFLOW_CONN_M2M_BAD", sb.conn_env()["AIRFLOW_CONN_M2M_DEFAULT"].replace("pw-", "wrong-"))
    event = _run(SmsDeliveryTrigger(messages=messages, deadline=_deadline(30), m2m_conn_id="m2m_bad"))
    assert event["status"] == "error" and "m2m_bad" in event["message"]


def test_500_pending_messages_stay_within_the_request_budget(sb, hook, monkeypatch):
    """Each round asks at most max_requests_per_poke SIMs, every SIM in turn (none twice before all once)."""
    sb.configure(sms_delivery_delay=3600)  # everything stays pending
    messages = _send(hook, sb.fleet.iccids[:500])
    rounds: list[list[str]] = []

    class CountingHook(M2mHook):  # real HTTP; only counts what each round asks
        async def aquery_sms_histories(self, iccids, lastx=1, max_workers=None):
            rounds.append(list(iccids))
            return await super().aquery_sms_histories(iccids, lastx, max_workers)

    monkeypatch.setattr(triggers, "M2mHook", CountingHook)
    budget, interval, wait = 100, 0.3, 3.0
    event = _run(
        SmsDeliveryTrigger(
            messages=messages, deadline=_deadline(wait), poke_interval=interval, max_requests_per_poke=budget
        )
    )
    assert event["status"] == "timeout" and len(event["deliveries"]) == 500
    assert 2 <= len(rounds) <= 1 + wait / interval + 1
    assert all(len(batch) == budget for batch in rounds)
    asked = [iccid for batch in rounds for iccid in batch]
    assert sb.stats()["by_command"]["query_sms_mt_details"] == len(asked)  # no retries on top
    assert len(set(asked[:500])) == min(500, len(asked))  # round robin: none twice before all once
    states = {r["iccid"]: r["state"] for r in event["deliveries"]}
    assert {states[i] for i in asked} == {"pending"}
    assert {s for i, s in states.items() if i not in asked} <= {"unchecked"}  # not reached within the wait


def test_trigger_reads_and_writes_files_so_its_kwargs_and_event_stay_small(sb, hook, tmp_path):
    """With messages_uri / output_uri the messages and the rows live in files: kwargs and event carry counts."""
    import csv

    sb.configure(sms_delivery_delay=0)
    cases = sb.fleet.sms_edge_cases
    sent = _send(hook, [cases["delivered"], cases["failed"]])
    outcomes = tmp_path / "sent-00000.csv"
    with outcomes.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iccid", "sms_uid", "outcome", "error"])
        writer.writerows([*pair, "success", ""] for pair in sent)
        writer.writerow([NOT_IN_FLEET, "Nope1", "failed", "invalid iccid"])  # nothing went out: not watched
    out = tmp_path / "deliveries.csv"
    uris = [outcomes.as_uri(), (tmp_path / "sent-00001.csv").as_uri()]  # a batch that wrote nothing: no messages
    _, kwargs = SmsDeliveryTrigger(messages_uri=uris, output_uri=out.as_uri(), deadline=_deadline(30),
                                   poke_interval=0.2).serialize()  # fmt: skip
    assert kwargs["messages"] == [] and len(json.dumps(kwargs)) < 1000
    first = _run(SmsDeliveryTrigger(**json.loads(json.dumps(kwargs))))
    again = _run(SmsDeliveryTrigger(**kwargs))  # a triggerer restart: the files are read again
    assert first == again == {
        "status": "success",
        "message": "every message is delivered or failed",
        "output_uri": out.as_uri(),
        "counts": {"delivered": 1, "failed": 1},
    }
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["iccid"], r["sms_uid"], r["state"]) for r in rows] == [
        (sent[0][0], sent[0][1], "delivered"),
        (sent[1][0], sent[1][1], "failed"),
    ]
    assert rows[0]["delivered_at"] and not rows[1]["delivered_at"]
