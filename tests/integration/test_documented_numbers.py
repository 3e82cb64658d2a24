"""The README's Daraja example, as a user copies it, against the bundled sandbox (issue: it answered 404)."""

from __future__ import annotations

import datetime as dt

from airflow_provider_m2m.hooks.daraja import DarajaHook


def test_readme_check_sim_swap_example_is_answered(sb):
    record = DarajaHook().check_sim_swap("0722000000")
    assert record.msisdn == "254722000000" and record.imsi_hash == "9233817055099406"
    assert record.last_swap_date is None  # the documented "01-01-1900": no swap in the last three months
    assert record.registration_date == dt.date(2022, 3, 1)
    assert sb.received("checkATI")[-1]["msisdn"] == "254722000000"
