"""
MSISDN: a Kenyan mobile number as Daraja wants it, 12 digits ``254`` + ``1`` or ``7`` + 8 digits.

Users write numbers in the local form (``0722000000``), the international form (``+254722000000``) or
Daraja's own form (``254722000000``), often with spaces or dashes; all become ``254722000000``.
phonenumbers (region KE) does the parsing. Its validity metadata is not used: Safaricom opens new
ranges (``011x``, ...) faster than the metadata follows, so any ``254[17]`` number of the right length
is accepted.

Examples (``254722000000`` is the Daraja documentation's own example, and the sandbox answers it):

>>> from airflow_provider_m2m.protocol import msisdn
>>> msisdn.validate("0722 000 000")
'254722000000'
>>> msisdn.validate("+254722000000")
'254722000000'
>>> msisdn.validate("0110000000")
'254110000000'
>>> msisdn.masked("254722000000")
'*******0000'
>>> msisdn.validate("0622000000")
Traceback (most recent call last):
    ...
airflow_provider_m2m.exceptions.InvalidRequestError: msisdn: must be a Kenyan mobile number: 07XXXXXXXX, 01XXXXXXXX, ... (got '0622000000')
"""  # noqa: E501  (doctest lines show whole error messages)

from __future__ import annotations

import re

import phonenumbers

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.protocol.values import as_text, shown, validate_each

COUNTRY_CODE = 254
_NATIONAL = re.compile(r"[17][0-9]{8}")
# What people type around the digits; letters (vanity numbers) and anything else are refused.
_ALLOWED = re.compile(r"\+?[0-9 ()./-]+")
RULE = "a Kenyan mobile number: 07XXXXXXXX, 01XXXXXXXX, +2547XXXXXXXX or 2547XXXXXXXX"


def validate(value: object, field: str = "msisdn") -> str:
    """
    Return the 12-digit MSISDN (``2547XXXXXXXX`` / ``2541XXXXXXXX``) or raise :class:`InvalidRequestError`.

    :param value: the number as given by the user.
    :param field: the field name to report in errors.
    """
    text = as_text(value, field)
    if not text or not _ALLOWED.fullmatch(text):
        raise InvalidRequestError(field, f"must be {RULE}", shown(text))
    compact = re.sub(r"[ ()./-]", "", text)
    if compact.startswith(str(COUNTRY_CODE)) and len(compact) == 12:
        compact = "+" + compact  # Daraja's own form: without "+", phonenumbers would read it as national
    try:
        number = phonenumbers.parse(compact, "KE")
    except phonenumbers.NumberParseException:
        raise InvalidRequestError(field, f"must be {RULE}", shown(text)) from None
    national = str(number.national_number)
    if number.country_code != COUNTRY_CODE or not _NATIONAL.fullmatch(national) or number.extension:
        raise InvalidRequestError(field, f"must be {RULE}", shown(text))
    return f"{COUNTRY_CODE}{national}"


def validate_many(values: object, field: str = "msisdns", *, allow_empty: bool = False) -> list[str]:
    """MSISDNs as :func:`~airflow_provider_m2m.protocol.values.validate_each` reads them; errors name the position."""
    return validate_each(values, validate, field, "MSISDN", allow_empty=allow_empty)


def masked(msisdn: str) -> str:
    """The number with all but its last 4 digits hidden, e.g. ``*******0000``."""
    return "*******" + msisdn[-4:]
