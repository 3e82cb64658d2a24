r"""
GSM 7-bit default alphabet (3GPP TS 23.038) rules for SIM Insight's Send SMS.

Counting and validation use the ``gsm0338`` codec, so they agree with a real encoder by construction:
each character of the extension table (form feed ^ { } \ [ ~ ] | €) encodes as escape + code, two
septets. The codec maps code point 0x09 to ``Ç`` (as TS 23.038 draws it), so ``Ç`` passes and ``ç``
does not. XML 1.0 cannot carry form feed or ESC at all, so they are rejected even though the alphabet
has them.

Examples:

>>> from airflow_provider_m2m.protocol import gsm7
>>> gsm7.septets("Engine check at 06:00")
21
>>> gsm7.septets("[ok] 5 €")  # [ ] and € are extension characters: two septets each
11
>>> gsm7.validate("Çava")
'Çava'
>>> gsm7.validate("ça va")
Traceback (most recent call last):
    ...
airflow_provider_m2m.exceptions.InvalidRequestError: message_text: character 'ç' (U+00E7) at position 0 is not in the GSM 7-bit ...
>>> gsm7.validate("x" * 161)
Traceback (most recent call last):
    ...
airflow_provider_m2m.exceptions.InvalidRequestError: message_text: 161 septets is over the 160-septet limit of one SMS ...
>>> gsm7.validate("page\x0cbreak")
Traceback (most recent call last):
    ...
airflow_provider_m2m.exceptions.InvalidRequestError: message_text: form feed at position 4 cannot be carried in XML 1.0
"""  # noqa: E501  (doctest lines show whole error messages)

from __future__ import annotations

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

from airflow_provider_m2m.exceptions import InvalidRequestError

CODEC = "gsm03.38"
MAX_SEPTETS = 160
_NOT_IN_XML = {"\x0c": "form feed", "\x1b": "ESC"}


def septets(text: str) -> int:
    """Number of septets ``text`` takes in the GSM 7-bit default alphabet (extension characters count 2)."""
    return len(text.encode(CODEC))


def validate(text: object, *, field: str = "message_text", max_septets: int = MAX_SEPTETS) -> str:
    """
    Return ``text`` if SIM Insight can send it as one default-coded SMS, else raise.

    :param text: the message text.
    :param field: the field name to report in errors.
    :param max_septets: the limit (160 for one SMS).
    """
    if not isinstance(text, str):
        raise InvalidRequestError(field, f"must be a string, not {type(text).__name__}")
    if not text:
        raise InvalidRequestError(field, "must not be empty")
    for position, char in enumerate(text):
        if char in _NOT_IN_XML:
            raise InvalidRequestError(field, f"{_NOT_IN_XML[char]} at position {position} cannot be carried in XML 1.0")
    try:
        count = septets(text)
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        raise InvalidRequestError(
            field,
            f"character {char!r} (U+{ord(char):04X}) at position {exc.start} is not in the GSM 7-bit default alphabet",
        ) from None
    if count > max_septets:
        raise InvalidRequestError(
            field,
            f"{count} septets is over the {max_septets}-septet limit of one SMS "
            "(characters of the GSM extension table ^ { } \\ [ ~ ] | \u20ac count as two)",
        )
    return text
