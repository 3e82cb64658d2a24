"""
Waiting for SMS delivery: what :class:`~airflow_provider_m2m.sensors.m2m.SmsDeliverySensor` and
:class:`~airflow_provider_m2m.triggers.m2m.SmsDeliveryTrigger` share, free of Airflow (the hook is handed in).

Which messages are watched, what is known of each, which SIMs to ask about next within a request budget
(least recently asked first, so every SIM gets its turn however small the budget), and the per-SIM report.
Everything here is JSON-safe so it can travel in a trigger's kwargs and events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.protocol import iccid as iccid_rules
from airflow_provider_m2m.protocol import sms
from airflow_provider_m2m.protocol.delivery_states import FINAL_STATES, NOT_FOUND, STATES, UNCHECKED
from airflow_provider_m2m.protocol.sim_insight import SmsHistory
from airflow_provider_m2m.protocol.values import read_literal
from airflow_provider_m2m.utils.transport import RetryPolicy

if TYPE_CHECKING:
    from airflow_provider_m2m.hooks.m2m import M2mHook
    from airflow_provider_m2m.utils.version_compat import TaskLog

#: Polling asks each SIM once per round and never retries within it: the next round asks again anyway,
#: and a struggling platform gets a longer pause (the round's interval backs off) instead of more requests.
POLL_RETRY_POLICY = RetryPolicy(max_attempts=1)
#: Rows of SendSmsOperator's output worth watching: sent, or perhaps sent (the outcome was unknown).
WATCHED_OUTCOMES = ("success", "unknown")


@dataclass
class Delivery:
    """
    What is known about one message.

    :param iccid: the SIM.
    :param sms_uid: the message.
    :param state: one of :data:`STATES`.
    :param status: the platform's own status word (``pending``, ``delivered``, ...), or None.
    :param sent_at: when the platform sent it (ISO 8601, UTC), or None.
    :param delivered_at: when it was delivered (ISO 8601, UTC), or None.
    :param error: why the last query about it failed, or None.
    """

    iccid: str
    sms_uid: str
    state: str = UNCHECKED
    status: str | None = None
    sent_at: str | None = None
    delivered_at: str | None = None
    error: str | None = None

    @property
    def final(self) -> bool:
        """True once the message is delivered or failed."""
        return self.state in FINAL_STATES


_DELIVERY_FIELDS = {f.name for f in fields(Delivery)}

#: SIM queries per poke when neither ``max_requests_per_poke`` nor the connection's rate limit says more.
DEFAULT_REQUESTS_PER_POKE = 100


def requests_per_poke(
    max_requests_per_poke: int | None, poke_interval: float, max_requests_per_second: float | None
) -> int:
    """
    How many SIMs one poke may ask about: the user's ``max_requests_per_poke`` when given; else what the
    platform's limit (the connection's ``max_requests_per_second``) allows in one ``poke_interval``, so a poke
    every interval keeps up with any run within the limit (10,000 messages at 200/s: every SIM asked once
    in 50 s); else :data:`DEFAULT_REQUESTS_PER_POKE`. The hook's rate limiter spaces the queries, so a poke
    never goes faster than the limit, whatever its size; a poke only asks SIMs still waiting.
    """
    if max_requests_per_poke is not None:
        return max_requests_per_poke
    if max_requests_per_second:
        return max(1, int(max_requests_per_second * poke_interval))
    return DEFAULT_REQUESTS_PER_POKE


def messages_to_watch(messages: object) -> tuple[list[tuple[str, str]], int]:
    """
    The ``(iccid, sms_uid)`` pairs to watch, from what a user or an upstream task hands the sensor.

    Accepted: SendSmsOperator's output (rows with ``iccid``, ``sms_uid``, ``outcome``; rows whose outcome
    says nothing went out are left out), the same per map index (a list of lists, ``None`` for a map index
    without output), ``{"iccid", "sms_uid"}`` dicts, ``[iccid, sms_uid]`` pairs, or any of these as JSON /
    Python-literal text (a Jinja-rendered XCom). Duplicates count once.

    :returns: the pairs in input order, and how many rows were left out because nothing was sent.
    :raises InvalidRequestError: an item is not one of the above, or its ICCID or uid breaks the rules.
    """
    if isinstance(messages, str):
        messages = _literal(messages)
    if messages is None:
        return [], 0
    if isinstance(messages, Mapping) or not isinstance(messages, Iterable):
        raise InvalidRequestError("messages", "must be a list of {iccid, sms_uid} rows or [iccid, sms_uid] pairs")
    pairs: dict[tuple[str, str], None] = {}
    skipped = 0

    def take(item: object, where: str, depth: int) -> None:
        nonlocal skipped
        if item is None:
            return
        if isinstance(item, Mapping):
            if "outcome" in item and item["outcome"] not in WATCHED_OUTCOMES:
                skipped += 1
                return
            number, uid = item.get("iccid"), item.get("sms_uid")
        elif isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(v, str) for v in item):
            number, uid = item
        elif isinstance(item, (list, tuple)) and depth == 0:  # one map index's rows
            for n, inner in enumerate(item):
                take(inner, f"{where}[{n}]", 1)
            return
        else:
            raise InvalidRequestError(where, "must be an {iccid, sms_uid} row or an [iccid, sms_uid] pair")
        if not uid:
            raise InvalidRequestError(f"{where}.sms_uid", "is required to tell the SIM's messages apart")
        try:
            pair = (iccid_rules.validate(str(number)), sms.validate_uid(str(uid)))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{where}.{exc.field}", exc.rule) from None
        pairs[pair] = None

    for index, item in enumerate(messages):
        take(item, f"messages[{index}]", 0)
    return list(pairs), skipped


def _literal(text: str) -> object:
    if not text.strip():
        return None
    try:
        return read_literal(text)  # what Jinja makes of a list of dicts with None in it
    except ValueError:
        raise InvalidRequestError("messages", "text must be a JSON or Python list of rows") from None


class DeliveryWatch:
    """
    The messages being waited for and what is known of each.

    :param messages: ``(iccid, sms_uid)`` pairs (see :func:`messages_to_watch`).
    :param known: :meth:`known` of an earlier watch over the same messages (a poke before deferring, an
        earlier reschedule), as it comes back from JSON; rows for other messages are ignored.
    """

    def __init__(self, messages: Iterable[Iterable[str]], known: Iterable[Any] | None = None) -> None:
        self.deliveries: dict[tuple[str, str], Delivery] = {}
        self._by_iccid: dict[str, list[Delivery]] = {}
        for number, uid in messages:
            delivery = self.deliveries.setdefault((number, uid), Delivery(number, uid))
            self._by_iccid.setdefault(number, []).append(delivery)
        # The round each SIM was last asked in: -1 never, 0 by an earlier watch (so a handed-over watch goes
        # on with the SIMs its predecessor had not reached yet).
        self._asked: dict[str, int] = {}
        for row in known or ():
            found = self.deliveries.get((row.get("iccid", ""), row.get("sms_uid", "")))
            if found is not None:
                for name in _DELIVERY_FIELDS - {"iccid", "sms_uid"}:
                    setattr(found, name, row.get(name, getattr(found, name)))
                self._asked[found.iccid] = 0
        self.rounds = 0

    @property
    def settled(self) -> bool:
        """True when every message is delivered or failed."""
        return all(d.final for d in self.deliveries.values())

    def due(self, budget: int) -> list[str]:
        """
        Start a round: the SIMs to ask about now, at most ``budget``, those asked longest ago first.

        A SIM is asked once for all its watched messages; SIMs whose messages are all final are not asked.
        """
        self.rounds += 1
        waiting = [n for n, ds in self._by_iccid.items() if not all(d.final for d in ds)]
        waiting.sort(key=lambda n: self._asked.get(n, -1))  # stable: input order among equals
        chosen = waiting[:budget]
        for number in chosen:
            self._asked[number] = self.rounds
        return chosen

    def record(self, history: SmsHistory) -> None:
        """Take in the answer about one SIM (or why asking failed)."""
        for delivery in self._by_iccid.get(history.iccid, ()):
            if delivery.final:
                continue
            if history.error is not None:
                delivery.error = history.error
                continue
            message = history.find(delivery.sms_uid)
            delivery.error = None
            if message is None:
                delivery.state = NOT_FOUND
                continue
            delivery.state = message.state
            delivery.status = message.status
            delivery.sent_at = message.sent_timestamp.isoformat() if message.sent_timestamp else None
            delivery.delivered_at = message.delivered_timestamp.isoformat() if message.delivered_timestamp else None

    async def poll(self, query: Callable[[list[str]], Awaitable[list[SmsHistory]]], budget: int) -> tuple[int, int]:
        """
        One round: ask ``query`` about the SIMs :meth:`due` and record the answers.

        :returns: how many SIMs were asked, and how many of those queries failed.
        """
        numbers = self.due(budget)
        if not numbers:
            return 0, 0
        answers = await query(numbers)
        for history in answers:
            self.record(history)
        return len(numbers), sum(1 for h in answers if h.error is not None)

    def tally(self) -> dict[str, int]:
        """How many messages are in each state (states with none left out)."""
        counts = {state: 0 for state in STATES}
        for delivery in self.deliveries.values():
            counts[delivery.state] = counts.get(delivery.state, 0) + 1
        return {state: n for state, n in counts.items() if n}

    def summary(self) -> str:
        """One line for the log: the tally and how many messages are watched."""
        parts = ", ".join(f"{n} {state}" for state, n in self.tally().items())
        where = f", round {self.rounds}" if self.rounds else ""
        return f"SMS delivery: {parts or 'nothing watched'} ({len(self.deliveries)} messages{where})"

    def report(self) -> list[dict[str, str | None]]:
        """One JSON-safe row per message, in input order: ``iccid``, ``sms_uid``, ``state``, ``status``,
        ``sent_at``, ``delivered_at``, ``error``."""
        return [asdict(d) for d in self.deliveries.values()]

    def known(self) -> list[Any]:  # JSON rows: the task state store and the trigger's kwargs keep them
        """The rows that carry anything learnt so far (for :class:`DeliveryWatch`'s ``known``)."""
        return [asdict(d) for d in self.deliveries.values() if d.state != UNCHECKED or d.error]


async def poll_round(
    hook: M2mHook, watch: DeliveryWatch, *, budget: int, lastx: int, max_workers: int, log: TaskLog
) -> int:
    """
    One round of polling, the same in a sensor's poke and in the trigger: ask about the SIMs ``watch`` says
    are due (at most ``budget``), record the answers, log the tally. Returns how many queries failed.
    """
    asked, failed = await watch.poll(lambda numbers: hook.aquery_sms_histories(numbers, lastx, max_workers), budget)
    log.info("%s; asked about %d SIMs, %d queries failed", watch.summary(), asked, failed)
    return failed
