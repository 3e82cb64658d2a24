"""ICCID validation and IMEI normalisation (pure code, no Airflow)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum import luhn

from airflow_provider_m2m.exceptions import InvalidRequestError, ProtocolError
from airflow_provider_m2m.protocol import iccid, imei

DOC_ICCID = "8944538523012345678"  # shaped like the documentation's example: 19 digits, bad Luhn


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        ("892540100000000001", "892540100000000001"),  # 18 digits
        ("8925401000000000012345", "8925401000000000012345"),  # 22 digits
        ("  8925 4010 0000 0000 012 ", "8925401000000000012"),
        ("8925-4010-0000-0000-012", "8925401000000000012"),
        (8925401000000000012, "8925401000000000012"),
    ],
)
def test_iccid_valid_forms_are_compacted(given_value, expected):
    assert iccid.validate(given_value) == expected


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("89254010000000001", r"^iccid: an ICCID has 18 to 22 digits, this one has 17 \(got '89254010000000001'\)$"),
        ("89254010000000000123456", r"^iccid: an ICCID has 18 to 22 digits, this one has 23"),
        ("8925401000000000O12", r"^iccid: an ICCID has digits only"),
        (
            "\u0668925401000000000012",
            r"^iccid: an ICCID has digits only",
        ),  # Arabic-Indic digit: isdigit() but not ASCII
        ("", r"^iccid: an ICCID has digits only"),
        (None, r"^iccid: must be a string, not NoneType$"),
        (True, r"^iccid: must be a string, not bool$"),
        (["8925401000000000012"], r"^iccid: must be a string, not list$"),
    ],
)
def test_iccid_invalid_raises_naming_the_field(bad, match):
    with pytest.raises(InvalidRequestError, match=match) as info:
        iccid.validate(bad)
    assert info.value.field == "iccid"
    assert isinstance(info.value, ValueError)


def test_iccid_luhn_is_optional_and_off_by_default():
    assert not luhn.is_valid(DOC_ICCID)
    assert iccid.validate(DOC_ICCID) == DOC_ICCID
    with pytest.raises(InvalidRequestError, match=r"^iccid: the Luhn check digit is wrong"):
        iccid.validate(DOC_ICCID, check_luhn=True)
    good = "8925401000000000" + "01"
    good = good[:-1] + luhn.calc_check_digit(good[:-1])
    assert iccid.validate(good, check_luhn=True) == good


def test_iccid_long_value_is_shortened_in_the_message():
    with pytest.raises(InvalidRequestError) as info:
        iccid.validate("1" * 100)
    assert "1" * 41 not in str(info.value)
    assert "..." in str(info.value)


def test_validate_many_string_is_one_iccid_never_split():
    assert iccid.validate_many("8925401000000000012") == ["8925401000000000012"]
    with pytest.raises(InvalidRequestError, match=r"^iccids: an ICCID has digits only"):
        iccid.validate_many("8925401000000000012,8925401000000000013")


def test_validate_many_list_names_the_position():
    assert iccid.validate_many(("8925401000000000012", "892540100000000001")) == [
        "8925401000000000012",
        "892540100000000001",
    ]
    with pytest.raises(InvalidRequestError, match=r"^iccids\[1\]: an ICCID has 18 to 22 digits") as info:
        iccid.validate_many(["8925401000000000012", "123"])
    assert info.value.field == "iccids[1]"


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([], r"^iccids: at least one ICCID is required$"),
        (42, r"^iccids: must be a string or a list of strings, not int$"),
    ],
)
def test_validate_many_rejects_empty_and_wrong_types(bad, match):
    with pytest.raises(InvalidRequestError, match=match):
        iccid.validate_many(bad)


# ---------------------------------------------------------------------------------------------- IMEI
@pytest.mark.parametrize("empty", [None, "", "   "])
def test_imei_empty_means_unknown(empty):
    assert imei.normalize(empty) is None


def test_imei_15_digits_kept_even_with_a_bad_check_digit():
    assert imei.normalize("359827041234567") == "359827041234567"
    assert imei.normalize(" 359827041234560 ") == "359827041234560"


def test_imeisv_becomes_14_digits_plus_luhn():
    body = "35982704123456"
    assert imei.normalize(body + "07") == body + luhn.calc_check_digit(body)
    assert imei.normalize("3598270412345607") == "359827041234561"  # Luhn sum of the 14 digits is 59


@pytest.mark.parametrize("bad", ["35982704", "35982704123456789", "35982704123456x", "３５９８２７０４１２３４５６７"])
def test_imei_malformed_raises_protocol_error(bad):
    with pytest.raises(ProtocolError, match=r"^malformed IMEI from the platform"):
        imei.normalize(bad)


@given(st.text(alphabet="0123456789", min_size=16, max_size=16))
def test_imeisv_to_imei_is_always_15_luhn_valid_digits(imeisv):
    result = imei.normalize(imeisv)
    assert len(result) == 15
    assert result.isdigit()
    assert result[:14] == imeisv[:14]
    assert luhn.is_valid(result)


# ---------------------------------------------------------------------------------------------- list arguments
def test_list_arguments_take_any_iterable_but_never_a_mapping_or_bytes():
    a, b = "8925401000000000012", "8925401000000000013"
    assert iccid.validate_many(n for n in (a, b)) == [a, b]
    assert sorted(iccid.validate_many({a, b})) == [a, b]
    with pytest.raises(InvalidRequestError, match=r"^iccids: must be a string or a list of strings, not dict$"):
        iccid.validate_many({a: 1})
    with pytest.raises(InvalidRequestError, match=r"^iccids: must be a string or a list of strings, not bytes$"):
        iccid.validate_many(a.encode())


def test_a_rendered_list_keeps_each_items_position_in_errors():
    with pytest.raises(InvalidRequestError, match=r"^iccids\[1\]: an ICCID has 18 to 22 digits") as info:
        iccid.validate_many("['8925401000000000012', '123']")
    assert info.value.field == "iccids[1]"
