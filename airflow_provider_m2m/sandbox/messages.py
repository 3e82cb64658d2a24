"""What a platform side of the sandbox receives (:class:`Request`) and answers (:class:`Reply`)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

XML_CT = "application/xml"
JSON_CT = "application/json"


@dataclass(slots=True)
class Request:
    """
    One HTTP request as the sandbox read it.

    :param method: ``GET``, ``POST``...
    :param path: the path without the query string.
    :param query: the raw query string (without ``?``).
    :param headers: the request headers (case-insensitive mapping).
    :param body: the request body, de-chunked.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str] | Message  # http.server's headers are an email Message
    body: bytes

    def query_value(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        return urllib.parse.parse_qs(self.query).get(name, [None])[0]


class Reply:
    """
    A response to write, or a connection to drop without answering.

    :param status: HTTP status.
    :param body: response body.
    :param ctype: ``Content-Type``.
    :param headers: extra ``(name, value)`` headers.
    :param drop: close the connection instead of answering.
    """

    __slots__ = ("body", "ctype", "drop", "headers", "status")

    def __init__(self, status=200, body=b"", ctype=XML_CT, headers=(), drop=False):
        self.status, self.body, self.ctype, self.headers, self.drop = status, body, ctype, headers, drop


def json_reply(status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON answer."""
    return Reply(status, json.dumps(obj).encode(), JSON_CT, headers)
