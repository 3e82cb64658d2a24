"""
The nightly fleet audit's rules, free of Airflow: what one night reports for a SIM, given what the last
successful audit recorded for it and what the platform answers now.

A night compares each SIM with the *audit state* (IMEI and ``last_change`` per SIM) of the last successful
audit before it, not with its data interval, so a change made while a night failed, was skipped or ran late is
reported by the next successful night, dated by the platform's ``last_change``, and only by that one. A
change at or after the night's cutoff belongs to a later night (:func:`at_cutoff`), also when the night is rerun.

>>> from airflow_provider_m2m.fleet_audit.rules import Seen, audit_sim
>>> import datetime as dt
>>> since = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
>>> answer = {"iccid": "8925401000000000001", "current_imei": "359827041234569",
...           "last_change": "2026-03-01T10:00:00+00:00", "previous_imei": "862057041234566", "error": ""}
>>> audit_sim(Seen("8925401000000000001", "862057041234566", "2026-01-05T08:00:00+00:00"), answer, None, since)[0]
['changed']
>>> same_device_later = {**answer, "previous_imei": "111111111111116"}  # A -> B -> A since the last audit
>>> audit_sim(Seen("8925401000000000001", "359827041234569", "2026-01-05T08:00:00+00:00"),
...           same_device_later, None, since)[0]
['changed']
>>> audit_sim(Seen("8925401000000000001", None, None), answer, None, since)[0]  # the audit knew no device
['first_seen']
>>> audit_sim(Seen("8925401000000000001", "359827041234569", "2026-03-01T10:00:00+00:00"),
...           answer, "862057041234566", since)[0]  # no change, but not the device the inventory says
['inventory_mismatch']
>>> audit_sim(None, {**answer, "current_imei": "", "last_change": ""}, None, since)
(['unknown'], Seen(iccid='8925401000000000001', imei=None, last_change=None))
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.protocol.iccid import MAX_LENGTH, MIN_LENGTH
from airflow_provider_m2m.protocol.imei import normalize as normalize_imei

#: The report's ``status`` values, in the order its rows come.
STATUSES = ("changed", "first_seen", "inventory_mismatch", "unknown", "failed")

#: The columns of an audit state file (one row per SIM, sorted by ICCID).
STATE_COLUMNS = ("iccid", "imei", "last_change")


class Seen(NamedTuple):
    """
    What an audit recorded for one SIM: a row of the audit state (a named tuple: a million are made a night).

    :param iccid: the SIM.
    :param imei: the device it sat in, or None when the platform knew none.
    :param last_change: the platform's ``last_change`` then (ISO 8601), or None when unknown.
    """

    iccid: str
    imei: str | None
    last_change: str | None


def _moment(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def audit_sim(
    previous: Seen | None, answer: Mapping[str, str], expected_imei: str | None, since: dt.datetime
) -> tuple[list[str], Seen | None]:
    """
    The statuses one night reports for one SIM, and the state to record for it.

    * ``failed``: the query failed; the SIM keeps its previous state, so a later night reports its change.
    * ``unknown``: the platform knows no device; the SIM keeps its previous state (its last known device).
    * ``first_seen``: a device, and none known before: the last audit recorded the SIM without one, or (no row
      at all: the first audit, or a SIM new to the fleet file) the platform dates its first sighting (no
      ``previous_imei``) at or after ``since``.
    * ``changed``: the IMEI differs from the one recorded, or ``last_change`` moved (a device that went
      A -> B -> A between two audits; an unknown ``last_change`` compares the devices only); with no row, the
      platform dates a change at or after ``since``.
    * ``inventory_mismatch``: the fleet file's ``expected_imei`` differs from the current IMEI (every night
      until fixed); it comes on top of ``changed`` / ``first_seen``, so a SIM can be listed twice.

    A SIM without a row and with a change older than ``since`` is recorded silently: its state starts here.

    :param previous: the last successful audit's row for the SIM, or None.
    :param answer: the platform's answer as a query row (``current_imei``, ``last_change`` ISO 8601,
        ``previous_imei``, ``error``; empty strings for unknown).
    :param expected_imei: the fleet file's ``expected_imei`` (15 digits), or None.
    :param since: the night's data interval start: dates changes of SIMs the audit has no row for.
    """
    if answer.get("error"):
        return ["failed"], previous
    iccid, imei, last_change = answer["iccid"], answer.get("current_imei") or None, answer.get("last_change") or None
    if imei is None:
        return ["unknown"], previous or Seen(iccid, None, None)
    statuses = []
    if previous is None:
        moment = _moment(last_change)
        if moment is not None and moment >= since:
            statuses.append("changed" if answer.get("previous_imei") else "first_seen")
    elif previous.imei is None:
        statuses.append("first_seen")
    elif previous.imei != imei or (
        last_change is not None
        and last_change != previous.last_change  # the same text: the same instant, without parsing it (most SIMs)
        and _moment(previous.last_change) != _moment(last_change)
    ):
        statuses.append("changed")  # an unknown date is no evidence of a change: only the device counts then
    if expected_imei and expected_imei != imei:
        statuses.append("inventory_mismatch")
    return statuses, Seen(iccid, imei, last_change)


def at_cutoff(answer: Mapping[str, str], previous: Seen | None, cutoff: dt.datetime) -> Mapping[str, str]:
    """
    The platform's answer as it was at the night's ``cutoff``: a change at or after the cutoff belongs to a later
    night, so a rerun of an old night reproduces that night's rows.

    For a SIM whose ``last_change`` is at or after the cutoff, the platform's ``previous_imei`` is the device it
    sat in at the cutoff (since some earlier, unknown date; empty: none known then, ``unknown``). The answer
    becomes that device, with ``previous_imei`` unknown, and ``last_change`` the one the last audit recorded
    when that audit saw the same device (else unknown, so :func:`audit_sim` compares the devices only).

    Limit: the platform keeps one previous device. A SIM that changed twice after the cutoff (A -> B -> C) is
    taken as in B at the cutoff, so a rerun of that night reports A -> B as ``changed``; a SIM that changed
    within the night and again after it is still ``changed`` in a rerun, with its date unknown.

    >>> cutoff = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    >>> later = {"iccid": "8925401000000000001", "current_imei": "359827041234569",
    ...          "last_change": "2026-03-02T10:00:00+00:00", "previous_imei": "862057041234566", "error": ""}
    >>> seen = Seen("8925401000000000001", "862057041234566", "2026-01-05T08:00:00+00:00")
    >>> at_cutoff(later, seen, cutoff)["current_imei"], at_cutoff(later, seen, cutoff)["last_change"]
    ('862057041234566', '2026-01-05T08:00:00+00:00')
    >>> audit_sim(seen, at_cutoff(later, seen, cutoff), None, cutoff - dt.timedelta(days=1))[0]  # not this night
    []
    >>> at_cutoff({**later, "last_change": "2026-03-01T23:59:59+00:00"}, seen, cutoff)["current_imei"]  # before
    '359827041234569'
    """
    moment = None if answer.get("error") else _moment(answer.get("last_change") or None)
    if moment is None or moment < cutoff:
        return answer  # as it is (not a copy: a million SIMs a night pass through here)
    device = answer.get("previous_imei") or ""
    known = previous.last_change if previous is not None and previous.imei == device and device else None
    return {**answer, "current_imei": device, "previous_imei": "", "last_change": known or ""}


def unchanged(previous: Seen, answer: Mapping[str, str], cutoff: dt.datetime | None) -> bool:
    """
    True for the usual SIM of a night: the platform answers the device and the ``last_change`` the last audit
    recorded, that change is before the cutoff, and the fleet file expects that device or none. For such a SIM
    :func:`at_cutoff` keeps the answer and :func:`audit_sim` reports nothing and records ``previous`` again, so
    the diff need not call them (most of a million SIMs a night). Anything else, such as an IMEISV to turn into
    an IMEI or a date written another way, is False: left to them.

    :param previous: the last successful audit's row for the SIM.
    :param answer: the night's row for the SIM (the query columns and the fleet file's ``expected_imei``).
    :param cutoff: the night's cutoff, or None (every answer taken as it is).

    >>> seen = Seen("8925401000000000001", "359827041234569", "2026-01-05T08:00:00+00:00")
    >>> answer = {"iccid": seen.iccid, "current_imei": seen.imei, "last_change": seen.last_change, "error": ""}
    >>> unchanged(seen, answer, dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    True
    >>> unchanged(seen, {**answer, "expected_imei": "862057041234566"}, None)  # an inventory mismatch
    False
    """
    if answer.get("error"):
        return False
    imei, last_change = answer.get("current_imei"), answer.get("last_change") or None
    if not imei or imei != previous.imei or last_change != previous.last_change:
        return False
    expected = answer.get("expected_imei")
    if expected and expected != imei:
        return False
    return last_change is None or cutoff is None or dt.datetime.fromisoformat(last_change) < cutoff  # at_cutoff's test


def baseline(answer: Mapping[str, str], since: dt.datetime, cutoff: dt.datetime | None) -> Seen | None:
    """
    :func:`unchanged` for a SIM the last audit has no row for (the first audit, a SIM new to the fleet file):
    the row its state starts with when it has nothing to report, or None to leave it to :func:`at_cutoff` and
    :func:`audit_sim`. That is the usual such SIM: the platform knows its device, dates its last change before
    ``since`` (or not at all), and the fleet file expects that device or none.

    :param answer: the night's row for the SIM (the query columns and the fleet file's ``expected_imei``).
    :param since: the night's ``since`` (see :func:`audit_sim`); ``cutoff``: as for :func:`unchanged`.

    >>> answer = {"iccid": "8925401000000000001", "current_imei": "359827041234569",
    ...           "last_change": "2026-01-05T08:00:00+00:00", "error": ""}
    >>> baseline(answer, dt.datetime(2026, 3, 1, tzinfo=dt.UTC), None)
    Seen(iccid='8925401000000000001', imei='359827041234569', last_change='2026-01-05T08:00:00+00:00')
    >>> baseline(answer, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), None) is None  # a change this night: reported
    True
    """
    imei, last_change = answer.get("current_imei"), answer.get("last_change") or None
    if answer.get("error") or not imei:
        return None
    expected = answer.get("expected_imei")
    if expected and expected != imei:
        return None
    if last_change is not None:
        moment = dt.datetime.fromisoformat(last_change)
        if moment.tzinfo is None or moment >= since or (cutoff is not None and moment >= cutoff):
            return None
    return Seen(answer["iccid"], imei, last_change)


# ---------------------------------------------------------------------------------------------- input rules
def _is_iccid(value: str) -> bool:
    """The audit's ICCID rule: 18 to 22 ASCII digits, as written (fleet rows and state rows are keyed by it)."""
    return MIN_LENGTH <= len(value) <= MAX_LENGTH and value.isdigit() and value.isascii()


