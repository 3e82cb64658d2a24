"""What every identifier validator shares: a templated value as text, a list of values, an offending value shown."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterable, Mapping

from airflow_provider_m2m.exceptions import InvalidRequestError


def as_text(value: object, field: str) -> str:
    """Return ``value`` as a stripped string, or raise if it is not a string (or an int for numbers)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidRequestError(field, f"must be a string, not {type(value).__name__}")
    return str(value).strip()


def shown(value: str, limit: int = 40) -> str:
    """A short, printable rendering of an offending value for error messages."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)


def read_literal(text: str) -> object:
    """
    A value from the text Jinja renders of it: JSON, or a Python literal (``str()`` of a list, with
    single quotes and ``None``), read with :func:`json.loads` / :func:`ast.literal_eval`, never ``eval``.

    :raises ValueError: the text is neither.
    """
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("neither JSON nor a Python literal") from None


#: What to do when a list argument arrives as text that is not a list (the rule of :func:`validate_each`).
LIST_HINT = (
    "pass the list itself or an XComArg, or render templates as Python objects "
    "(render_template_as_native_obj=True on the DAG)"
)


def validate_each(
    values: object, validate: Callable[..., str], field: str, noun: str, *, allow_empty: bool = False
) -> list[str]:
    """
    The one reading of a list-of-identifiers argument (``iccids``, ``msisdns``) by hooks and operators.

    Accepted: one identifier as a plain string (never split on commas: ``"8925...,8925..."`` is one bad
    identifier); a list, tuple or any other iterable of them (a generator, a set, Airflow's lazy XCom
    sequence); and the text a Jinja template makes of a list, ``"['8925...', '8925...']"`` or JSON, read
    back as that list (:func:`read_literal`). Text that opens like a list but is not a list of strings is
    refused with what to do instead (:data:`LIST_HINT`).

    :param values: the user's value.
    :param validate: the one-identifier validator; called with ``field=`` naming the item's position.
    :param field: the field name to report in errors, e.g. ``iccids``.
    :param noun: what one item is, e.g. ``ICCID``.
    :param allow_empty: an empty list is no error (a hook's batch of nothing); operators that need at
        least one item leave it False.
    """
    if isinstance(values, str):
        if not values.lstrip().startswith(("[", "(")):
            return [validate(values, field=field)]
        values = _listed(values, field)
    elif isinstance(values, (bytes, bytearray, Mapping)) or not isinstance(values, Iterable):
        raise InvalidRequestError(field, f"must be a string or a list of strings, not {type(values).__name__}")
    items = list(values)
    if not items and not allow_empty:
        raise InvalidRequestError(field, f"at least one {noun} is required")
    checked = []
    for i, value in enumerate(items):
        try:
            checked.append(validate(value, field=field))
        except InvalidRequestError:  # named by its position only now: a batch holds up to 250,000
            validate(value, field=f"{field}[{i}]")  # the same rule, raised again naming the position
            raise
    return checked


def _listed(text: str, field: str) -> list[object]:
    try:
        value = read_literal(text)
    except ValueError:
        value = None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int)) for v in value):
        raise InvalidRequestError(field, f"this text is not a list of strings: {LIST_HINT}", shown(text))
    return list(value)
