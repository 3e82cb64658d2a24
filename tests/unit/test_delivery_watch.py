"""SMS delivery: parsing query_sms_mt_details, the sensor's input rules and the watch's bookkeeping (no I/O)."""

from __future__ import annotations

import asyncio
import json

import pendulum
import pytest

from airflow_provider_m2m.exceptions import AuthenticationError, InvalidRequestError, M2mApiError, ProtocolError
from airflow_provider_m2m.protocol import sim_insight
from airflow_provider_m2m.protocol.sim_insight import SmsDetails, SmsHistory
from airflow_provider_m2m.sms.delivery import DeliveryWatch, messages_to_watch

A, B, C = "8925401000000000012", "8925401000000000020", "8925401000000000038"


def response(inner: str, outcome: str = "success") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><query_sms_mt_details_response api_id="1">'
        f"<api_outcome>{outcome}</api_outcome>{inner}</query_sms_mt_details_response>"
    ).encode()


def sms(uid: str, status: str, delivered: str = "", text: str = "hi") -> str:
    return (
        f"<sms><sent_timestamp>21/11/2026 23:59:58</sent_timestamp><sms_uid>{uid}</sms_uid>"
        f"<status>{status}</status><delivered_timestamp>{delivered}</delivered_timestamp>"
        f"<origin>api</origin><message_text>{text}</message_text></sms>"
    )


# ------------------------------------------------------------------------------------------------ parsing
def test_parse_messages_newest_first_with_utc_timestamps():
    body = response(sms("New2", "delivered", "22/11/2026 00:00:03") + sms("Old1", "pending", text=" two&#13;\nlines "))
    new, old = sim_insight.sms_mt_details(A, body)
    assert (new.iccid, new.sms_uid, new.status, new.state, new.origin) == (A, "New2", "delivered", "delivered", "api")
    assert new.sent_timestamp == pendulum.datetime(2026, 11, 21, 23, 59, 58, tz="UTC")
    assert new.delivered_timestamp == pendulum.datetime(2026, 11, 22, 0, 0, 3, tz="UTC")
    assert new.delivered_timestamp.tzinfo.name == "UTC"
    assert (old.sms_uid, old.state, old.delivered_timestamp) == ("Old1", "pending", None)
    assert old.message_text == " two\r\nlines "  # the text exactly as sent
    assert new.as_dict() == {
        "iccid": A,
        "sms_uid": "New2",
        "status": "delivered",
        "state": "delivered",
        "sent_timestamp": "2026-11-21T23:59:58+00:00",
        "delivered_timestamp": "2026-11-22T00:00:03+00:00",
        "origin": "api",
        "message_text": "hi",
    }


@pytest.mark.parametrize("inner", ["<sms/>", "<sms></sms>", "<sms><sms_uid/><status> </status></sms>", ""])
def test_no_messages_is_an_empty_list(inner):
    assert sim_insight.sms_mt_details(A, response(inner)) == []


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("delivered", "delivered"),
        ("DELIVERED", "delivered"),
        ("pending", "pending"),
        (" queued ", "pending"),
        ("failed", "failed"),
        ("expired", "failed"),
        ("Undeliverable", "failed"),
        ("in transit to mars", "unknown"),
        ("", "unknown"),
    ],
)
def test_status_words_map_to_states(status, state):
    [message] = sim_insight.sms_mt_details(A, response(sms("U1", status)))
    assert message.state == state
    assert message.status == (status.strip() or None)  # the platform's word is kept as sent


def test_unknown_status_is_kept_and_not_final():
    watch = DeliveryWatch([(A, "U1")])
    watch.record(SmsHistory(A, (SmsDetails(A, "U1", "in transit to mars"),)))
    [row] = watch.report()
    assert (row["state"], row["status"]) == ("unknown", "in transit to mars")
    assert not watch.settled


def test_parse_failures():
    with pytest.raises(M2mApiError, match="invalid iccid"):
        sim_insight.sms_mt_details(A, response("<error_description>invalid iccid</error_description>", "failure"))
    with pytest.raises(AuthenticationError):
        sim_insight.sms_mt_details(
            A, response("<error_description>authentication failed</error_description>", "failure")
        )
    with pytest.raises(ProtocolError, match="not a valid dd/mm/yyyy"):
        sim_insight.sms_mt_details(A, response(sms("U1", "delivered", "2026-11-22T00:00:03Z")))


# -------------------------------------------------------------------------------------- sensor input
def test_messages_from_send_sms_rows_keep_only_what_went_out():
    rows = [
        {"iccid": A, "sms_uid": "UA", "outcome": "success", "error": None},
        {"iccid": B, "sms_uid": "UB", "outcome": "unknown", "error": "read timeout"},  # perhaps sent: watch it
        {"iccid": C, "sms_uid": "UC", "outcome": "failed", "error": "invalid iccid"},
        {"iccid": C, "outcome": "not_attempted", "error": "the batch task did not run"},
        {"iccid": C, "sms_uid": None, "outcome": "dry_run", "error": None},
    ]
    assert messages_to_watch(rows) == ([(A, "UA"), (B, "UB")], 3)


