"""
Deterministic fake SIM fleet served by the sandbox.

The same ``size`` and ``seed`` always give the same ICCIDs, IMEIs, MSISDNs and hashes; the ``anchor``
only moves the times (every time is drawn as an offset before the anchor).
"""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from stdnum import luhn

ICCID_PREFIX = "8925401"
REGISTRATION_NOTE = "MSISDN registration is more than one year old"
SWAP_SENTINEL = "01-01-1900"

# Realistic Type Allocation Codes (8 digits) of IoT modules and phones.
_TACS = (
    "35982704",  # from the SIM Insight documentation example
    "86205704",  # from the SIM Insight documentation example
    "35332811",
    "35145120",
    "86723104",
    "35209911",
    "86695803",
    "35473610",
    "86414104",
    "01326300",
)

#: Indexes of the fixed SIM edge cases (see :class:`Fleet`).
EDGE_CASES: dict[str, int] = {
    "interval_start": 0,
    "interval_end": 1,
    "just_before": 2,
    "last_second": 3,
    "unknown": 4,
    "never_changed": 5,
    "imeisv": 6,
}

#: Indexes of the fixed Daraja edge cases (see :class:`Fleet`).
SWAP_EDGE_CASES: dict[str, int] = {
    "swapped_1_day_ago": 0,
    "swapped_89_days_ago": 1,
    "no_swap": 2,
    "registration_note": 3,
}


#: What becomes of an SMS to a SIM, by share of the fleet: delivered after the sandbox's delivery delay,
#: pending for good (the device is off; the real platform keeps trying for 72 hours), or failed after
#: the delay. Drawn per ICCID from a hash, so the fleet's identifiers do not move.
SMS_FATES: tuple[tuple[str, int], ...] = (("delivered", 80), ("pending", 12), ("failed", 8))

_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_digit(digits: str) -> str:
    """Luhn check digit of ``digits``; the same as ``stdnum.luhn.calc_check_digit``, about 5x faster."""
    total = 0
    double = True
    for ch in reversed(digits):
        d = ord(ch) - 48
        total += _DOUBLED[d] if double else d
        double = not double
    return str(-total % 10)


def midnight_utc(now: datetime | None = None) -> datetime:
    """Return today's (or ``now``'s) midnight in UTC as an aware datetime."""
    now = now or datetime.now(UTC)
    now = now.astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def imeisv_to_imei(value: str) -> str:
    """Turn a 16-digit IMEISV into the 15-digit IMEI (14 digits + Luhn check digit); else unchanged."""
    if value and len(value) == 16 and value.isdigit():
        return value[:14] + luhn.calc_check_digit(value[:14])
    return value


@dataclass(frozen=True, slots=True)
class SimRecord:
    """
    One SIM of the fleet, as SIM Insight serves it.

    :param iccid: 19 digits, Luhn-valid, starting with ``8925401``.
    :param msisdn: 12 digits ``2547XXXXXXXX`` / ``2541XXXXXXXX``.
    :param asset_name: the asset the SIM sits in, e.g. ``truck-0042``.
    :param current_imei: the IMEI as served (15 digits, or a 16-digit IMEISV), or None when unknown.
    :param last_change: aware UTC datetime of the last IMEI change (first-seen time for a SIM that never
        changed), or None when unknown.
    :param previous_imei: the IMEI before the change, or None.
    :param kind: ``recent`` (changed in the last day), ``old``, ``never`` or ``unknown``.
    """

    iccid: str
    msisdn: str
    asset_name: str
    current_imei: str | None
    last_change: datetime | None
    previous_imei: str | None
    kind: str = "old"

    @property
    def normalized_imei(self) -> str | None:
        """The current IMEI as a client must return it (IMEISV turned into a 15-digit IMEI)."""
        return imeisv_to_imei(self.current_imei) if self.current_imei else None


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """
    A device change the sandbox makes after the anchor (see ``Fleet(timeline_days=...)``).

    :param iccid: the SIM.
    :param at: the platform's ``last_change`` for it (aware UTC).
    :param imei: the device after the change.
    :param previous_imei: the device before it, or None (a first sighting).
    :param recorded: when the platform starts answering it: ``at``, or later for a network that records late.
    :param label: ``move``, ``first_sighting``, ``back`` (the return of an A -> B -> A), ``boundary`` (at a
        midnight) or ``late`` (recorded the next day).
    """

    iccid: str
    at: datetime
    imei: str
    previous_imei: str | None
    recorded: datetime
    label: str = "move"


