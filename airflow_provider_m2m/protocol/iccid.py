"""
ICCID: the SIM card number (ITU-T E.118), 18 to 22 digits.

SIM Insight's own documentation example fails a Luhn check, and some platforms strip the check digit,
so the Luhn check is optional and off by default.

Examples (SIM Insight's documentation example ICCID, then one of the sandbox fleet's):

>>> from airflow_provider_m2m.protocol import iccid
>>> iccid.validate("1234567890123456789")
'1234567890123456789'
>>> iccid.validate("8925 4010-0000 0000 01")  # compacted: spaces and dashes between groups go
'892540100000000001'
>>> iccid.validate("1234567890123456789", check_luhn=True)
Traceback (most recent call last):
    ...
airflow_provider_m2m.exceptions.InvalidRequestError: iccid: the Luhn check digit is wrong (got '1234567890123456789')
>>> iccid.validate("8925401")
Traceback (most recent call last):
    ...
airflow_provider_m2m.exceptions.InvalidRequestError: iccid: an ICCID has 18 to 22 digits, this one has 7 (got '8925401')
>>> iccid.validate_many(["892540100000000001", "89254O1000000000001"])  # a letter O among the digits
Traceback (most recent call last):
    ...
airflow_provider_m2m.exceptions.InvalidRequestError: iccids[1]: an ICCID has digits only (got '89254O1000000000001')
"""

from __future__ import annotations

from stdnum import luhn

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.protocol.values import as_text, shown, validate_each

MIN_LENGTH = 18
MAX_LENGTH = 22


def validate(value: object, *, check_luhn: bool = False, field: str = "iccid") -> str:
    """
    Return the compact ICCID, or raise :class:`InvalidRequestError` naming ``field`` and the rule.

    :param value: the ICCID as given by the user.
    :param check_luhn: also require a valid Luhn check digit.
    :param field: the field name to report in errors.
    """
    if (
        type(value) is str
        and not check_luhn
        and MIN_LENGTH <= len(value) <= MAX_LENGTH
        and value.isdigit()
        and value.isascii()
    ):
        return value  # already compact and valid, as nearly every one of a batch's 250,000 is
    # People copy ICCIDs from cards and portals with spaces or dashes between groups.
    number = as_text(value, field).replace(" ", "").replace("-", "")
    if not number.isdigit() or not number.isascii():
        raise InvalidRequestError(field, "an ICCID has digits only", shown(number))
    if not MIN_LENGTH <= len(number) <= MAX_LENGTH:
        raise InvalidRequestError(
            field, f"an ICCID has {MIN_LENGTH} to {MAX_LENGTH} digits, this one has {len(number)}", shown(number)
        )
    if check_luhn and not luhn.is_valid(number):
        raise InvalidRequestError(field, "the Luhn check digit is wrong", shown(number))
    return number


def validate_many(values: object, *, field: str = "iccids", allow_empty: bool = False) -> list[str]:
    """ICCIDs as :func:`~airflow_provider_m2m.protocol.values.validate_each` reads them; errors name the position."""
    return validate_each(values, validate, field, "ICCID", allow_empty=allow_empty)
