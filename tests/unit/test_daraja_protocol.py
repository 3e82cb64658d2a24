"""Daraja protocol: MSISDN normalisation, token/check/error parsing, every date shape."""

from __future__ import annotations

import json

import pendulum
import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_m2m.exceptions import DarajaApiError, InvalidRequestError, ProtocolError
from airflow_provider_m2m.protocol import daraja, msisdn
from airflow_provider_m2m.protocol.daraja import SimSwapRecord

NUMBER = "254722000000"


# ---------------------------------------------------------------- MSISDN
@pytest.mark.parametrize(
    "given_value",
    ["0722000000", "+254722000000", "254722000000", " 0722 000 000 ", "0722-000-000", "+254 (722) 000-000"],
)
def test_msisdn_forms_normalise(given_value):
    assert msisdn.validate(given_value) == NUMBER


@pytest.mark.parametrize(
    ("given_value", "expected"), [("0110000000", "254110000000"), ("+254163369922", "254163369922")]
)
def test_msisdn_01_ranges(given_value, expected):
    assert msisdn.validate(given_value) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0202000000",  # Nairobi landline
        "+255722000000",  # Tanzania
        "07220000001",  # too long
        "072200000",  # too short
        "25472200000",
        "0722ABCDEF",  # vanity letters
        "254722000000,254722000001",
        "+254722000000 ext. 5",
        "0722000000;",
    ],
)
def test_msisdn_rejected(bad):
    with pytest.raises(InvalidRequestError, match=r"^msisdn: must be a Kenyan mobile number"):
        msisdn.validate(bad)


def test_msisdn_wrong_type():
    with pytest.raises(InvalidRequestError, match=r"^msisdn: must be a string, not NoneType$"):
        msisdn.validate(None)


def test_validate_many_string_is_one_number_and_positions_are_named():
    assert msisdn.validate_many("0722000000") == [NUMBER]
    with pytest.raises(InvalidRequestError, match=r"^msisdns: must be a Kenyan"):
        msisdn.validate_many("0722000000,0722000001")
    with pytest.raises(InvalidRequestError, match=r"^msisdns\[2\]: must be a Kenyan .*'12345'"):
        msisdn.validate_many(["0722000000", "+254722000001", "12345"])
    with pytest.raises(InvalidRequestError, match=r"^msisdns: at least one MSISDN is required$"):
        msisdn.validate_many([])
    with pytest.raises(InvalidRequestError, match=r"^msisdns: must be a string or a list of strings, not dict$"):
        msisdn.validate_many({"a": 1})


@given(st.integers(min_value=0, max_value=99_999_999), st.sampled_from("17"))
def test_msisdn_forms_agree(rest, lead):
    national = f"{lead}{rest:08d}"
    expected = f"254{national}"
    assert msisdn.validate(f"0{national}") == expected
    assert msisdn.validate(f"+254{national}") == expected
    assert msisdn.validate(expected) == expected


def test_masked():
    assert msisdn.masked(NUMBER) == "*******0000"


# ---------------------------------------------------------------- token
def test_parse_token_string_expiry():
    assert daraja.parse_token(b'{"access_token": "abc", "expires_in": "3599"}') == ("abc", 3599.0)
    assert daraja.parse_token(b'{"access_token": "abc", "expires_in": 120}') == ("abc", 120.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", r"^Daraja token: empty response body$"),
        (b'{"access_token": "SECRETPART', r"^Daraja token: response is not JSON \(28 bytes\)$"),
        (b"<html>oops</html>", r"^Daraja token: response is not JSON \(17 bytes\)$"),
        (b'{"expires_in": "3599"}', r"^Daraja token: the answer has no access_token"),
        (
            b'{"access_token": "x", "expires_in": "soon"}',
            r"expires_in must be a positive number of seconds, got 'soon'",
        ),
        (b'{"access_token": "x", "expires_in": "0"}', r"expires_in must be a positive"),
        (b'{"access_token": "x"}', r"got None"),
        (b'["access_token"]', r"expected a JSON object, got list$"),
    ],
)
def test_parse_token_bad_bodies(body, message):
    with pytest.raises(ProtocolError, match=message) as info:
        daraja.parse_token(body)
    assert "SECRETPART" not in str(info.value)


# ---------------------------------------------------------------- dates
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("19-11-2026", pendulum.Date(2026, 11, 19)),
        ("19-11-2026 14:05", pendulum.Date(2026, 11, 19)),
        ("01-05-2022", pendulum.Date(2022, 5, 1)),
        ("1-5-2022", pendulum.Date(2022, 5, 1)),
        ("2019-01-12", pendulum.Date(2019, 1, 12)),
        ("2019-01-12 08:30:00", pendulum.Date(2019, 1, 12)),
        ("", None),
        (None, None),
    ],
)
def test_parse_date_shapes(text, expected):
    assert daraja.parse_date(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("31-02-2022", r"^Daraja date '31-02-2022' is not a real date$"),
        ("12/2022", r"is not dd-mm-yyyy\[ HH:MM\] or yyyy-mm-dd$"),
        ("2022-13-01", r"is not a real date"),
    ],
)
def test_parse_date_rejects(text, message):
    with pytest.raises(ProtocolError, match=message):
        daraja.parse_date(text)