@dataclass(frozen=True, slots=True)
class SwapRecord:
    """
    Daraja's view of one MSISDN.

    :param msisdn: 12 digits.
    :param last_swap: date of the last SIM swap in the last 3 months, or None (served as the
        ``01-01-1900`` sentinel).
    :param registration: registration date, or None when the note is served instead.
    :param registration_note: the "more than one year old" sentence, or None.
    :param imsi_hash: the 16-digit hashed IMSI.
    :param last_swap_text: the exact ``lastSwapDate`` string served.
    :param registration_text: the exact ``msisdnRegistrationDate`` string served.
    """

    msisdn: str
    last_swap: date | None
    registration: date | None
    registration_note: str | None
    imsi_hash: str
    last_swap_text: str = SWAP_SENTINEL
    registration_text: str = REGISTRATION_NOTE


#: Numbers from the Daraja IMSI API documentation, answered by every sandbox whatever its fleet, so that the
#: documentation's (and the README's) examples work as copied. ``254722000000`` is the documented request; its
#: answer uses the documented sample hash and registration date, and "no swap in the last 3 months"
#: (``01-01-1900 00:00``, the spec table's own example), so a screen of it passes.
DOCUMENTATION_SWAPS: dict[str, SwapRecord] = {
    "254722000000": SwapRecord(
        msisdn="254722000000",
        last_swap=None,
        registration=date(2022, 3, 1),
        registration_note=None,
        imsi_hash="9233817055099406",
        last_swap_text=SWAP_SENTINEL + " 00:00",
        registration_text="01-03-2022",
    ),
}


def _digits(rng: random.Random, n: int) -> str:
    return f"{rng.randrange(10**n):0{n}d}"


def _imei(rng: random.Random) -> str:
    body = rng.choice(_TACS) + _digits(rng, 6)
    return body + luhn_digit(body)