def test_messages_in_every_accepted_shape():
    pairs = [(A, "UA"), (B, "UB")]
    mapped = [[{"iccid": A, "sms_uid": "UA", "outcome": "success"}], None, [[B, "UB"], [A, "UA"]]]
    assert messages_to_watch(mapped) == (pairs, 0)  # per map index, None for an index without output
    assert messages_to_watch([{"iccid": A, "sms_uid": "UA"}, (B, "UB")]) == (pairs, 0)
    assert messages_to_watch(json.dumps([[A, "UA"], [B, "UB"]])) == (pairs, 0)
    assert messages_to_watch(str([{"iccid": A, "sms_uid": "UA", "error": None}, [B, "UB"]])) == (pairs, 0)
    assert messages_to_watch(None) == ([], 0)
    assert messages_to_watch("") == ([], 0)
    assert messages_to_watch([]) == ([], 0)


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ({"iccid": A, "sms_uid": "U"}, r"^messages: must be a list"),
        (5, r"^messages: must be a list"),
        ("not a list at all", r"^messages: text must be a JSON or Python list"),
        ([[A, "U"], 7], r"^messages\[1\]: must be an \{iccid, sms_uid\} row"),
        ([{"iccid": A}], r"^messages\[0\]\.sms_uid: is required"),
        ([{"iccid": "89254", "sms_uid": "U1"}], r"^messages\[0\]\.iccid: an ICCID has 18 to 22 digits"),
        ([[A, "bad uid!"]], r"^messages\[0\]\.sms_uid: "),
        ([[[A, "U1"], [[B, "U2"]]]], r"^messages\[0\]\[1\]: must be an \{iccid, sms_uid\} row"),
    ],
)
def test_bad_messages_name_the_item_and_the_rule(messages, error):
    with pytest.raises(InvalidRequestError, match=error):
        messages_to_watch(messages)


# ------------------------------------------------------------------------------------------------ watch
def _history(number: str, *messages: tuple[str, str]) -> SmsHistory:
    return SmsHistory(number, tuple(SmsDetails(number, uid, status) for uid, status in messages))


def test_due_asks_each_waiting_sim_once_per_round_oldest_first():
    numbers = [f"89254010000000{n:05d}" for n in range(10)]
    watch = DeliveryWatch([(n, "U1") for n in numbers])
    assert watch.due(4) == numbers[:4]
    assert watch.due(4) == numbers[4:8]
    assert watch.due(4) == numbers[8:] + numbers[:2]  # round robin: the never-asked first, then the oldest
    watch.record(_history(numbers[2], ("U1", "delivered")))
    assert numbers[2] not in watch.due(10)  # final: never asked again
    assert watch.rounds == 4


def test_one_query_covers_every_message_of_a_sim():
    watch = DeliveryWatch([(A, "U1"), (A, "U2"), (B, "U3")])
    assert watch.due(10) == [A, B]
    watch.record(_history(A, ("U2", "delivered"), ("U1", "failed")))
    assert [(r["sms_uid"], r["state"]) for r in watch.report()] == [
        ("U1", "failed"),
        ("U2", "delivered"),
        ("U3", "unchecked"),
    ]
    assert watch.due(10) == [B]
    watch.record(_history(B))  # the SIM's recent messages do not hold U3
    assert watch.report()[2]["state"] == "not_found" and not watch.settled
    watch.record(_history(B, ("U3", "delivered")))
    assert watch.settled and watch.due(10) == []
    assert watch.tally() == {"delivered": 2, "failed": 1}


def test_a_failed_query_keeps_what_was_known():
    watch = DeliveryWatch([(A, "U1")])
    watch.record(_history(A, ("U1", "pending")))
    watch.record(SmsHistory(A, error="HTTP 503, gave up"))
    [row] = watch.report()
    assert (row["state"], row["error"]) == ("pending", "HTTP 503, gave up")
    watch.record(_history(A, ("U1", "pending")))
    assert watch.report()[0]["error"] is None


def test_known_rows_carry_over_and_final_ones_are_not_asked_again():
    first = DeliveryWatch([(A, "U1"), (B, "U2"), (C, "U3")])
    first.record(SmsHistory(A, (SmsDetails(A, "U1", "delivered", delivered_timestamp=pendulum.datetime(2026, 1, 1)),)))
    first.record(_history(B, ("U2", "pending")))
    known = json.loads(json.dumps(first.known()))  # travels as JSON (trigger kwargs, state store)
    assert [row["sms_uid"] for row in known] == ["U1", "U2"]  # C has nothing to carry
    second = DeliveryWatch(
        [(A, "U1"), (B, "U2"), (C, "U3")], known + [{"iccid": C, "sms_uid": "other", "state": "delivered"}]
    )
    assert second.report() == first.report()
    assert second.report()[0]["delivered_at"] == "2026-01-01T00:00:00+00:00"
    assert second.due(10) == [C, B]  # the SIM the first watch never reached goes first


def test_poll_asks_within_the_budget_and_counts_failures():
    numbers = [f"89254010000000{n:05d}" for n in range(7)]
    watch = DeliveryWatch([(n, "U1") for n in numbers])
    asked_per_round: list[list[str]] = []

    async def query(batch: list[str]) -> list[SmsHistory]:
        asked_per_round.append(batch)
        return [SmsHistory(n, error="boom") if n == numbers[0] else _history(n, ("U1", "pending")) for n in batch]

    assert asyncio.run(watch.poll(query, 3)) == (3, 1)
    assert asyncio.run(watch.poll(query, 3)) == (3, 0)
    assert [len(batch) for batch in asked_per_round] == [3, 3]
    assert watch.tally() == {"pending": 5, "unchecked": 2}
    assert "5 pending, 2 unchecked (7 messages, round 2)" in watch.summary()
