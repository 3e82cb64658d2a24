"""The pure SIM status rules: the two spellings of one state, closed never settable, records read strictly."""

from __future__ import annotations

import pytest

from airflow_provider_m2m.exceptions import InvalidRequestError, ProtocolError
from airflow_provider_m2m.protocol import sim_status
from airflow_provider_m2m.protocol.sim_status import SimStatus, UsageRecord


@pytest.mark.parametrize(("given", "target", "word"), [("deactivated", "deactivated", "de-activated"),
                                                       ("De-Activated", "deactivated", "de-activated"),
                                                       (" ACTIVE ", "active", "active")])  # fmt: skip
def test_target_status_and_the_word_set_status_takes(given, target, word):
    assert sim_status.validate_target(given) == target
    assert sim_status.set_status_word(given) == word


@pytest.mark.parametrize(
    ("given", "rule"),
    [("closed", "closed is permanent"), ("suspended", "must be 'active' or 'deactivated'"), (None, "must be a string")],
)
def test_bad_target_status_names_the_field_and_the_rule(given, rule):
    with pytest.raises(InvalidRequestError, match=f"status: {rule}"):
        sim_status.validate_target(given)


def test_query_status_answers_are_read_in_any_case_and_unknown_words_refused():
    assert sim_status.sim_status("1" * 19, {"status": "Deactivated"}) == SimStatus("1" * 19, "deactivated")
    assert sim_status.sim_status("1" * 19, {"status": "CLOSED"}).status == "closed"
    assert sim_status.sim_status("1" * 19, {"status": None}).status is None
    with pytest.raises(ProtocolError, match="unknown status 'suspended'"):
        sim_status.sim_status("1" * 19, {"status": "suspended"})


def test_usage_figures_are_numbers_or_refused():
    fields = {"data_mb": "80.010", "sms": "5", "voice_mins": None}
    record = sim_status.usage_record("1" * 19, fields)
    assert record == UsageRecord("1" * 19, data_mb=80.01, sms=5, voice_mins=None)
    assert record.as_dict() == {"iccid": "1" * 19, "data_mb": 80.01, "sms": 5, "voice_mins": None, "error": None}
    with pytest.raises(ProtocolError, match="sms '5.5' is not a number"):
        sim_status.usage_record("1" * 19, {**fields, "sms": "5.5"})
