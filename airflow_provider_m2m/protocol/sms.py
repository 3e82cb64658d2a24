"""
Send SMS fields other than the text: ``data_coding``, binary payloads, ``sms_uid`` and ``origin``.

``sms_uid`` is the caller's id for a message (at most 12 ASCII letters and digits) and must be unique per
message; :func:`make_uid` derives one per SIM from the run, so a retry of the same run reuses the same
uid and the platform's SMS history can tell whether an earlier attempt went through.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import string

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.protocol import gsm7
from airflow_provider_m2m.protocol.values import as_text, shown

DATA_CODINGS = ("default", "binary")
MAX_BINARY_BYTES = 120
MAX_UID_LENGTH = 12
_UID_ALPHABET = string.digits + string.ascii_letters


def validate_data_coding(value: object) -> str:
    """Return ``default`` or ``binary``; raise otherwise."""
    coding = as_text(value, "data_coding")
    if coding not in DATA_CODINGS:
        raise InvalidRequestError("data_coding", "must be 'default' or 'binary'", shown(coding))
    return coding


def validate_message(text: object, data_coding: str) -> str:
    """
    Validate the message text for its data coding.

    :param text: the message text (GSM-7 text for ``default``, base64 for ``binary``).
    :param data_coding: a value already checked by :func:`validate_data_coding`.
    """
    if data_coding == "default":
        return gsm7.validate(text)
    if not isinstance(text, str):
        raise InvalidRequestError("message_text", f"must be a string, not {type(text).__name__}")
    try:
        payload = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidRequestError(
            "message_text", "binary data_coding needs strict base64 text (A-Z a-z 0-9 + / and = padding)"
        ) from None
    if not payload:
        raise InvalidRequestError("message_text", "binary payload must not be empty")
    if len(payload) > MAX_BINARY_BYTES:
        raise InvalidRequestError(
            "message_text", f"binary payload is {len(payload)} bytes, over the {MAX_BINARY_BYTES}-byte limit"
        )
    return text


def validate_uid(value: object) -> str:
    """Return a valid ``sms_uid``: 1 to 12 ASCII letters and digits."""
    uid = as_text(value, "sms_uid")
    if not (1 <= len(uid) <= MAX_UID_LENGTH and uid.isascii() and uid.isalnum()):
        raise InvalidRequestError("sms_uid", "must be 1 to 12 ASCII letters and digits", shown(uid))
    return uid


def validate_origin(value: object) -> str:
    """Return a valid ``origin``: the sender number, digits only."""
    origin = as_text(value, "origin").removeprefix("+")
    if not (origin.isascii() and origin.isdigit()) or len(origin) > 15:
        raise InvalidRequestError("origin", "must be a number of 1 to 15 digits", shown(origin))
    return origin


def make_uid(*parts: object) -> str:
    """A 12-character base-62 uid derived from ``parts`` (stable for the same parts)."""
    number = int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=9).digest())
    chars = []
    for _ in range(MAX_UID_LENGTH):
        number, digit = divmod(number, 62)
        chars.append(_UID_ALPHABET[digit])
    return "".join(chars)


def random_uid() -> str:
    """A random 12-character base-62 uid."""
    return "".join(secrets.choice(_UID_ALPHABET) for _ in range(MAX_UID_LENGTH))
