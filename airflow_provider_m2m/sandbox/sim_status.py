"""
The sandbox's SIM status and usage: ``query_status``, ``set_status`` and ``query_usage``.

Each SIM's starting status is drawn from a hash of its ICCID, like its SMS fate, so the fleet does not
move: about 85 % ``active``, 10 % ``deactivated``, 5 % ``closed``. ``set_status`` changes it (kept until
the sandbox is reset); a closed SIM stays closed. Usage figures are drawn the same way.

The handlers have the shape of the other SIM Insight commands (``sim_insight.COMMANDS``):
``(state, root, entry) -> (error, fields_xml)``, reading and changing ``state.statuses``. Errors follow
the documentation: a missing or invalid element is ``invalid content``, an ICCID the account does not
hold (or a closed SIM, which takes no commands) is ``invalid iccid``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Container
from typing import Any

from lxml import etree

#: Starting status by share of the fleet, as ``query_status`` spells it.
STATUS_SHARES: tuple[tuple[str, int], ...] = (("active", 85), ("deactivated", 10), ("closed", 5))
#: ``set_status`` takes its own spelling of the deactivated state (compared case-insensitively).
_SET_WORDS = {"active": "active", "de-activated": "deactivated"}


def _draw(seed: int, iccid: str, what: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{what}:{iccid}".encode()).digest()[:4], "big")


def initial_status(seed: int, iccid: str) -> str:
    """The status ``iccid`` starts in: ``active``, ``deactivated`` or ``closed``."""
    draw = _draw(seed, iccid, "status") % 100
    for status, share in STATUS_SHARES:
        if draw < share:
            return status
        draw -= share
    raise AssertionError("STATUS_SHARES must add up to 100")


class SimStatuses:
    """
    Every SIM's current status (thread-safe): the drawn one until ``set_status`` changes it.

    :param seed: the fleet's seed.
    :param iccids: the fleet's ICCIDs (any other ICCID is ``invalid iccid``).
    """

    def __init__(self, seed: int, iccids: Container[str]) -> None:
        self.seed = seed
        self.iccids = iccids
        self._changed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._late: list[float] = []  # answer delays of the next set_status commands (after carrying them out)

    def get(self, iccid: str) -> str:
        """The SIM's status now."""
        with self._lock:
            return self._changed.get(iccid) or initial_status(self.seed, iccid)

    def set(self, iccid: str, status: str) -> None:
        """Give the SIM ``status`` (``active`` or ``deactivated``)."""
        with self._lock:
            self._changed[iccid] = status

    def answer_late(self, seconds: float, count: int = 1) -> None:
        """Carry out the next ``count`` set_status commands, then wait ``seconds`` before answering (an
        "outcome unknown" for a client whose timeout is shorter)."""
        with self._lock:
            self._late.extend([float(seconds)] * int(count))

    def next_answer_delay(self) -> float:
        with self._lock:
            return self._late.pop(0) if self._late else 0.0

    def edge_cases(self, fleet_iccids: list[str]) -> dict[str, str]:
        """The first SIM of the fleet in each starting status."""
        found: dict[str, str] = {}
        for iccid in fleet_iccids:
            found.setdefault(initial_status(self.seed, iccid), iccid)
        return found

    def with_status(self, fleet_iccids: list[str], status: str) -> list[str]:
        """The fleet's ICCIDs whose status is ``status`` now, in fleet order."""
        return [iccid for iccid in fleet_iccids if self.get(iccid) == status]


def _text(root: etree._Element, name: str) -> str | None:
    el = root.find(name)
    return None if el is None else (el.text or "").strip()


def _sim(statuses: SimStatuses, root: etree._Element) -> tuple[str | None, str | None]:
    iccid = _text(root, "iccid")
    if not iccid:
        return None, "invalid content"
    if iccid not in statuses.iccids:
        return None, "invalid iccid"
    return iccid, None


def query_status(state: Any, root: etree._Element, entry: dict[str, Any]) -> tuple[str | None, str]:
    """``query_status``: the SIM's status."""
    statuses: SimStatuses = state.statuses
    iccid, error = _sim(statuses, root)
    if iccid is None:  # error says why
        return error, ""
    return None, f"<status>{statuses.get(iccid)}</status>"


def set_status(state: Any, root: etree._Element, entry: dict[str, Any]) -> tuple[str | None, str]:
    """``set_status``: ``active`` or ``de-activated``; anything else (``deactivated`` too) is ``invalid content``."""
    statuses: SimStatuses = state.statuses
    iccid, error = _sim(statuses, root)
    if iccid is None:  # error says why
        return error, ""
    target = _SET_WORDS.get((_text(root, "status") or "").lower())
    if target is None:
        return "invalid content", ""
    if statuses.get(iccid) == "closed":
        return "invalid iccid", ""
    statuses.set(iccid, target)
    time.sleep(statuses.next_answer_delay())
    return None, ""


def query_usage(state: Any, root: etree._Element, entry: dict[str, Any]) -> tuple[str | None, str]:
    """``query_usage``: this month's data (MB, 3 decimals), chargeable SMS and voice minutes."""
    statuses: SimStatuses = state.statuses
    iccid, error = _sim(statuses, root)
    if iccid is None:  # error says why
        return error, ""
    draw = _draw(statuses.seed, iccid, "usage")
    data_mb, sms, voice = (draw % 500_000) / 1000, (draw >> 8) % 60, (draw >> 16) % 120
    return None, f"<data_mb>{data_mb:.3f}</data_mb><sms>{sms}</sms><voice_mins>{voice}</voice_mins>"


#: The SIM Insight commands served here, by root element.
HANDLERS = {"query_status": query_status, "set_status": set_status, "query_usage": query_usage}
