"""Suite 6, property-based: GSM-7 septet counting, IMEISV -> IMEI, and byte-for-byte SMS round trips."""

from __future__ import annotations

import gsm0338  # noqa: F401
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import luhn

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.protocol import gsm7, imei

# The alphabet, taken from the codec itself: the 128 basic code points and the escape-table characters.
BASIC = {c for c in (bytes([i]).decode("gsm03.38") for i in range(128)) if len(c) == 1} - {"\x1b"}
EXTENSION = set()
for i in range(128):
    try:
        char = bytes([0x1B, i]).decode("gsm03.38")
    except UnicodeDecodeError:
        continue
    if len(char) == 1 and char not in BASIC:
        EXTENSION.add(char)
SENDABLE = sorted((BASIC | EXTENSION) - {"\x0c", "\x1b"})
COUNTS = {"septets": 0, "imei": 0, "roundtrip": 0}

mixed_text = st.text(
    alphabet=st.one_of(st.sampled_from(sorted(BASIC | EXTENSION)), st.characters(codec="utf-8")), max_size=200
)


def reference_septets(text: str) -> int | None:
    """Septets by table lookup, independent of the codec's encoder; None when a character is not GSM-7."""
    total = 0
    for char in text:
        if char in BASIC or char == "\x1b":  # a lone ESC encodes as one septet (unsendable in XML, see below)
            total += 1
        elif char in EXTENSION:
            total += 2
        else:
            return None
    return total


@settings(max_examples=300, deadline=None)
@given(mixed_text)
def test_septets_agree_with_the_codec(text):
    COUNTS["septets"] += 1
    expected = reference_septets(text)
    try:
        encoded = text.encode("gsm03.38")
    except UnicodeEncodeError:
        encoded = None
    assert (encoded is None) == (expected is None)
    if expected is None:
        with pytest.raises(InvalidRequestError):
            gsm7.validate(text)
        return
    assert gsm7.septets(text) == len(encoded) == expected
    sendable = text and "\x0c" not in text and "\x1b" not in text and expected <= 160
    if sendable:
        assert gsm7.validate(text) == text
    else:
        with pytest.raises(InvalidRequestError):
            gsm7.validate(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=16, max_size=16))
def test_imeisv_to_imei_is_luhn_valid(imeisv):
    COUNTS["imei"] += 1
    result = imei.normalize(imeisv)
    assert len(result) == 15 and result.isdigit()
    assert result[:14] == imeisv[:14]
    assert luhn.is_valid(result)


gsm_message = st.text(alphabet=st.sampled_from(SENDABLE), min_size=1, max_size=160).filter(
    lambda t: gsm7.septets(t) <= 160
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=gsm_message)
def test_gsm7_message_round_trips_byte_for_byte(sb, text):
    COUNTS["roundtrip"] += 1
    iccid = sb.fleet.iccids[0]
    receipt = M2mHook().send_sms(iccid, text)
    received = [e for e in sb.received("send_sms") if e["sms_uid"] == receipt.sms_uid]
    assert len(received) == 1
    assert received[0]["message_text"].encode("gsm03.38") == text.encode("gsm03.38")
    assert received[0]["message_text"] == text


def test_zz_property_counts():
    print(
        f"\n[properties] septet counting vs codec: {COUNTS['septets']} texts; IMEISV->IMEI Luhn-valid: "
        f"{COUNTS['imei']} values; GSM-7 round trips through the sandbox byte for byte: {COUNTS['roundtrip']} "
        f"messages (alphabet: {len(BASIC)} basic + {len(EXTENSION)} extension characters); all held"
    )