@pytest.mark.parametrize("sentinel", ["01-01-1900", "01-01-1900 00:00", "1900-01-01"])
def test_swap_sentinel_is_none(sentinel):
    assert daraja.parse_swap_date(sentinel) is None


def test_swap_date_real_and_missing():
    assert daraja.parse_swap_date("20-08-2026 23:59") == pendulum.Date(2026, 8, 20)
    with pytest.raises(ProtocolError, match=r"^Daraja checkATI: the answer has no lastSwapDate$"):
        daraja.parse_swap_date("")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("01-03-2022", (pendulum.Date(2022, 3, 1), None)),
        ("2019-01-12", (pendulum.Date(2019, 1, 12), None)),
        (
            "MSISDN registration is more than one year old",
            (None, "MSISDN registration is more than one year old"),
        ),
        ("  Registration   is more than  1 year old ", (None, "Registration is more than 1 year old")),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_parse_registration(text, expected):
    assert daraja.parse_registration(text) == expected


# ---------------------------------------------------------------- checkATI
def _body(**overrides):
    data = {
        "requestRefID": "ref-1",
        "responseCode": "200",
        "responseDesc": "Success",
        "imsi": "9233817055099406",
        "lastSwapDate": "19-11-2026 10:11",
        "msisdnRegistrationDate": "MSISDN registration is more than one year old",
        "customerNumber": NUMBER,
    }
    data.update(overrides)
    return json.dumps(data).encode()


def test_parse_check_full():
    record = daraja.parse_check(_body(), NUMBER)
    assert record == SimSwapRecord(
        msisdn=NUMBER,
        last_swap_date=pendulum.Date(2026, 11, 19),
        registration_date=None,
        registration_note="MSISDN registration is more than one year old",
        imsi_hash="9233817055099406",
        request_ref_id="ref-1",
    )
    assert record.as_dict() == {
        "msisdn": NUMBER,
        "last_swap_date": "2026-11-19",
        "registration_date": None,
        "registration_note": "MSISDN registration is more than one year old",
        "imsi_hash": "9233817055099406",
        "request_ref_id": "ref-1",
        "error": None,
    }
    json.dumps(record.as_dict())


def test_parse_check_sentinel_and_registration_date():
    record = daraja.parse_check(_body(lastSwapDate="01-01-1900", msisdnRegistrationDate="2019-01-12"), NUMBER)
    assert record.last_swap_date is None
    assert record.registration_date == pendulum.Date(2019, 1, 12)
    assert record.registration_note is None
    assert not record.swapped_within(90, pendulum.Date(2026, 11, 22))


def test_swapped_within_edges():
    record = SimSwapRecord(msisdn=NUMBER, last_swap_date=pendulum.Date(2026, 11, 1))
    today = pendulum.Date(2026, 11, 22)
    assert record.swapped_within(21, today)
    assert not record.swapped_within(20, today)
    assert SimSwapRecord(msisdn=NUMBER, last_swap_date=pendulum.Date(2026, 11, 23)).swapped_within(1, today)


def test_parse_check_failures():
    failed = rf"^Daraja error for \*{{7}}{NUMBER[-4:]}: HTTP 200 500: Failed, requestId ref-1$"
    with pytest.raises(DarajaApiError, match=failed):
        daraja.parse_check(_body(responseCode="500", responseDesc="Failed"), NUMBER)
    with pytest.raises(ProtocolError, match=r"the answer is about \*\*\*\*\*\*\*1111$"):
        daraja.parse_check(_body(customerNumber="254722001111"), NUMBER)
    with pytest.raises(ProtocolError, match=r"^Daraja checkATI: response is not JSON: '<html><body>Gateway"):
        daraja.parse_check(b"<html><body>Gateway error</body></html>", NUMBER)
    with pytest.raises(ProtocolError, match=r"^Daraja checkATI: empty response body$"):
        daraja.parse_check(b"  ", NUMBER)
    with pytest.raises(DarajaApiError) as info:
        daraja.parse_check(
            b'{"requestId": "r", "errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}', NUMBER
        )
    assert info.value.error_code == "404.001.03"


# ---------------------------------------------------------------- errors
def test_parse_error_json():
    error = daraja.parse_error(
        b'{"requestId": "abc", "errorCode": "404.001.01", "errorMessage": "Resource not found"}', 404
    )
    assert (error.status, error.error_code, error.error_message, error.request_id) == (
        404,
        "404.001.01",
        "Resource not found",
        "abc",
    )
    assert str(error) == "Daraja error HTTP 404 404.001.01: Resource not found, requestId abc"


def test_parse_error_non_json():
    assert str(daraja.parse_error(b"", 400)) == "Daraja error HTTP 400 -: empty body"
    error = daraja.parse_error(b"<html>\n<h1>403 Forbidden</h1></html>", 403)
    assert error.error_code is None
    assert str(error) == "Daraja error HTTP 403 -: non-JSON body '<html> <h1>403 Forbidden</h1></html>'"
