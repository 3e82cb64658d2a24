"""
Sending one SMS to each of many SIMs, concurrently, never twice: what :class:`SendSmsOperator` runs.

The SIMs go out over one aiohttp session with at most ``max_workers`` requests in flight (the batch
transport of ``query_imeis``: the same rate limit, the same retry rules). The ledger is written a window at a
time: a window's SIMs are recorded ``pending`` before the first of them is handed to a worker, so no request
leaves unrecorded, and the window's outcomes are recorded once its last SIM is done. Windows follow each
other without draining the pipeline: the next window opens as soon as a worker asks for its first SIM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from airflow_provider_m2m.exceptions import (
    AuthenticationError,
    M2mApiError,
    M2mProviderError,
    OutcomeUnknownError,
    TransientError,
)
from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.sms.ledger import FAILED, PENDING, SENT, SmsLedger
from airflow_provider_m2m.utils import batches
from airflow_provider_m2m.utils.progress import Progress

if TYPE_CHECKING:
    from airflow_provider_m2m.utils.version_compat import TaskLog

#: How the progress line counts the rows' outcomes (``success``, ``failed``, ``unknown``), the good one first.
COUNTED_AS = {"success": "sent", "failed": "failed", "unknown": "unknown"}
#: SIMs per ledger window: 16 x max_workers, or 4 s of sending at the connection's rate limit when that is
#: more, within these bounds. A store round trip (25-60 ms through the execution API here) holds up the event
#: loop, so a window must last long enough for that to be noise (10,000 SIMs at 16 in flight: 40 windows, 80
#: round trips, about 2 s of a 31 s run); the price is that after a crash a retry looks up at most one window
#: plus the SIMs in flight. The upper bound keeps a window's value (about 32 bytes a SIM) well under the task
#: state store's 64 KB default limit per value.
MIN_WINDOW, MAX_WINDOW = 25, 1000


def window_size(workers: int, rate: float | None = None) -> int:
    """SIMs recorded per ledger write for ``workers`` requests in flight, at most ``rate`` requests a second."""
    return min(MAX_WINDOW, max(MIN_WINDOW, 16 * workers, int(4 * (rate or 0))))


@dataclass(frozen=True)
class Message:
    """
    The one message every SIM gets (already validated).

    :param text: the message text (GSM-7) or base64 payload.
    :param data_coding: ``default`` or ``binary``.
    :param origin: the sender number, or None.
    """

    text: str
    data_coding: str
    origin: str | None


@dataclass(frozen=True)
class Sent:
    """
    How a send ended.

    :param rows: ``{iccid, sms_uid, outcome, error}`` per SIM, in input order; ``outcome`` is ``success``
        (sent now or by an earlier try), ``failed`` (not sent: refused by the platform, or every attempt was
        turned away) or ``unknown`` (may have been sent: settled from the SMS history on a retry).
    :param refused: the SIMs the platform refused for good (``api_outcome`` failure): never sent again.
    """

    rows: list[dict[str, str | None]]
    refused: set[str]


def send_once_each(
    hook: M2mHook,
    ledger: SmsLedger,
    numbers: list[str],
    uid_of: Callable[[str], str],
    message: Message,
    *,
    max_workers: int | None,
    log: TaskLog,
) -> Sent:
    """
    Send ``message`` to every SIM of ``numbers`` (distinct, validated) unless an earlier try did.

    :returns: one row per SIM, in input order, and which SIMs the platform refused for good.
    :raises AuthenticationError: the platform refused the credentials (the batch stops; SIMs in flight stay
        ``pending``, so a later run settles them).
    """
    workers = hook._workers(max_workers)
    size = window_size(workers, hook.limiter.rate)
    windows = [numbers[i : i + size] for i in range(0, len(numbers), size)]
    left = [len(w) for w in windows]
    outcomes: list[dict[str, str]] = [{} for _ in windows]
    rows: list[dict[str, str | None] | None] = [None] * len(numbers)
    recorded: dict[int, dict[str, str]] = {}  # what the ledger holds for each open window
    progress = Progress(log, "SMS", len(numbers), outcomes=tuple(COUNTED_AS.values()))

    def jobs() -> Iterator[tuple[int, int, str, str | None]]:
        # Pulled lazily by the workers, on the event loop's thread: a window is written pending before
        # its first SIM is handed out (write-ahead), and nothing else runs while the store is written.
        for w, window in enumerate(windows):
            before = ledger.prior(w, window)
            ahead = {n: before[n] if before.get(n) in (SENT, FAILED) else PENDING for n in window}
            if ahead != before:  # a retry's window that is settled already needs no write
                ledger.save(w, ahead)
            recorded[w] = ahead
            for k, number in enumerate(window):
                yield w, w * size + k, number, before.get(number)

    # The first SIM goes alone: refused credentials then cost one request, not max_workers of them (a
    # platform may lock an account after a burst of failed logins); the others wait for its answer.
    first_answered = asyncio.Event()

    async def work(client: aiohttp.ClientSession, job: tuple[int, int, str, str | None]) -> tuple[int, str]:
        w, index, number, state = job
        if index:
            await first_answered.wait()
        row, after = await _send_once(hook, client, number, uid_of(number), message, state, log)
        first_answered.set()  # never set when it raised: the batch stops and the waiting SIMs are cancelled
        rows[index] = row
        if after is not None:
            outcomes[w][number] = after
        left[w] -= 1
        if not left[w] and outcomes[w] != recorded[w]:  # the window's last SIM: record how each of them ended
            ledger.save(w, outcomes[w])
        return index, str(row["outcome"])  # always set (success, failed or unknown); error and uid may be None

    hook.fetch_connection()  # on this thread, before the loop starts (the secret masker is not for inside it)
    ended = batches.map_concurrently(jobs(), work, session=lambda: hook.batch_session(workers), max_workers=workers)
    for _, outcome in ended:
        progress.step(outcome=COUNTED_AS[outcome])
    log.info("%s", progress.line())
    if ledger.round_trips:
        log.info(
            "SMS ledger: %d task state store round trips (%.2fs) for %d SIMs in windows of %d",
            ledger.round_trips,
            ledger.store_seconds,
            len(numbers),
            size,
        )
    return Sent([row for row in rows if row is not None], {n for o in outcomes for n, s in o.items() if s == FAILED})


async def _send_once(
    hook: M2mHook,
    client: aiohttp.ClientSession,
    number: str,
    uid: str,
    message: Message,
    state: str | None,
    log: TaskLog,
) -> tuple[dict[str, str | None], str | None]:
    """Send unless an earlier try did; return the row and the SIM's state to record (None: no record)."""
    row: dict[str, str | None] = {"iccid": number, "sms_uid": uid, "outcome": "success", "error": None}
    if state == SENT:
        log.info("SIM %s: SMS %s already sent by an earlier try; not resending", number, uid)
        return row, SENT
    if state == FAILED:
        return {**row, "outcome": "failed", "error": "refused by the platform on an earlier try; not resent"}, FAILED
    if state == PENDING:
        try:
            found = await hook.afind_sms(client, number, uid)
        except AuthenticationError:
            raise
        except M2mApiError as exc:  # the platform refuses the SIM itself (invalid iccid): no SMS can reach it
            return {**row, "outcome": "failed", "error": f"refused by the platform: {exc}; not resent"}, FAILED
        except M2mProviderError as exc:  # cannot tell whether the earlier try's message went out
            return {**row, "outcome": "unknown", "error": f"SMS history lookup failed: {exc}"}, PENDING
        if found:
            log.info("SIM %s: SMS %s found in the platform's history; not resending", number, uid)
            return row, SENT
    try:
        receipt = await hook.asend_sms(
            client, number, message.text, data_coding=message.data_coding, origin=message.origin, sms_uid=uid
        )
    except AuthenticationError:
        raise
    except M2mApiError as exc:  # the platform refused this SIM's message: final, never sent again
        return {**row, "outcome": "failed", "error": str(exc)}, FAILED
    except TransientError as exc:  # every attempt was turned away (refused, 429, 503): certainly not sent
        return {**row, "outcome": "failed", "error": str(exc)}, None
    except (OutcomeUnknownError, M2mProviderError) as exc:  # it may have been carried out: settled on retry
        return {**row, "outcome": "unknown", "error": str(exc)}, PENDING
    return {**row, "sms_uid": receipt.sms_uid or uid}, SENT