def _iccid_error(value: str) -> str:
    """What is wrong with an ICCID :func:`_is_iccid` refused."""
    if not value:
        return "iccid: the cell is empty"
    return f"iccid {value[:30]!r}: must be {MIN_LENGTH} to {MAX_LENGTH} digits"


def expected_imei(value: str | None) -> str | None:
    """
    The fleet file's ``expected_imei`` as a 15-digit IMEI (a 16-digit IMEISV is turned into one); None if empty.

    >>> expected_imei("3598270412345612")
    '359827041234561'
    >>> expected_imei("35982704")
    Traceback (most recent call last):
        ...
    ValueError: must be 15 digits (an IMEI) or 16 (an IMEISV), got 8 characters
    """
    if value is not None and len(value) == 15 and value.isdigit() and value.isascii():
        return value  # an IMEI as it is: the common case first (the report asks for each of a million rows)
    value = (value or "").strip()
    if not value:
        return None
    if not (value.isdigit() and value.isascii() and len(value) in (15, 16)):
        raise ValueError(f"must be 15 digits (an IMEI) or 16 (an IMEISV), got {len(value)} characters")
    return value if len(value) == 15 else normalize_imei(value)  # an IMEISV turned into an IMEI


def checked_fleet(
    lines: Iterable[tuple[int, Sequence[str]]], header: Sequence[str], source: str
) -> Iterator[Sequence[str]]:
    """
    Yield each fleet row's cells, checking them: an ICCID of 18 to 22 digits, an ``expected_imei`` that is empty
    or an IMEI. Row by row, holding nothing: that each ICCID is listed once is checked on the sorted batch
    files (:mod:`airflow_provider_m2m.fleet_audit.plan`).

    :param lines: the fleet file's rows as ``(line number, cells)``, cells stripped
        (:func:`~airflow_provider_m2m.utils.fleet_file.read_fleet_lines`).
    :param header: the columns (an ``iccid`` one; a name given twice: its last cell counts, as in a dict).
    :param source: the file's name, for the messages.
    :raises InvalidRequestError: naming the file, the line and the rule.

    >>> lines = [(2, ["8925401000000000001", "a"]), (4, ["89254010000000000O2", "b"])]  # line 3 was blank
    >>> list(checked_fleet(lines, ["iccid", "asset_name"], "fleet.csv"))
    Traceback (most recent call last):
        ...
    airflow_provider_m2m.exceptions.InvalidRequestError: fleet file fleet.csv line 4: iccid '89254010000000000O2': \
must be 18 to 22 digits
    """
    where = {name: n for n, name in enumerate(header)}
    at, imei_at = where["iccid"], where.get("expected_imei")
    for line, cells in lines:
        iccid = cells[at]
        if not _is_iccid(iccid):  # the message is made only for a bad row: a million rows a night
            raise InvalidRequestError(f"fleet file {source} line {line}", _iccid_error(iccid))
        if imei_at is not None:
            try:
                expected_imei(cells[imei_at])
            except ValueError as exc:
                raise InvalidRequestError(f"fleet file {source} line {line}", f"expected_imei: {exc}") from None
        yield cells


