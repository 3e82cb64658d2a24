"""SIM Insight XML: request building, the hardened response parser, and the records (pure code)."""

from __future__ import annotations

import datetime as dt
import time

import pendulum
import pytest
from lxml import etree

from airflow_provider_m2m.exceptions import AuthenticationError, M2mApiError, ProtocolError
from airflow_provider_m2m.protocol import sim_insight
from airflow_provider_m2m.protocol.excerpt import excerpt
from airflow_provider_m2m.protocol.sim_insight import ImeiRecord, SmsReceipt

PASSWORD = "pw-Zq8#LEAKCHECK-unit"


def response(command: str, inner: str, outcome: str = "success") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><{command}_response api_id="100001">'
        f"<api_outcome>{outcome}</api_outcome>{inner}</{command}_response>"
    ).encode()


# ---------------------------------------------------------------------------------------------- build_request
def test_build_request_shape_and_order():
    body = sim_insight.build_request(
        "send_sms",
        api_id="100001",
        username="user",
        password="p<&>\"'",
        fields=[
            ("iccid", "8925401000000000012"),
            ("message_text", "a\r\nb & <c>"),
            ("origin", None),
            ("sms_uid", "U1"),
        ],
    )
    assert body.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = etree.fromstring(body)
    assert root.tag == "send_sms"
    assert root.attrib == {"version": "1", "api_id": "100001"}
    assert [c.tag for c in root] == ["authentication", "iccid", "message_text", "sms_uid"]  # None left out
    assert root.findtext("authentication/username") == "user"
    assert root.findtext("authentication/password") == "p<&>\"'"
    assert root.findtext("message_text") == "a\r\nb & <c>"  # the CR survives a parse
    assert b"&#13;" in body


def test_build_request_utf8_text():
    body = sim_insight.build_request(
        "send_sms", api_id="1", username="u", password="p", fields=[("message_text", "€Ø")]
    )
    assert etree.fromstring(body).findtext("message_text") == "€Ø"
    assert "€Ø".encode() in body


# ---------------------------------------------------------------------------------------------- parse_response
def test_parse_success_fields_and_empties_as_none():
    fields = sim_insight.parse_response(
        "query_imei",
        response(
            "query_imei",
            "<current_imei>359827041234567</current_imei><last_change>01/02/2026 03:04:05</last_change>"
            "<previous_imei/>",
        ),
    )
    assert fields == {
        "api_outcome": "success",
        "current_imei": "359827041234567",
        "last_change": "01/02/2026 03:04:05",
        "previous_imei": None,
    }


@pytest.mark.parametrize(
    ("tag", "text"),
    [
        ("error_description", "invalid iccid"),
        ("error", "invalid group"),
        ("description", "invalid content"),
        ("errorText", "invalid iccid"),
    ],
)
def test_failure_description_under_any_error_or_description_element(tag, text):
    with pytest.raises(M2mApiError, match=rf"^SIM Insight query_imei failed: {text}$") as info:
        sim_insight.parse_response("query_imei", response("query_imei", f"<{tag}>{text}</{tag}>", "failure"))
    assert info.value.description == text
    assert info.value.command == "query_imei"


def test_failure_without_description():
    with pytest.raises(M2mApiError, match=r"failed: no description given$"):
        sim_insight.parse_response("query_imei", response("query_imei", "", "failure"))
    with pytest.raises(M2mApiError, match=r"failed: something odd$"):
        sim_insight.parse_response("query_imei", response("query_imei", "<detail>something odd</detail>", "failure"))


@pytest.mark.parametrize("text", ["authentication failed", "invalid password", "Permission denied", "invalid api_id"])
def test_failure_about_credentials_is_authentication_error(text):
    with pytest.raises(AuthenticationError, match=rf"^SIM Insight refused the credentials: {text}$"):
        sim_insight.parse_response(
            "send_sms", response("send_sms", f"<error_description>{text}</error_description>", "failure")
        )


def test_secrets_are_blanked_in_descriptions_and_excerpts():
    body = response("query_imei", f"<error_description>bad {PASSWORD}</error_description>", "failure")
    with pytest.raises(M2mApiError) as info:
        sim_insight.parse_response("query_imei", body, [PASSWORD])
    assert PASSWORD not in str(info.value)
    assert "bad ***" in str(info.value)
    with pytest.raises(ProtocolError) as info2:
        sim_insight.parse_response("query_imei", f"<html>{PASSWORD}".encode(), [PASSWORD])
    assert PASSWORD not in str(info2.value)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", r"^SIM Insight query_imei: empty response body$"),
        (b"  \n", r"^SIM Insight query_imei: empty response body$"),
        (
            b'<?xml version="1.0"?><query_imei_response api_id="',
            r"^SIM Insight query_imei: response is not well-formed XML: ",
        ),
        (
            b"<!DOCTYPE html><html><body><h1>Service error</h1></body></html>",
            r"expected <query_imei_response>, got <html>",
        ),
        (response("send_sms", "<sms_uid>x</sms_uid>"), r"expected <query_imei_response>, got <send_sms_response>"),
        (response("query_imei", "", "maybe"), r"api_outcome is 'maybe'"),
        (b"<query_imei_response/>", r"api_outcome is None"),
    ],
)
def test_unreadable_answers_are_protocol_errors(body, match):
    with pytest.raises(ProtocolError, match=match):
        sim_insight.parse_response("query_imei", body)


