"""
IMEI as reported by the network: 15 digits (TAC 8 + serial 6 + Luhn check digit).

A 16-digit IMEISV (TAC + serial + 2-digit software version, no check digit) becomes the 15-digit IMEI:
the first 14 digits plus their Luhn check digit (3GPP TS 23.003 annex B). A 15-digit value is kept as
it is, even with a bad check digit: networks may report a spare 0 there (TS 22.016), so rejecting it
would be a false alarm.

Examples (the TAC ``35982704`` is from the SIM Insight documentation):

>>> from airflow_provider_m2m.protocol import imei
>>> imei.normalize("359827041234569")  # 15 digits: kept as reported
'359827041234569'
>>> imei.normalize("3598270412345612")  # a 16-digit IMEISV: 14 digits + their Luhn check digit
'359827041234561'
>>> imei.normalize("") is None  # an empty element means unknown
True
>>> imei.normalize("35982704123")
Traceback (most recent call last):
    ...
airflow_provider_m2m.exceptions.ProtocolError: malformed IMEI from the platform: 11 digits
"""

from __future__ import annotations

from stdnum import luhn

from airflow_provider_m2m.exceptions import ProtocolError


def normalize(value: str | None) -> str | None:
    """Return the 15-digit IMEI for a network-reported IMEI or IMEISV; None when unknown (empty)."""
    if value is None:
        return None
    number = value.strip()
    if not number:
        return None
    if not (number.isdigit() and number.isascii()):
        raise ProtocolError(f"malformed IMEI from the platform: {number[:20]!r}")
    if len(number) == 15:
        return number
    if len(number) in (14, 16):
        body = number[:14]
        return body + luhn.calc_check_digit(body)
    raise ProtocolError(f"malformed IMEI from the platform: {len(number)} digits")
