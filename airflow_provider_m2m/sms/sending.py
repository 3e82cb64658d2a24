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
    InvalidRequestError,
    M2mApiError,
    M2mProviderError,
    OutcomeUnknownError,
    RetryToSettleError,
    TransientError,
)
from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.protocol import iccid as iccid_rules
from airflow_provider_m2m.protocol import sms
from airflow_provider_m2m.sms.ledger import FAILED, PENDING, SENT, SmsLedger
from airflow_provider_m2m.utils import batches
from airflow_provider_m2m.utils.progress import Progress
from airflow_provider_m2m.utils.version_compat import AirflowFailException

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
class Batch:
    """
    What a send task was asked to do, every part checked.

    :param numbers: the distinct SIMs, in input order (a SIM listed twice gets one message).
    :param listed: how many SIMs were listed, duplicates included.
    :param message: the message every SIM gets.
    :param fixed_uid: the ``sms_uid`` the DAG author fixed (one SIM only), or None: one uid per SIM.
    """

    numbers: list[str]
    listed: int
    message: Message
    fixed_uid: str | None

    def uid_maker(self, ti: object) -> Callable[[str], str]:
        """Each SIM's ``sms_uid``: the fixed one, or derived from the run, task, map index and ICCID (a retry
        reuses it, so the platform's SMS history tells whether an earlier try's message went out)."""
        at = (ti.dag_id, ti.run_id, ti.task_id, ti.map_index)  # type: ignore[attr-defined]
        return lambda number: self.fixed_uid or sms.make_uid(*at, number)


def checked_batch(
    iccids: object, message_text: object, data_coding: object, origin: object, sms_uid: object
) -> Batch:
    """
    Check everything a send is given (every ICCID, the text against the GSM 7-bit rules, data coding, origin,
    uid) before anything is sent. An empty list is no error (e.g. no SIM moved today).

    :raises InvalidRequestError: naming the field and the rule.
    """
    listed = iccid_rules.validate_many(iccids, allow_empty=True)
    numbers = list(dict.fromkeys(listed))
    coding = sms.validate_data_coding(data_coding)
    text = sms.validate_message(message_text, coding)
    checked_origin = sms.validate_origin(origin) if origin not in (None, "") else None
    if sms_uid not in (None, "") and len(numbers) > 1:
        raise InvalidRequestError("sms_uid", "a fixed sms_uid is only allowed with one SIM (uids must be unique)")
    fixed_uid = sms.validate_uid(sms_uid) if sms_uid not in (None, "") else None
    return Batch(numbers, len(listed), Message(text, coding, checked_origin), fixed_uid)


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

    def unsent(self) -> list[dict[str, str | None]]:
        """The rows of the SIMs not confirmed sent."""
        return [row for row in self.rows if row["outcome"] != "success"]

    def raise_unless_all_sent(self) -> None:
        """
        Fail the task, listing the SIMs (20 at most), when any SIM is not confirmed sent: retryably
        (:class:`~airflow_provider_m2m.exceptions.RetryToSettleError`) when an outcome is unknown or every
        attempt was turned away, so a retry settles them without duplicates; without retries
        (``AirflowFailException``) when the only failures are SIMs the platform refused: resending cannot help.
        """
        bad = self.unsent()
        if not bad:
            return
        listed = "; ".join(f"{row['iccid']}: {row['outcome']} ({row['error']})" for row in bad[:20])
        listed += f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        retried = [row for row in bad if row["iccid"] not in self.refused]
        if not retried:
            raise AirflowFailException(
                f"{len(bad)} of {len(self.rows)} SMS refused by the platform for good, after every SIM was tried: "
                f"{listed}. Not retried: resending cannot help; fix or remove these SIMs."
            )
        refused = f" {len(self.refused)} refused for good are never resent." if self.refused else ""
        raise RetryToSettleError(
            f"{len(bad)} of {len(self.rows)} SMS not confirmed sent: {listed}. A retry resends only to "
            f"the {len(retried)} SIMs not confirmed (checking the platform's SMS history first).{refused}"
        )


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
