"""
The fleet audit's rules (``airflow_provider_m2m.fleet_audit.rules``): the report's shortcuts for the usual SIM
(:func:`unchanged`, and :func:`baseline` for a SIM without a row) never say what :func:`at_cutoff` and
:func:`audit_sim` would not.
"""

from __future__ import annotations

import datetime as dt
import itertools

from airflow_provider_m2m.fleet_audit.rules import Seen, at_cutoff, audit_sim, baseline, expected_imei, unchanged

ICCID = "8925401000000000001"
A, B = "359827041234569", "862057041234566"  # two devices
IMEISV_OF_A = "3598270412345612"  # the fleet file may give an IMEISV: it stands for A
CUTOFF = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
SINCE = CUTOFF - dt.timedelta(days=1)
BEFORE = "2026-01-05T08:00:00+00:00"
BEFORE_IN_NAIROBI = "2026-01-05T11:00:00+03:00"  # the same instant, written another way
AFTER = "2026-03-02T10:00:00+00:00"  # a change after the night: it belongs to a later one
DURING = "2026-03-01T10:00:00+00:00"  # a change within the night: reported


def test_the_shortcut_for_an_unchanged_sim_agrees_with_the_rules_in_every_case():
    """Every combination of recorded row, answer, expected device and cutoff: where the shortcut says
    'unchanged', the rules report nothing and record the same row; and it does say so for the usual SIM."""
    previous_rows = [
        None,
        Seen(ICCID, None, None),
        Seen(ICCID, A, None),
        Seen(ICCID, A, BEFORE),
        Seen(ICCID, A, BEFORE_IN_NAIROBI),
        Seen(ICCID, A, AFTER),  # only a state not written by the audit holds a date after a later night
    ]
    taken = left = 0
    for previous, imei, last_change, previous_imei, error, expected, cutoff in itertools.product(
        previous_rows,
        ["", A, B],
        ["", BEFORE, BEFORE_IN_NAIROBI, AFTER],
        ["", B],
        ["", "timeout"],
        ["", A, B, IMEISV_OF_A, f" {A}"],
        [None, CUTOFF],
    ):
        answer = {
            "iccid": ICCID,
            "current_imei": imei,
            "last_change": last_change,
            "previous_imei": previous_imei,
            "error": error,
            "expected_imei": expected,
        }
        if previous is None or not unchanged(previous, answer, cutoff):  # no row: the diff asks the rules
            left += 1
            continue
        taken += 1
        row = at_cutoff(answer, previous, cutoff) if cutoff is not None else answer
        assert audit_sim(previous, row, expected_imei(expected), SINCE) == ([], previous), answer
    usual = {"iccid": ICCID, "current_imei": A, "last_change": BEFORE, "previous_imei": "", "error": ""}
    assert unchanged(Seen(ICCID, A, BEFORE), {**usual, "expected_imei": A}, CUTOFF)
    assert taken and left  # both ways: the test could fail either way


def test_the_shortcut_for_a_sim_without_a_row_agrees_with_the_rules_in_every_case():
    """Every combination of answer, expected device and cutoff for a SIM the last audit has no row for: where
    :func:`baseline` gives a row, the rules report nothing and record that row; and it does for the usual SIM."""
    taken = left = 0
    for imei, last_change, previous_imei, error, expected, cutoff in itertools.product(
        ["", A, B],
        ["", BEFORE, BEFORE_IN_NAIROBI, DURING, AFTER],
        ["", B],
        ["", "timeout"],
        ["", A, B, IMEISV_OF_A, f" {A}"],
        [None, CUTOFF],
    ):
        answer = {"iccid": ICCID, "current_imei": imei, "last_change": last_change, "previous_imei": previous_imei}
        answer |= {"error": error, "expected_imei": expected}
        row = baseline(answer, SINCE, cutoff)
        if row is None:
            left += 1
            continue
        taken += 1
        asked = at_cutoff(answer, None, cutoff) if cutoff is not None else answer
        assert audit_sim(None, asked, expected_imei(expected), SINCE) == ([], row), answer
    usual = {"iccid": ICCID, "current_imei": A, "last_change": BEFORE, "previous_imei": "", "error": ""}
    assert baseline({**usual, "expected_imei": ""}, SINCE, CUTOFF) == Seen(ICCID, A, BEFORE)
    assert taken and left
