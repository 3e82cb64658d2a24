"""
The sandbox's push side: POST SIM Insight push payloads to a receiver the way the platform does.

Configured with the receiver's URL and passphrase. Each item is retried after the documented delays (5 s, 10 s,
30 s, 1 min, 2 min, 5 min, then every 15 min) multiplied by ``retry_scale`` (tests shorten them), until a 2xx
answer; a 4xx answer ends the item too (the receiver refused it for good: it is counted as refused).
``duplicate_ratio`` sends that share of items a second time, as the platform does when our answer is lost.
:func:`item` builds the on-command items (an MO message or a usage alert of a fleet SIM) the control call ``push``
sends; the receipts of settled messages come from :meth:`Pusher.push_receipt`.
Like the rest of the sandbox it imports nothing from the provider: the payloads are built here with lxml.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from lxml import etree

# The platform's documented retry schedule, in seconds; the last delay repeats.
RETRY_DELAYS = (5, 10, 30, 60, 120, 300, 900)
USER_AGENT = "CSL SIM Insight/1.0.0"
# The pushed items' api_did, unique in this process (its meaning is undocumented; receivers must not rely on it).
_API_DIDS = itertools.count(int(time.time()) % 10**9)
#: What the control call ``push`` sends: kind -> the fields it takes (besides ``iccid``).
ITEM_KINDS = {"mo_sms": ("text",), "warning": ("level_mb",), "cut_off": ("level_mb",)}


def next_api_did() -> int:
    """A new ``api_did`` for an item."""
    return next(_API_DIDS)


def mo_sms(api_did: int, iccid: str, msisdn: str, text: str, when: str) -> bytes:
    """A ``post_sms`` body (``when`` as dd/mm/yyyy hh:mm:ss); the passphrase is added on sending."""
    return _payload("post_sms", api_did, iccid=iccid, msisdn=msisdn, timestamp=when, message_text=text)


def delivery_receipt(api_did: int, iccid: str, msisdn: str, sms_uid: str, status: str, when: str) -> bytes:
    """A ``post_delivery_receipt`` body (its tail as guessed from Query SMS-MT Details)."""
    return _payload(
        "post_delivery_receipt", api_did, iccid=iccid, msisdn=msisdn, sms_uid=sms_uid, status=status,
        delivered_timestamp=when,
    )  # fmt: skip


def usage_alert(api_did: int, iccid: str, level_mb: float, when: str, *, cut_off: bool = False) -> bytes:
    """A ``post_alert_sim_warning`` body, or ``post_alert_sim_limit`` with ``cut_off``."""
    if cut_off:
        return _payload("post_alert_sim_limit", api_did, iccid=iccid, cut_off_level_mb=f"{level_mb:g}", timestamp=when)
    return _payload("post_alert_sim_warning", api_did, iccid=iccid, warning_level_mb=f"{level_mb:g}", timestamp=when)


def item(kind: str, iccid: str, msisdn: str, when: str, **fields: Any) -> tuple[int, bytes]:
    """
    ``(api_did, body)`` of one on-command item for a SIM: ``kind`` ``mo_sms`` (field ``text``), ``warning`` or
    ``cut_off`` (field ``level_mb``), as listed in :data:`ITEM_KINDS`.
    """
    if kind not in ITEM_KINDS:
        raise ValueError(f"kind must be one of {sorted(ITEM_KINDS)}, not {kind!r}")
    unknown = set(fields) - set(ITEM_KINDS[kind])
    missing = set(ITEM_KINDS[kind]) - set(fields)
    if unknown or missing:
        raise ValueError(f"a {kind} item takes the fields {list(ITEM_KINDS[kind])}, got {sorted(fields)}")
    api_did = next_api_did()
    if kind == "mo_sms":
        return api_did, mo_sms(api_did, iccid, msisdn, str(fields["text"]), when)
    return api_did, usage_alert(api_did, iccid, float(fields["level_mb"]), when, cut_off=kind == "cut_off")


def _payload(root: str, api_did: int, **elements: str) -> bytes:
    node = etree.Element(root, version="1", api_did=f"{api_did:010d}")
    etree.SubElement(node, "passphrase")
    for name, text in elements.items():
        etree.SubElement(node, name).text = text
    return etree.tostring(node, xml_declaration=True, encoding="UTF-8")


def with_passphrase(body: bytes, passphrase: str) -> bytes:
    """The body with its ``<passphrase>`` set."""
    node = etree.fromstring(body)
    node.find("passphrase").text = passphrase
    return etree.tostring(node, xml_declaration=True, encoding="UTF-8")


@dataclass
class PushReport:
    """What a :class:`Pusher` did: items delivered (2xx), refused (4xx), POSTs made, duplicates sent, seconds."""

    delivered: int = 0
    refused: int = 0
    posts: int = 0
    duplicates_sent: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    def counts(self) -> dict[str, int]:
        """The counters, JSON-safe."""
        with self._lock:
            return {"delivered": self.delivered, "refused": self.refused, "posts": self.posts,
                    "duplicates_sent": self.duplicates_sent}  # fmt: skip


class Pusher:
    """
    Pushes items to one receiver with the platform's retry schedule.

    :param url: the receiver, e.g. ``http://127.0.0.1:8080/sim-insight/push``.
    :param passphrase: put in every body's ``<passphrase>``.
    :param retry_scale: factor on the documented retry delays (1.0 = the platform's own; 0.01 for tests).
    :param max_attempts: give an item up after this many POSTs (the platform never does; tests must end).
    :param duplicate_ratio: share of items sent a second time after their first delivery.
    :param seed: for the choice of duplicated items.

    ``report`` counts every item pushed with :meth:`push` (alone or from :meth:`push_receipt`).
    """

    def __init__(
        self,
        url: str,
        passphrase: str,
        *,
        retry_scale: float = 1.0,
        max_attempts: int = 50,
        duplicate_ratio: float = 0.0,
        seed: int = 17,
    ) -> None:
        self.url = url
        self.passphrase = passphrase
        self.retry_scale = retry_scale
        self.max_attempts = max_attempts
        self.duplicate_ratio = duplicate_ratio
        self._random = random.Random(seed)
        self._local = threading.local()
        self.report = PushReport()

    def push_receipt(self, message: dict, msisdn: str, delay: float = 0.0) -> None:
        """Push, ``delay`` seconds from now, the receipt of a message the sandbox settles (``sms_uid``, ``fate``)."""
        when = message["settles"].strftime("%d/%m/%Y %H:%M:%S")
        body = delivery_receipt(next_api_did(), message["iccid"], msisdn, message["sms_uid"], message["fate"], when)
        self.push_later(body, delay)

    def push_later(self, body: bytes, delay: float = 0.0) -> None:
        """:meth:`push` in a daemon thread, ``delay`` seconds from now (the platform pushes on its own time)."""
        timer = threading.Timer(delay, self.push, (body,))
        timer.daemon = True
        timer.start()

    def push(self, body: bytes, report: PushReport | None = None) -> int:
        """Deliver one item (retries included), then maybe again (``duplicate_ratio``); return its first status."""
        report = report or self.report
        status = self.deliver(body, report)
        report.count(delivered=int(200 <= status < 300), refused=int(400 <= status < 500))
        if self._random.random() < self.duplicate_ratio:
            report.count(duplicates_sent=1)
            self.deliver(body, report)
        return status

    def deliver(self, body: bytes, report: PushReport | None = None) -> int:
        """POST one item until it gets a final answer; return that HTTP status (0: attempts exhausted)."""
        report = report or self.report
        data = with_passphrase(body, self.passphrase)
        for attempt in range(self.max_attempts):
            report.count(posts=1)
            try:
                status = self._session().post(
                    self.url, data=data, timeout=30,
                    headers={"Content-Type": "text/xml; charset=utf-8", "User-Agent": USER_AGENT},
                ).status_code  # fmt: skip
            except requests.RequestException:
                status = 0  # refused connection, reset, timeout: the platform retries all of these
            if 200 <= status < 300 or 400 <= status < 500:
                return status
            time.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)] * self.retry_scale)
        return 0

    def push_all(self, bodies: Iterable[bytes], senders: int = 1) -> PushReport:
        """Deliver every item, ``senders`` at once; some twice (``duplicate_ratio``)."""
        report = PushReport()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=senders) as pool:
            list(pool.map(lambda body: self.push(body, report), bodies))
        report.seconds = time.monotonic() - started
        return report

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()  # one keep-alive session per sender thread
        return self._local.session
