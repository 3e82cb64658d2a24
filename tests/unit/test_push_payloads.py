"""SIM Insight push payloads: each documented type parses to its item; hostile or broken bodies are refused."""

from __future__ import annotations

import pytest

from airflow_provider_m2m.protocol import push

ICCID = "8925401000000000017"


def payload(root: str, inner: str, api_did: str = "0000061028", passphrase: str = "pp") -> bytes:
    return (
        f'<{root} version="1" api_did="{api_did}"><passphrase>{passphrase}</passphrase>'
        f"<iccid>{ICCID}</iccid>{inner}</{root}>"
    ).encode()


def test_receipt_reads_documented_elements_and_ignores_unknown_ones():
    body = payload(
        "post_delivery_receipt",
        "<msisdn>447890000000</msisdn><sms_uid>abc123</sms_uid><status>Delivered</status>"
        "<delivered_timestamp>01/02/2026 03:04:05</delivered_timestamp><surprise>x</surprise>",
    )
    parsed = push.parse(body)
    assert parsed.asset == push.ASSET_DELIVERY_RECEIPTS
    assert parsed.item == {
        "payload": "post_delivery_receipt",
        "api_did": "0000061028",
        "iccid": ICCID,
        "msisdn": "447890000000",
        "timestamp": "2026-02-01T03:04:05+00:00",
        "sms_uid": "abc123",
        "status": "delivered",
    }


def test_warning_alert_and_passphrase_stays_out_of_the_item():
    parsed = push.parse(
        payload("post_alert_sim_warning", "<warning_level_mb>1.5</warning_level_mb>", passphrase="s3cret")
    )
    assert parsed.asset == push.ASSET_USAGE_ALERTS
    assert (parsed.item["level"], parsed.item["level_mb"]) == ("warning", 1.5)
    assert parsed.passphrase == "s3cret"
    assert "s3cret" not in repr(parsed.item)


def test_identity_follows_content_not_delivery():
    first = push.parse(payload("post_sms", "<message_text>ok</message_text>", passphrase="a"))
    again = push.parse(payload("post_sms", "<message_text>ok</message_text>", passphrase="b"))
    other = push.parse(payload("post_sms", "<message_text>ok</message_text>", api_did="0000061029"))
    assert first.push_id == again.push_id != other.push_id


XXE = b"""<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<post_sms api_did="1"><iccid>8925401000000000017</iccid><message_text>&x;</message_text></post_sms>"""
BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    b'<post_sms api_did="1"><iccid>8925401000000000017</iccid><message_text>&d;</message_text></post_sms>'
)


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (XXE, "a DTD is not accepted"),
        (BOMB, "a DTD is not accepted"),
        (b"", "empty body"),
        (b"<post_sms", "not well-formed XML"),
        (b'{"iccid": "1"}', "not well-formed XML"),
        (b"<query_imei_response/>", "unknown root element"),
        (payload("post_sms", "", api_did=""), "api_did"),
        (payload("post_sms", "").replace(ICCID.encode(), b"12ab"), "iccid: an ICCID has digits only"),
        (payload("post_sms", "<timestamp>2026-01-01</timestamp>"), "timestamp: must be dd/mm/yyyy"),
        (payload("post_alert_sim_limit", "<cut_off_level_mb>lots</cut_off_level_mb>"), "cut_off_level_mb"),
        (payload("post_delivery_receipt", ""), "needs sms_uid or status"),
    ],
)
def test_refusals_name_the_rule_never_the_body(body, rule):
    with pytest.raises(push.PushPayloadError) as error:
        push.parse(body)
    assert rule in str(error.value)
    assert "etc/passwd" not in str(error.value) and "aaaa" not in str(error.value)
