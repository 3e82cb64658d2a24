"""A response body shown in an error message: short, one line, and with every secret blanked."""

from __future__ import annotations

from collections.abc import Iterable


def excerpt(body: bytes, secrets: Iterable[str] = (), limit: int = 120) -> str:
    """A short, single-line excerpt of a response body for error messages, with ``secrets`` blanked."""
    text = body[: limit * 4].decode("utf-8", "replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
