"""
ICCID: the SIM card number (ITU-T E.118), 18 to 22 digits.

SIM Insight's own documentation example fails a Luhn check, and some platforms strip the check digit,
so the Luhn check is optional and off by default.
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


def validate_many(values: object, *, field: str = "iccids") -> list[str]:
    """Validate one ICCID (a plain string, never split on commas) or a list of them; errors name the position."""
    return validate_each(values, validate, field, "ICCID")