def read_state(
    lines: Iterable[Sequence[str]], source: str, *, checked: bool = False, start: str = ""
) -> Iterator[Seen]:
    """
    Yield the rows of an audit state file, checking them: its columns, an ICCID per row in ascending order,
    an IMEI of 15 digits or empty, ``last_change`` in ISO 8601 with an offset or empty.

    :param lines: the state file's lines as lists of cells, the header first (line 1).
    :param source: the file's name, for the messages.
    :param checked: the file was read through with every check earlier this night (and has not changed since):
        only the columns and the ICCIDs' order are checked (a merge-join relies on that order).
    :param start: yield only the rows from this ICCID on (a batch's range); the rows before it are only checked
        to be in order, so a read that starts late finds every row of its range.
    :raises InvalidRequestError: naming the file, the line and the rule (the audit cannot be trusted without
        its previous state: restore or delete the file, then rerun).

    >>> list(read_state([["iccid", "imei", "last_change"], ["8925401000000000001", "", ""]], "state.csv.gz"))
    [Seen(iccid='8925401000000000001', imei=None, last_change=None)]
    >>> list(read_state([["iccid", "imei", "last_change"], ["8925401000000000001", "35982704", ""]], "s.csv.gz"))
    Traceback (most recent call last):
        ...
    airflow_provider_m2m.exceptions.InvalidRequestError: audit state s.csv.gz line 2: imei '35982704': must be \
15 digits or empty
    """
    before = ""
    line = 0  # the header is line 1: a stream unreadable from the start fails there
    try:
        for line, values in enumerate(lines, start=1):  # ``line`` names the bad line in the except
            if line == 1:
                if tuple(values) != STATE_COLUMNS:
                    raise ValueError(f"the columns must be {','.join(STATE_COLUMNS)}, got {','.join(values)}")
                continue
            iccid, imei, last_change = values  # as wide as the header: the reader checks each row
            if before < iccid < start:  # before the range asked for, in order: nothing else to check or make
                before = iccid
                continue
            if not checked and not _is_iccid(iccid):
                raise ValueError(_iccid_error(iccid))
            if iccid <= before:
                raise ValueError(f"iccid {iccid} is out of order: the rows must be sorted by iccid, each once")
            if not checked:
                if imei and not (imei.isdigit() and imei.isascii() and len(imei) == 15):
                    raise ValueError(f"imei {imei[:30]!r}: must be 15 digits or empty")
                moment = _moment(last_change)
                if moment is not None and moment.tzinfo is None:
                    raise ValueError(f"last_change {last_change!r}: must carry a UTC offset")
            before = iccid
            yield Seen(iccid, imei or None, last_change or None)
    except csv.Error as exc:  # met while reading the next row (a stray quote, a row of another width)
        raise InvalidRequestError(f"audit state {source} line {line + 1}", str(exc)) from None
    except ValueError as exc:  # a rule this row broke
        raise InvalidRequestError(f"audit state {source} line {line}", str(exc)) from None
    except (OSError, EOFError) as exc:  # a truncated or corrupt gzip stream, met while reading the next line
        rule = f"unreadable ({exc or type(exc).__name__}): must be a gzip-compressed CSV"
        raise InvalidRequestError(f"audit state {source} line {line + 1}", rule) from None
