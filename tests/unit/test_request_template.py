"""sim_insight.request_template: the batch's per-SIM request bytes are exactly build_request's."""

from __future__ import annotations

import pytest

from airflow_provider_m2m.protocol import sim_insight


@pytest.mark.parametrize("password", ["pw", 'a&b<c>"d\r', "x" + sim_insight._SLOT])
@pytest.mark.parametrize("value", ["8925401000000000012", "89&<x>", "８９２５"])
def test_template_matches_build_request(password, value):
    creds = {"api_id": "1234", "username": "user", "password": password}
    build = sim_insight.request_template("query_imei", **creds, field="iccid")
    assert build(value) == sim_insight.build_request("query_imei", **creds, fields=[("iccid", value)])