class Fleet:
    """
    A deterministic fleet of SIMs plus their Daraja SIM-swap records.

    Kinds of SIM (drawn per index with ``random.Random(seed)``): about 10 % changed in the last day
    (``anchor - 24h <= last_change < anchor``), about 50 % changed 2-900 days before the anchor, about
    30 % never changed (``last_change`` = first-seen time, no previous IMEI), about 10 % nothing known.
    About 2 % of the known ones report a 16-digit IMEISV as ``current_imei``.

    Fixed SIM edge cases (``fleet.edge_cases`` maps name -> ICCID, ``EDGE_CASES`` name -> index):

    * 0 ``interval_start``: changed at exactly ``anchor - 24h`` (inside the last day, inclusive start)
    * 1 ``interval_end``: changed at exactly ``anchor`` (outside: the end is exclusive)
    * 2 ``just_before``: changed at ``anchor - 24h - 1s`` (just before the last day)
    * 3 ``last_second``: changed at ``anchor - 1s`` (inside)
    * 4 ``unknown``: nothing known (all elements empty)
    * 5 ``never_changed``: current IMEI and first-seen time, empty previous IMEI
    * 6 ``imeisv``: changed long ago, current IMEI served as a 16-digit IMEISV

    SMS delivery (:meth:`sms_fate`): about 80 % of SIMs get their messages delivered, 12 % never (the
    device is off), 8 % see them fail; ``fleet.sms_edge_cases`` maps each fate to the first SIM that has it.

    Fixed Daraja edge cases (``fleet.swap_edge_cases`` maps name -> MSISDN; the MSISDNs of SIMs 0-3):
    ``swapped_1_day_ago``, ``swapped_89_days_ago``, ``no_swap`` (``01-01-1900``) and
    ``registration_note`` (the "more than one year old" sentence instead of a date).

    :param size: number of SIMs.
    :param seed: seed of the generator; the same size and seed give the same identifiers.
    :param anchor: aware datetime, the END of "the last day"; default today's midnight UTC.
    :param timeline_days: days after the anchor during which devices change at known moments
        (:attr:`timeline`, served once the platform's "now" passes them: see :meth:`as_of`); 0 = none.

    Time (``timeline_days`` > 0): on each day ``d`` (``anchor + (d-1) days`` to ``anchor + d days``) about 2 % of
    the fleet moves to a new device, each SIM at most once; besides, on day 2 a SIM goes A -> B -> A and a SIM of
    unknown device is seen in its first one; on day 3 a SIM moves at exactly its midnight and one moves at 23:50
    but is recorded by the platform only the next day at 01:00. The sample fleet file's ``expected_imei`` column
    (:meth:`expected_imei`) is the current IMEI except for the 5 SIMs of :attr:`inventory_mismatches`.
    """

    def __init__(self, size: int = 1000, seed: int = 0, anchor: datetime | None = None, timeline_days: int = 0) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        if anchor is None:
            anchor = midnight_utc()
        elif anchor.tzinfo is None:
            raise ValueError("anchor must be timezone-aware")
        self.size = size
        self.seed = seed
        self.anchor: datetime = anchor.astimezone(UTC)
        self.sims: list[SimRecord] = []
        self.swaps: dict[str, SwapRecord] = {}
        self._generate()
        self.by_iccid: dict[str, SimRecord] = {s.iccid: s for s in self.sims}
        self.timeline_days = timeline_days
        self.timeline: list[DeviceChange] = self._timeline(timeline_days)
        self._changes: dict[str, list[DeviceChange]] = {}
        for change in sorted(self.timeline, key=lambda c: c.recorded):
            self._changes.setdefault(change.iccid, []).append(change)
        self.inventory_mismatches: list[str] = [
            sim.iccid for sim in self.sims[len(EDGE_CASES) :] if sim.kind in ("old", "never")
        ][:5]
        self.by_msisdn: dict[str, SimRecord] = {s.msisdn: s for s in self.sims}
        self.edge_cases: dict[str, str] = {name: self.sims[i].iccid for name, i in EDGE_CASES.items() if i < size}
        self.swap_edge_cases: dict[str, str] = {
            name: self.sims[i].msisdn for name, i in SWAP_EDGE_CASES.items() if i < size
        }
        self.sms_edge_cases: dict[str, str] = {}
        for sim in self.sims:
            self.sms_edge_cases.setdefault(self.sms_fate(sim.iccid), sim.iccid)
            if len(self.sms_edge_cases) == len(SMS_FATES):
                break

    # ------------------------------------------------------------------ generation
    def _generate(self) -> None:
        rng = random.Random(self.seed)
        anchor = self.anchor
        day = timedelta(days=1)
        iccids: set[str] = set()
        msisdns: set[str] = set()
        for i in range(self.size):
            while True:
                body = ICCID_PREFIX + _digits(rng, 11)
                iccid = body + luhn_digit(body)
                if iccid not in iccids:
                    iccids.add(iccid)
                    break
            while True:
                msisdn = rng.choice(("2547", "2541")) + _digits(rng, 8)
                if msisdn not in msisdns:
                    msisdns.add(msisdn)
                    break
            # Draw everything every time so the stream of draws never depends on the branch taken.
            roll = rng.random()
            cur = _imei(rng)
            prev = _imei(rng)
            recent_s = rng.randint(1, 86400)
            old_s = rng.randint(2 * 86400, 900 * 86400)
            imeisv = rng.random() < 0.02
            svn = f"{rng.randrange(100):02d}"
            if i < len(EDGE_CASES):
                kind, when = self._edge(i, anchor, day, old_s)
                imeisv = i == EDGE_CASES["imeisv"]
            elif roll < 0.10:
                kind, when = "recent", anchor - timedelta(seconds=recent_s)
            elif roll < 0.60:
                kind, when = "old", anchor - timedelta(seconds=old_s)
            elif roll < 0.90:
                kind, when = "never", anchor - timedelta(seconds=old_s)
            else:
                kind, when = "unknown", None
            if kind == "unknown":
                rec = SimRecord(iccid, msisdn, f"truck-{i:04d}", None, None, None, kind)
            else:
                served = cur[:14] + svn if imeisv else cur
                rec = SimRecord(iccid, msisdn, f"truck-{i:04d}", served, when, None if kind == "never" else prev, kind)
            self.sims.append(rec)
        self._generate_swaps()

    @staticmethod
    def _edge(i: int, anchor: datetime, day: timedelta, old_s: int) -> tuple[str, datetime | None]:
        one = timedelta(seconds=1)
        return {
            0: ("recent", anchor - day),
            1: ("old", anchor),  # "old" only in the sense of "not in the last day": it is just outside
            2: ("old", anchor - day - one),
            3: ("recent", anchor - one),
            4: ("unknown", None),
            5: ("never", anchor - timedelta(seconds=old_s)),
            6: ("old", anchor - timedelta(seconds=old_s)),
        }[i]

    def _generate_swaps(self) -> None:
        rng = random.Random(self.seed * 1_000_003 + 17)
        today = self.anchor.date()
        for i, sim in enumerate(self.sims):
            imsi_hash = _digits(rng, 16)
            swapped = rng.random() < 0.10
            swap_days = rng.randint(1, 89)
            note = rng.random() < 0.20
            reg_days = rng.randint(400, 5000)
            swap_fmt = rng.random() < 0.5
            reg_fmt = rng.random() < 0.5
            if i == 0:
                swapped, swap_days, note = True, 1, False
            elif i == 1:
                swapped, swap_days, note = True, 89, False
            elif i == 2:
                swapped, note = False, False
            elif i == 3:
                swapped, note = False, True
            last_swap = today - timedelta(days=swap_days) if swapped else None
            if last_swap is None:
                swap_text = SWAP_SENTINEL + (" 00:00" if swap_fmt else "")
            elif swap_fmt:
                swap_text = last_swap.strftime("%d-%m-%Y") + f" {rng.randrange(24):02d}:{rng.randrange(60):02d}"
            else:
                swap_text = last_swap.strftime("%d-%m-%Y")
            if note:
                registration, reg_text = None, REGISTRATION_NOTE
            else:
                registration = today - timedelta(days=reg_days)
                reg_text = registration.strftime("%Y-%m-%d" if reg_fmt else "%d-%m-%Y")
            self.swaps[sim.msisdn] = SwapRecord(
                sim.msisdn,
                last_swap,
                registration,
                REGISTRATION_NOTE if note else None,
                imsi_hash,
                swap_text,
                reg_text,
            )

    # ------------------------------------------------------------------ helpers
    @property
    def iccids(self) -> list[str]:
        """All ICCIDs in fleet order."""
        return [s.iccid for s in self.sims]

    @property
    def msisdns(self) -> list[str]:
        """All MSISDNs in fleet order."""
        return [s.msisdn for s in self.sims]

    def sms_fate(self, iccid: str) -> str:
        """
        What becomes of every SMS to ``iccid``: ``delivered``, ``pending`` (for good) or ``failed``.

        :param iccid: any ICCID (SIMs outside the fleet have a fate too).
        """
        draw = int.from_bytes(hashlib.sha256(f"{self.seed}:{iccid}".encode()).digest()[:4], "big") % 100
        for fate, share in SMS_FATES:
            if draw < share:
                return fate
            draw -= share
        raise AssertionError("SMS_FATES shares must add up to 100")

    def with_sms_fate(self, fate: str) -> list[str]:
        """The fleet's ICCIDs whose messages end ``fate``, in fleet order."""
        return [s.iccid for s in self.sims if self.sms_fate(s.iccid) == fate]

    def changed_between(self, start: datetime, end: datetime) -> list[SimRecord]:
        """
        The SIMs with ``start <= last_change < end`` (the test oracle; what a client filtering on the
        served ``last_change`` finds). Never-changed SIMs have first-seen times 2-900 days old.

        :param start: aware datetime, inclusive.
        :param end: aware datetime, exclusive.
        """
        return [s for s in self.sims if s.last_change is not None and start <= s.last_change < end]

    def _timeline(self, days: int) -> list[DeviceChange]:
        rng = random.Random(self.seed * 7919 + 4242)  # its own stream: the fleet's identifiers do not move
        known = [s for s in self.sims[len(EDGE_CASES) :] if s.current_imei and s.kind != "recent"]
        rng.shuffle(known)
        unknown = [s for s in self.sims[len(EDGE_CASES) :] if s.kind == "unknown"]
        day, changes = timedelta(days=1), []

        def change(sim, at, imei, label, recorded=None, previous=None):
            prev = previous if previous is not None else sim.current_imei
            changes.append(DeviceChange(sim.iccid, at, imei, prev, recorded or at, label))

        for d in range(1, days + 1):
            start = self.anchor + (d - 1) * day
            for _ in range(max(1, self.size // 50)):
                if known:
                    change(known.pop(), start + timedelta(seconds=rng.randint(60, 86340)), _imei(rng), "move")
            if d == 2 and known:
                sim, other = known.pop(), _imei(rng)
                change(sim, start + timedelta(hours=3), other, "move")
                change(sim, start + timedelta(hours=9), sim.current_imei, "back", previous=other)
            if d == 2 and unknown:
                sim = unknown.pop()
                changes.append(
                    DeviceChange(
                        sim.iccid,
                        start + timedelta(hours=5),
                        _imei(rng),
                        None,
                        start + timedelta(hours=5),
                        "first_sighting",
                    )
                )
            if d == 3 and len(known) >= 2:
                change(known.pop(), start, _imei(rng), "boundary")
                at = start + timedelta(hours=23, minutes=50)
                change(known.pop(), at, _imei(rng), "late", recorded=start + day + timedelta(hours=1))
        return changes

    def as_of(self, iccid: str, when: datetime) -> SimRecord:
        """The SIM as the platform answers it at ``when``: with the :attr:`timeline` changes recorded by then."""
        sim = self.by_iccid[iccid]
        for c in self._changes.get(iccid, ()):
            if c.recorded > when:
                break
            sim = SimRecord(sim.iccid, sim.msisdn, sim.asset_name, c.imei, c.at, c.previous_imei, sim.kind)
        return sim

    def expected_imei(self, iccid: str) -> str | None:
        """The sample fleet file's ``expected_imei``: the IMEI an inventory lists (see :attr:`inventory_mismatches`)."""
        sim = self.by_iccid[iccid]
        if iccid in self.inventory_mismatches:
            return _imei(random.Random(f"inventory-{iccid}"))
        return sim.normalized_imei

    def write_csv(self, path: str | Path) -> Path:
        """
        Write the fleet file users feed the DAGs: ``iccid,asset_name,msisdn,expected_imei`` with a header.

        :param path: destination file.
        """
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["iccid", "asset_name", "msisdn", "expected_imei"])
            for s in self.sims:
                w.writerow([s.iccid, s.asset_name, s.msisdn, self.expected_imei(s.iccid) or ""])
        return path

    def __len__(self) -> int:
        return len(self.sims)

    def __repr__(self) -> str:
        return f"Fleet(size={self.size}, seed={self.seed}, anchor={self.anchor.isoformat()})"
