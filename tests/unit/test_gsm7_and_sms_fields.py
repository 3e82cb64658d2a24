"""GSM 7-bit rules for the message text, and the other Send SMS fields (pure code, no Airflow)."""

from __future__ import annotations

import base64
import string

import gsm0338  # noqa: F401  (registers the codec)
import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.protocol import gsm7, sms

BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION = "^{}\\[~]|€"


def test_alphabet_sanity():
    assert len(BASIC) == 127  # 128 code points minus ESC
    assert len(BASIC.encode("gsm03.38")) == 127
    for char in EXTENSION:
        assert len(char.encode("gsm03.38")) == 2


@given(st.text(alphabet=BASIC + EXTENSION, max_size=200))
def test_septet_count_equals_the_codec(text):
    assert gsm7.septets(text) == len(text.encode("gsm03.38"))


@given(st.text(alphabet=BASIC + EXTENSION, min_size=1, max_size=200))
def test_validate_accepts_exactly_what_fits_in_160_septets(text):
    if len(text.encode("gsm03.38")) <= 160:
        assert gsm7.validate(text) == text
    else:
        with pytest.raises(InvalidRequestError, match=r"^message_text: \d+ septets is over the 160-septet limit"):
            gsm7.validate(text)


def test_160_basic_characters_pass_161_fail():
    assert gsm7.validate("a" * 160) == "a" * 160
    with pytest.raises(InvalidRequestError, match=r"^message_text: 161 septets is over the 160-septet limit") as info:
        gsm7.validate("a" * 161)
    assert info.value.field == "message_text"


def test_extension_characters_count_two():
    assert gsm7.septets("€" * 80) == 160
    assert gsm7.validate("€" * 80) == "€" * 80
    with pytest.raises(InvalidRequestError, match=r"^message_text: 161 septets"):
        gsm7.validate("a" + "{" * 80)
    assert gsm7.septets("a^b") == 4


def test_codepoint_0x09_follows_the_codec():
    assert gsm7.validate("Ça va") == "Ça va"
    with pytest.raises(InvalidRequestError, match=r"character 'ç' \(U\+00E7\) at position 0 is not in the GSM"):
        gsm7.validate("ça va")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "héllo á",
            r"^message_text: character 'á' \(U\+00E1\) at position 6 is not in the GSM 7-bit default alphabet$",
        ),
        ("ok 😀", r"^message_text: character '😀' \(U\+1F600\) at position 3"),
        ("tab\there", r"^message_text: character '\\t' \(U\+0009\) at position 3"),
        ("page\x0cbreak", r"^message_text: form feed at position 4 cannot be carried in XML 1.0$"),
        ("esc\x1b", r"^message_text: ESC at position 3 cannot be carried in XML 1.0$"),
        ("", r"^message_text: must not be empty$"),
        (None, r"^message_text: must be a string, not NoneType$"),
        (42, r"^message_text: must be a string, not int$"),
    ],
)
def test_invalid_text_is_rejected_naming_the_field(text, match):
    with pytest.raises(InvalidRequestError, match=match) as info:
        gsm7.validate(text)
    assert info.value.field == "message_text"


def test_carriage_return_and_newline_are_allowed():
    assert gsm7.validate("line1\r\nline2") == "line1\r\nline2"


# ---------------------------------------------------------------------------------------------- data_coding
@pytest.mark.parametrize("coding", ["default", "binary", " binary "])
def test_data_coding_valid(coding):
    assert sms.validate_data_coding(coding) == coding.strip()


@pytest.mark.parametrize("coding", ["Default", "text", "", "ucs2"])
def test_data_coding_invalid(coding):
    with pytest.raises(InvalidRequestError, match=r"^data_coding: must be 'default' or 'binary'") as info:
        sms.validate_data_coding(coding)
    assert info.value.field == "data_coding"


def test_validate_message_dispatches_on_coding():
    assert sms.validate_message("hi", "default") == "hi"
    with pytest.raises(InvalidRequestError, match=r"^message_text: character 'á'"):
        sms.validate_message("á!", "default")


def test_binary_payload_strict_base64_and_at_most_120_bytes():
    ok = base64.b64encode(bytes(range(120))).decode()
    assert sms.validate_message(ok, "binary") == ok
    too_big = base64.b64encode(bytes(121)).decode()
    with pytest.raises(
        InvalidRequestError, match=r"^message_text: binary payload is 121 bytes, over the 120-byte limit$"
    ):
        sms.validate_message(too_big, "binary")
    for bad in ("not base64!", "QUJD\n", "QUJ", "QUJD-_==", "ü"):
        with pytest.raises(InvalidRequestError, match=r"^message_text: binary data_coding needs strict base64"):
            sms.validate_message(bad, "binary")
    with pytest.raises(InvalidRequestError, match=r"^message_text: binary payload must not be empty$"):
        sms.validate_message("", "binary")
    with pytest.raises(InvalidRequestError, match=r"^message_text: must be a string, not bytes$"):
        sms.validate_message(b"QUJD", "binary")


# ---------------------------------------------------------------------------------------------- sms_uid / origin
@pytest.mark.parametrize("uid", ["a", "ABCdef123456", " abc123 "])
def test_uid_valid(uid):
    assert sms.validate_uid(uid) == uid.strip()


@pytest.mark.parametrize("uid", ["", "ABCdef1234567", "abc-123", "ab c", "üb"])
def test_uid_invalid(uid):
    with pytest.raises(InvalidRequestError, match=r"^sms_uid: must be 1 to 12 ASCII letters and digits") as info:
        sms.validate_uid(uid)
    assert info.value.field == "sms_uid"


@pytest.mark.parametrize(
    ("origin", "expected"), [("254700000000", "254700000000"), ("+254700000000", "254700000000"), (12345, "12345")]
)
def test_origin_valid(origin, expected):
    assert sms.validate_origin(origin) == expected


@pytest.mark.parametrize("origin", ["", "abc", "1234567890123456", "+", "25 47", "٣"])
def test_origin_invalid(origin):
    with pytest.raises(InvalidRequestError, match=r"^origin: must be a number of 1 to 15 digits"):
        sms.validate_origin(origin)


def test_make_uid_is_stable_valid_and_distinct():
    a = sms.make_uid("dag", "run", "task", -1, "8925401000000000012")
    assert a == sms.make_uid("dag", "run", "task", -1, "8925401000000000012")
    assert len(a) == 12 and a.isascii() and a.isalnum()
    assert sms.validate_uid(a) == a
    others = {sms.make_uid("dag", "run", "task", -1, f"89254010000000000{i:02d}") for i in range(200)}
    assert len(others) == 200
    assert sms.make_uid("dag", "run2", "task", -1, "8925401000000000012") != a


def test_random_uid_is_valid():
    uids = {sms.random_uid() for _ in range(100)}
    assert len(uids) == 100
    assert all(len(u) == 12 and set(u) <= set(string.ascii_letters + string.digits) for u in uids)