def test_excerpt_is_short_and_single_line():
    text = excerpt(b"a\n\n  b" + b"x" * 1000)
    assert text.startswith("'a b")
    assert text.endswith("...'")
    assert len(text) < 130


# ---------------------------------------------------------------------------------------------- hardening
def test_xxe_external_entity_never_expands(tmp_path):
    """A response with a DTD is refused outright; the file's content appears nowhere."""
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("XXE-SECRET-CONTENT-42")
    doctype = f'<!DOCTYPE r [<!ENTITY xxe SYSTEM "{secret_file.as_uri()}">]>'
    bodies = {
        "query_imei": (
            '<query_imei_response api_id="1"><api_outcome>success</api_outcome>'
            "<current_imei>&xxe;</current_imei><last_change/><previous_imei>&xxe;</previous_imei>"
            "</query_imei_response>"
        ),
        "query_imei ": (
            '<query_imei_response api_id="1"><api_outcome>failure</api_outcome>'
            "<error_description>&xxe;</error_description></query_imei_response>"
        ),
        "query_sms_mt_details": (
            '<query_sms_mt_details_response api_id="1"><api_outcome>success</api_outcome>'
            "<sms><sms_uid>u1</sms_uid><message_text>&xxe;</message_text></sms></query_sms_mt_details_response>"
        ),
    }
    for command, xml in bodies.items():
        body = f'<?xml version="1.0"?>{doctype}{xml}'.encode()
        with pytest.raises(ProtocolError, match="carries a DTD; refused") as info:
            if command == "query_sms_mt_details":
                sim_insight.sms_mt_details("8925401000000000012", body)
            else:
                sim_insight.parse_response(command.strip(), body)
        assert "XXE-SECRET-CONTENT-42" not in str(info.value)


def test_billion_laughs_does_not_expand_and_returns_quickly():
    entities = '<!ENTITY lol0 "lollollollollollollollollollol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    body = (
        f'<?xml version="1.0"?><!DOCTYPE r [{entities}]><query_imei_response api_id="1">'
        "<api_outcome>failure</api_outcome><error_description>&lol9;</error_description></query_imei_response>"
    ).encode()
    started = time.monotonic()
    with pytest.raises((ProtocolError, M2mApiError)) as info:
        sim_insight.parse_response("query_imei", body)
    assert time.monotonic() - started < 1.0
    assert "lol" * 100 not in str(info.value)
    assert len(str(info.value)) < 1000


# ---------------------------------------------------------------------------------------------- records
def test_parse_timestamp():
    value = sim_insight.parse_timestamp("31/12/2025 23:59:58")
    assert isinstance(value, pendulum.DateTime)
    assert value == dt.datetime(2025, 12, 31, 23, 59, 58, tzinfo=dt.UTC)
    assert value.utcoffset() == dt.timedelta(0)
    assert sim_insight.parse_timestamp(None) is None
    assert sim_insight.parse_timestamp("") is None
    for bad in ("2025-12-31 23:59:58", "31/12/2025", "32/12/2025 00:00:00"):
        with pytest.raises(ProtocolError, match=r"^SIM Insight timestamp .* dd/mm/yyyy hh:mm:ss$"):
            sim_insight.parse_timestamp(bad)


def test_imei_record_from_fields_and_as_dict():
    record = sim_insight.imei_record(
        "8925401000000000012",
        {"current_imei": "3598270412345607", "last_change": "20/11/2026 00:00:00", "previous_imei": "862057041234567"},
    )
    assert record == ImeiRecord(
        "8925401000000000012", "359827041234561", pendulum.datetime(2026, 11, 20), "862057041234567", None
    )
    assert record.as_dict() == {
        "iccid": "8925401000000000012",
        "current_imei": "359827041234561",
        "last_change": "2026-11-20T00:00:00+00:00",
        "previous_imei": "862057041234567",
        "error": None,
    }
    unknown = sim_insight.imei_record("8925401000000000012", {"current_imei": None, "last_change": None})
    assert unknown.as_dict() == {
        "iccid": "8925401000000000012",
        "current_imei": None,
        "last_change": None,
        "previous_imei": None,
        "error": None,
    }


def test_changed_since_is_inclusive_and_unknown_never_changed():
    since = dt.datetime(2026, 11, 19, tzinfo=dt.UTC)
    at = ImeiRecord("1" * 19, "1" * 15, pendulum.instance(since))
    before = ImeiRecord("1" * 19, "1" * 15, pendulum.instance(since - dt.timedelta(seconds=1)))
    assert at.changed_since(since)
    assert not before.changed_since(since)
    assert not ImeiRecord("1" * 19).changed_since(since)
    assert at.changed_since(pendulum.datetime(2026, 11, 19, 3, tz="Africa/Nairobi"))  # 00:00 UTC


def test_sms_receipt_as_dict():
    assert SmsReceipt("8925401000000000012", "U1").as_dict() == {
        "iccid": "8925401000000000012",
        "sms_uid": "U1",
        "outcome": "success",
    }
