"""Real-HTTP tests of the bundled sandbox server (no mocks)."""

from __future__ import annotations

import base64
import csv
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from lxml import etree
from stdnum import luhn

from airflow_provider_m2m.sandbox import (
    DOCUMENTATION_SWAPS,
    EDGE_CASES,
    SANDBOX_CREDENTIALS,
    Fleet,
    RemoteSandbox,
    Sandbox,
    SandboxControls,
)
from airflow_provider_m2m.sandbox.fleet import REGISTRATION_NOTE, luhn_digit

ANCHOR = datetime(2026, 11, 22, tzinfo=UTC)
C = SANDBOX_CREDENTIALS


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(fleet=300, anchor=ANCHOR) as sb:
        yield sb


@pytest.fixture
def sb(sandbox):
    sandbox.reset()
    sandbox.configure(**SANDBOX_CREDENTIALS)
    yield sandbox
    sandbox.reset()


@pytest.fixture
def http():
    with requests.Session() as s:
        yield s


def xml_request(command: str, body: str = "", *, password: str | None = None, api_id: str | None = None) -> bytes:
    return (
        f'<{command} version="1" api_id="{api_id or C["m2m_api_id"]}"><authentication>'
        f"<username>{C['m2m_username']}</username><password>{password or C['m2m_password']}</password>"
        f"</authentication>{body}</{command}>"
    ).encode()


def m2m(http, sb, command, body="", timeout=5, **kw):
    r = http.post(
        sb.url + "/",
        data=xml_request(command, body, **kw),
        headers={"Content-Type": "application/xml"},
        timeout=timeout,
    )
    return r


def parse(r) -> etree._Element:
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/xml")
    return etree.fromstring(r.content)


def send(http, sb, iccid, text, extra="", **kw):
    body = f"<iccid>{iccid}</iccid><message_text>{text}</message_text>{extra}"
    return m2m(http, sb, "send_sms", body, **kw)


def token(http, sb) -> str:
    r = http.get(
        sb.url + "/oauth/v1/generate",
        params={"grant_type": "client_credentials"},
        auth=(C["daraja_key"], C["daraja_secret"]),
        timeout=5,
    )
    assert r.status_code == 200
    return r.json()["access_token"]


def check(http, sb, number, tok):
    return http.post(
        sb.url + "/imsi/v1/checkATI",
        json={"customerNumber": number},
        headers={"Authorization": f"Bearer {tok}"},
        timeout=5,
    )


# ---------------------------------------------------------------------- fleet
def test_fleet_deterministic_and_valid():
    a, b = Fleet(500, seed=3, anchor=ANCHOR), Fleet(500, seed=3, anchor=ANCHOR + timedelta(days=5))
    assert [s.iccid for s in a.sims] == [s.iccid for s in b.sims]
    assert [s.current_imei for s in a.sims] == [s.current_imei for s in b.sims]
    assert [s.msisdn for s in a.sims] == [s.msisdn for s in b.sims]
    assert all(
        (y.last_change - x.last_change) == timedelta(days=5)
        for x, y in zip(a.sims, b.sims, strict=True)
        if x.last_change
    )
    assert [s.iccid for s in Fleet(500, seed=4, anchor=ANCHOR).sims] != [s.iccid for s in a.sims]
    assert len(set(a.iccids)) == 500 and len(set(a.msisdns)) == 500
    for s in a.sims:
        assert len(s.iccid) == 19 and s.iccid.startswith("8925401") and luhn.is_valid(s.iccid)
        assert len(s.msisdn) == 12 and s.msisdn[:4] in ("2547", "2541")
        for imei in (s.current_imei, s.previous_imei):
            if imei and len(imei) == 15:
                assert luhn.is_valid(imei)
        if s.current_imei and len(s.current_imei) == 16:
            assert luhn.is_valid(s.normalized_imei)
    kinds = [s.kind for s in a.sims]
    assert 20 < kinds.count("recent") < 90 and 20 < kinds.count("unknown") < 90
    for digits in ("1", "7992739871", "26053179311383", "8925401000000000"):
        assert luhn_digit(digits) == luhn.calc_check_digit(digits)


def test_fleet_edge_cases_and_oracle(tmp_path):
    f = Fleet(200, anchor=ANCHOR)
    e = {name: f.by_iccid[iccid] for name, iccid in f.edge_cases.items()}
    assert set(e) == set(EDGE_CASES)
    day = timedelta(days=1)
    assert e["interval_start"].last_change == ANCHOR - day
    assert e["interval_end"].last_change == ANCHOR
    assert e["just_before"].last_change == ANCHOR - day - timedelta(seconds=1)
    assert e["last_second"].last_change == ANCHOR - timedelta(seconds=1)
    assert e["unknown"].current_imei is None and e["unknown"].last_change is None
    assert e["never_changed"].previous_imei is None and e["never_changed"].current_imei
    assert len(e["imeisv"].current_imei) == 16
    changed = {s.iccid for s in f.changed_between(ANCHOR - day, ANCHOR)}
    assert e["interval_start"].iccid in changed and e["last_second"].iccid in changed
    assert e["interval_end"].iccid not in changed and e["just_before"].iccid not in changed
    assert changed == {s.iccid for s in f.sims if s.kind == "recent"}
    sw = {name: f.swaps[m] for name, m in f.swap_edge_cases.items()}
    assert sw["swapped_1_day_ago"].last_swap == ANCHOR.date() - day
    assert sw["swapped_89_days_ago"].last_swap == ANCHOR.date() - 89 * day
    assert sw["no_swap"].last_swap is None and sw["no_swap"].last_swap_text.startswith("01-01-1900")
    assert sw["registration_note"].registration_text == REGISTRATION_NOTE
    path = f.write_csv(tmp_path / "fleet.csv")
    rows = list(csv.DictReader(path.open()))
    first = f.sims[0]
    assert rows[0] == {
        "iccid": first.iccid,
        "asset_name": "truck-0000",
        "msisdn": first.msisdn,
        "expected_imei": first.normalized_imei,
    }
    assert len(rows) == 200
    mismatched = {
        row["iccid"] for row in rows if row["expected_imei"] != (f.by_iccid[row["iccid"]].normalized_imei or "")
    }
    assert mismatched == set(f.inventory_mismatches) and len(mismatched) == 5


# ---------------------------------------------------------------------- SIM Insight
def test_query_imei_each_kind(sb, http):
    f = sb.fleet
    samples = dict.fromkeys(["recent", "old", "never", "unknown"])
    for s in f.sims[7:]:
        samples[s.kind] = samples[s.kind] or s
    samples["imeisv"] = f.by_iccid[f.edge_cases["imeisv"]]
    for sim in samples.values():
        root = parse(m2m(http, sb, "query_imei", f"<iccid>{sim.iccid}</iccid>"))
        assert root.tag == "query_imei_response" and root.get("api_id") == C["m2m_api_id"]
        assert root.findtext("api_outcome") == "success"
        assert (root.findtext("current_imei") or None) == sim.current_imei
        assert (root.findtext("previous_imei") or None) == sim.previous_imei
        lc = root.findtext("last_change")
        expected = sim.last_change.strftime("%d/%m/%Y %H:%M:%S") if sim.last_change else ""
        assert lc == expected
        for tag in ("current_imei", "last_change", "previous_imei"):
            assert root.find(tag) is not None
    assert (
        len(parse(m2m(http, sb, "query_imei", f"<iccid>{samples['imeisv'].iccid}</iccid>")).findtext("current_imei"))
        == 16
    )
    st = sb.stats()
    assert st["by_command"]["query_imei"] == 6 and st["imei_queries_per_iccid"][samples["imeisv"].iccid] == 2


def test_m2m_failures(sb, http):
    iccid = sb.fleet.sims[10].iccid
    root = parse(m2m(http, sb, "query_imei", "<iccid>8925401000000000000</iccid>"))
    assert root.findtext("api_outcome") == "failure" and root.findtext("error_description") == "invalid iccid"
    root = parse(m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>", password="wrong"))
    assert root.findtext("error_description") == "authentication failed"
    root = parse(m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>", api_id="999"))
    assert root.findtext("error_description") == "authentication failed"
    root = parse(m2m(http, sb, "frobnicate", f"<iccid>{iccid}</iccid>"))
    assert root.findtext("error_description") == "invalid content"
    r = http.post(sb.url + "/", data=b"<query_imei><oops", headers={"Content-Type": "application/xml"})
    assert parse(r).findtext("error_description") == "invalid content"
    # XXE: the entity is not resolved, the request is answered as usual
    xxe = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + xml_request(
        "query_imei", "<iccid>&e;</iccid>"
    )
    r = http.post(sb.url + "/", data=xxe, headers={"Content-Type": "application/xml"})
    assert b"root:" not in r.content and parse(r).findtext("api_outcome") == "failure"


def test_send_sms_store_and_details(sb, http):
    iccid = sb.fleet.sims[20].iccid
    root = parse(m2m(http, sb, "query_sms_mt_details", f"<iccid>{iccid}</iccid><lastx>5</lastx>"))
    assert [len(e) for e in root.findall("sms")] == [0]
    root = parse(send(http, sb, iccid, "first", "<sms_uid>uid1</sms_uid><origin>4477</origin>"))
    assert root.findtext("api_outcome") == "success" and root.findtext("sms_uid") == "uid1"
    tricky = "line1&#13;\nline2 €{}[]~|^ ñÄ@$"
    root = parse(send(http, sb, iccid, tricky, "<data_coding>default</data_coding>"))
    uid2 = root.findtext("sms_uid")
    assert len(uid2) == 12 and uid2.isalnum()
    root = parse(m2m(http, sb, "query_sms_mt_details", f"<iccid>{iccid}</iccid><lastx>5</lastx>"))
    sms = root.findall("sms")
    assert [s.findtext("sms_uid") for s in sms] == [uid2, "uid1"]
    assert sms[0].findtext("message_text") == "line1\r\nline2 €{}[]~|^ ñÄ@$"
    assert sms[0].findtext("status") == "pending" and sms[0].findtext("origin") == "api"  # just sent
    datetime.strptime(sms[0].findtext("sent_timestamp"), "%d/%m/%Y %H:%M:%S")
    root = parse(m2m(http, sb, "query_sms_mt_details", f"<iccid>{iccid}</iccid>"))
    assert len(root.findall("sms")) == 1
    assert sb.stats()["sms_per_iccid"] == {iccid: 2}
    rec = sb.received("send_sms")
    assert rec[1]["message_text"] == "line1\r\nline2 €{}[]~|^ ñÄ@$" and rec[0]["origin"] == "4477"


def test_sms_delivery_model(sb, http):
    fleet = sb.fleet
    fates = {iccid: fleet.sms_fate(iccid) for iccid in fleet.iccids}
    assert fates == {iccid: Fleet(300, anchor=ANCHOR).sms_fate(iccid) for iccid in fleet.iccids}  # deterministic
    shares = {
        fate: sum(1 for f in fates.values() if f == fate) / len(fates) for fate in ("delivered", "pending", "failed")
    }
    assert 0.7 < shares["delivered"] < 0.9 and 0.05 < shares["pending"] < 0.2 and 0.03 < shares["failed"] < 0.15
    assert {fates[iccid] for iccid in fleet.sms_edge_cases.values()} == {"delivered", "pending", "failed"}
    assert all(fates[i] == "pending" for i in fleet.with_sms_fate("pending"))
    sb.configure(sms_delivery_delay=0.5)
    for fate, iccid in fleet.sms_edge_cases.items():
        parse(send(http, sb, iccid, "hi", f"<sms_uid>{fate[:4]}1</sms_uid>"))

    def statuses():
        found = {}
        for fate, iccid in fleet.sms_edge_cases.items():
            root = parse(m2m(http, sb, "query_sms_mt_details", f"<iccid>{iccid}</iccid>"))
            found[fate] = (root.findtext("sms/status"), root.findtext("sms/delivered_timestamp") or None)
        return found

    assert statuses() == {fate: ("pending", None) for fate in fleet.sms_edge_cases}
    time.sleep(0.6)
    after = statuses()
    assert (after["failed"], after["pending"]) == (("failed", None), ("pending", None))
    assert after["delivered"][0] == "delivered"
    datetime.strptime(after["delivered"][1], "%d/%m/%Y %H:%M:%S")


@pytest.mark.parametrize(
    "text, extra",
    [
        ("a" * 161, ""),
        ("{" * 81, ""),
        ("héllo ’", ""),
        ("ok", "<data_coding>utf8</data_coding>"),
        ("ok", "<sms_uid>too-long-uid-123</sms_uid>"),
        ("ok", "<origin>+44</origin>"),
        ("not base64!", "<data_coding>binary</data_coding>"),
        (base64.b64encode(b"x" * 121).decode(), "<data_coding>binary</data_coding>"),
    ],
)
def test_send_sms_invalid_content(sb, http, text, extra):
    iccid = sb.fleet.sims[21].iccid
    root = parse(send(http, sb, iccid, text, extra))
    assert root.findtext("error_description") == "invalid content"
    assert sb.stats()["sms_per_iccid"] == {}


def test_send_sms_limits_ok(sb, http):
    iccid = sb.fleet.sims[22].iccid
    for text, extra in (
        ("a" * 160, ""),
        ("€" * 80, ""),
        (base64.b64encode(b"\x00" * 120).decode(), "<data_coding>binary</data_coding>"),
    ):
        assert parse(send(http, sb, iccid, text, extra)).findtext("api_outcome") == "success"
    assert parse(send(http, sb, "8925401000000000000", "x")).findtext("error_description") == "invalid iccid"


# ---------------------------------------------------------------------- Daraja
def test_daraja_token_and_check(sb, http):
    tok = token(http, sb)
    assert len(tok) >= 28
    r = http.get(sb.url + "/oauth/v1/generate?grant_type=client_credentials", auth=(C["daraja_key"], "x"))
    assert r.status_code == 400 and r.content == b""
    r = http.get(sb.url + "/oauth/v1/generate", auth=(C["daraja_key"], C["daraja_secret"]))
    assert r.status_code == 400 and r.json()["errorCode"]
    r = http.get(
        sb.url + "/oauth/v1/generate?grant_type=client_credentials", auth=(C["daraja_key"], C["daraja_secret"])
    )
    assert r.json()["expires_in"] == "3599"
    assert check(http, sb, sb.fleet.sims[0].msisdn, tok).status_code == 401, "the app's new token killed the old"
    tok = r.json()["access_token"]
    for name, msisdn in sb.fleet.swap_edge_cases.items():
        r = check(http, sb, msisdn, tok)
        assert r.status_code == 200, name
        body = r.json()
        swap = sb.fleet.swaps[msisdn]
        assert body["responseCode"] == "200" and body["customerNumber"] == msisdn
        assert body["imsi"] == swap.imsi_hash and len(body["imsi"]) == 16
        assert body["lastSwapDate"] == swap.last_swap_text
        assert body["msisdnRegistrationDate"] == swap.registration_text
    r = check(http, sb, "0712345678", tok)
    assert r.status_code == 400 and r.json()["errorCode"] == "400.002.02"
    r = check(http, sb, "254700000000", tok)
    assert r.status_code == 404 and r.json()["errorCode"] == "404.001.01"
    r = check(http, sb, sb.fleet.sims[0].msisdn, "bogus")
    assert r.status_code == 401 and r.json()["errorCode"] == "404.001.03"
    sb.revoke_tokens()
    r = check(http, sb, sb.fleet.sims[0].msisdn, tok)
    assert r.status_code == 401 and r.json()["errorMessage"] == "Invalid Access Token"
    st = sb.stats()
    assert st["tokens_issued"] == 2 and st["checks_per_msisdn"][sb.fleet.sims[0].msisdn] == 1
    assert st["by_command"]["checkATI"] == 9 and st["by_command"]["oauth"] == 4
    assert st["tokens_issued_per_app"] == {C["daraja_key"]: 2}


def test_daraja_one_live_token_per_app(sb, http):
    """Daraja's FAQ: "each request invalidates the previous token" of the app; on by default, a knob turns it off."""
    number = sb.fleet.sims[0].msisdn
    first, second = token(http, sb), token(http, sb)
    r = check(http, sb, number, first)
    assert r.status_code == 401 and r.json()["errorCode"] == "404.001.03"
    assert check(http, sb, number, second).status_code == 200
    assert sb.stats()["tokens_issued_per_app"] == {C["daraja_key"]: 2}
    # Another app (consumer key) has its own live token: issuing one does not touch the first app's.
    sb.configure(daraja_key="another-app-key")
    try:
        r = http.get(
            sb.url + "/oauth/v1/generate?grant_type=client_credentials", auth=("another-app-key", C["daraja_secret"])
        )
        assert r.status_code == 200 and check(http, sb, number, r.json()["access_token"]).status_code == 200
        assert check(http, sb, number, second).status_code == 200
        assert sb.stats()["tokens_issued_per_app"] == {C["daraja_key"]: 2, "another-app-key": 1}
    finally:
        sb.configure(daraja_key=C["daraja_key"])
    sb.configure(one_live_token=False)  # what the sandbox did before: every token lives its full life
    third, fourth = token(http, sb), token(http, sb)
    assert [check(http, sb, number, t).status_code for t in (third, fourth)] == [200, 200]
    sb.reset()
    assert check(http, sb, number, token(http, sb)).status_code == 200
    assert check(http, sb, number, fourth).status_code == 401, "reset restores the rule"


def test_daraja_token_expiry(sb, http):
    sb.configure(token_ttl=1)
    r = http.get(
        sb.url + "/oauth/v1/generate?grant_type=client_credentials", auth=(C["daraja_key"], C["daraja_secret"])
    )
    assert r.json()["expires_in"] == "1"
    tok = r.json()["access_token"]
    assert check(http, sb, sb.fleet.sims[5].msisdn, tok).status_code == 200
    time.sleep(1.1)
    r = check(http, sb, sb.fleet.sims[5].msisdn, tok)
    assert r.status_code == 401 and r.json()["errorCode"] == "404.001.03"


# ---------------------------------------------------------------------- faults
def test_fault_status_kinds(sb, http):
    iccid = sb.fleet.sims[30].iccid
    sb.inject("503", count=2, retry_after=3)
    for _ in range(2):
        r = m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>")
        assert r.status_code == 503 and r.headers["Retry-After"] == "3"
    assert m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>").status_code == 200
    sb.inject("429", count=1)
    r = m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    for kind in ("502", "504"):
        sb.inject(kind, count=1)
        assert m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>").status_code == int(kind)
    sb.inject("malformed", count=1)
    r = m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>")
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(r.content)
    sb.inject("html", count=1)
    r = m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    sb.inject("empty", count=1)
    r = m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>")
    assert r.status_code == 200 and r.content == b""
    sb.inject("malformed", count=1, platform="daraja")
    assert m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>").status_code == 200
    r = http.get(
        sb.url + "/oauth/v1/generate?grant_type=client_credentials", auth=(C["daraja_key"], C["daraja_secret"])
    )
    with pytest.raises(ValueError):
        r.json()
    st = sb.stats()
    assert st["faults"] == {"503": 2, "429": 1, "502": 1, "504": 1, "malformed": 2, "html": 1, "empty": 1}
    assert st["by_status"][503] == 2 and st["imei_queries_per_iccid"][iccid] == 2
    assert [e["fault"] for e in sb.received("query_imei")][:2] == ["503", "503"]


def test_fault_drop_and_drop_after(sb, http):
    iccid = sb.fleet.sims[31].iccid
    sb.inject("drop", count=1)
    with pytest.raises(requests.ConnectionError):
        send(http, sb, iccid, "dropped")
    assert sb.stats()["sms_per_iccid"] == {}
    sb.inject("drop_after", count=1)
    with requests.Session() as s2, pytest.raises(requests.ConnectionError):
        send(s2, sb, iccid, "stored")
    assert sb.stats()["sms_per_iccid"] == {iccid: 1}
    rec = sb.received("send_sms")
    assert [(e["fault"], e["message_text"]) for e in rec] == [("drop", "dropped"), ("drop_after", "stored")]
    # the server still answers after drops
    assert parse(send(http, sb, iccid, "after")).findtext("api_outcome") == "success"


def test_fault_slow_stores_and_times_out(sb, http):
    iccid = sb.fleet.sims[32].iccid
    sb.inject("slow", count=1, slow_seconds=0.6)
    with pytest.raises(requests.Timeout):
        send(http, sb, iccid, "slow one", timeout=0.2)
    deadline = time.monotonic() + 5
    while not sb.stats()["sms_per_iccid"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sb.stats()["sms_per_iccid"] == {iccid: 1}
    sb.inject("503", count=1)
    assert send(http, sb, iccid, "not stored").status_code == 503
    assert sb.stats()["sms_per_iccid"] == {iccid: 1}


def test_fault_rate_is_seeded(sb, http):
    iccid = sb.fleet.sims[33].iccid

    def run():
        sb.reset()
        sb.inject("503", rate=0.5)
        codes = [m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>").status_code for _ in range(30)]
        return codes

    first = run()
    assert 5 < first.count(503) < 25
    assert run() == first
    sb.clear_faults()
    assert m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>").status_code == 200


def test_rate_limit(sb, http):
    sb.configure(rate_limit=0.5)  # burst 1, then one request per 2 s: robust on a loaded machine
    iccid = sb.fleet.sims[34].iccid
    codes = [m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>") for _ in range(10)]
    limited = [r for r in codes if r.status_code == 429]
    assert len(limited) >= 8 and int(limited[0].headers["Retry-After"]) >= 1
    tok_r = http.get(sb.url + "/oauth/v1/generate?grant_type=client_credentials", auth=(C["daraja_key"], "x"))
    assert tok_r.status_code == 429 and tok_r.json()["errorCode"] == "429.001.01"
    st = sb.stats()
    assert st["rate_limited"] == len(limited) + 1 and st["by_status"][429] == len(limited) + 1
    # control requests are never limited
    for _ in range(10):
        sb_stats = http.get(sb.url + "/_sandbox/stats")
        assert sb_stats.status_code == 200
    sb.reset()
    assert m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>").status_code == 200


def settled_stats(sb) -> dict:
    """
    The stats once no request is being served: ``in_flight`` is a gauge, and a handler leaves it just after
    writing its answer, which the client that got the answer may beat (under load, by milliseconds).
    """
    deadline = time.monotonic() + 5
    while (st := sb.stats())["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return st


def test_latency_and_max_in_flight(sb):
    sb.configure(latency=0.2)
    iccid = sb.fleet.sims[35].iccid
    codes = []

    def one():
        with requests.Session() as s:
            codes.append(m2m(s, sb, "query_imei", f"<iccid>{iccid}</iccid>").status_code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert codes == [200] * 8 and elapsed >= 0.2
    st = settled_stats(sb)
    assert st["max_in_flight"] >= 4 and st["requests"] == 8 and st["in_flight"] == 0
    t0 = time.monotonic()
    requests.get(sb.url + "/_sandbox/stats", timeout=5)
    assert time.monotonic() - t0 < 0.2  # control API is not delayed


def test_keep_alive_and_credentials_override(http):
    with Sandbox(fleet=10, anchor=ANCHOR, m2m_password="pw2", daraja_secret="s2") as sb:
        iccid = sb.fleet.sims[0].iccid
        for _ in range(3):
            root = parse(m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>", password="pw2"))
            assert root.findtext("api_outcome") == "success"
        assert len(http.adapters["http://"].poolmanager.pools) == 1
        env = sb.conn_env()
        assert set(env) == {"AIRFLOW_CONN_M2M_DEFAULT", "AIRFLOW_CONN_DARAJA_DEFAULT"}
        assert '"password": "s2"' in env["AIRFLOW_CONN_DARAJA_DEFAULT"]
        assert sb.url in env["AIRFLOW_CONN_M2M_DEFAULT"]


# ---------------------------------------------------------------------- out of process
def test_spawn_control_api(http):
    with Sandbox.spawn(fleet=50, seed=2, anchor=ANCHOR, latency=0.0) as rs:
        assert rs.fleet.sims[0].iccid == Fleet(50, seed=2).sims[0].iccid
        iccid = rs.fleet.sims[0].iccid
        root = parse(m2m(http, rs, "query_imei", f"<iccid>{iccid}</iccid>"))
        assert root.findtext("current_imei") == rs.fleet.sims[0].current_imei
        rs.inject("503", count=1, retry_after=2)
        r = m2m(http, rs, "query_imei", f"<iccid>{iccid}</iccid>")
        assert r.status_code == 503 and r.headers["Retry-After"] == "2"
        rs.configure(latency=0.05)
        t0 = time.monotonic()
        m2m(http, rs, "query_imei", f"<iccid>{iccid}</iccid>")
        assert time.monotonic() - t0 >= 0.05
        st = rs.stats()
        assert st["requests"] == 3 and st["by_status"] == {200: 2, 503: 1} and st["faults"] == {"503": 1}
        assert [e["status"] for e in rs.received("query_imei")] == [200, 503, 200]
        tok = token(http, rs)
        rs.revoke_tokens()
        assert check(http, rs, rs.fleet.sims[0].msisdn, tok).status_code == 401
        rs.reset()
        assert rs.stats()["requests"] == 0 and rs.received() == []
        with pytest.raises(ValueError):
            rs.inject("nonsense")
        proc = rs.proc
    assert proc.poll() is not None


def test_cli_self_check_and_write_fleet(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "airflow_provider_m2m.sandbox", "--self-check", "--fleet", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout
    path = tmp_path / "fleet.csv"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_provider_m2m.sandbox",
            "--write-fleet",
            str(path),
            "--fleet",
            "25",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(path.open()))
    assert [row["iccid"] for row in rows] == Fleet(25, seed=1).iccids


# ---------------------------------------------------------------------- documented numbers, one interface
def test_daraja_documentation_number_is_answered(sb, http):
    """The Daraja documentation's example request (and the README's) gets an answer from any fleet."""
    assert DOCUMENTATION_SWAPS["254722000000"].msisdn not in sb.fleet.swaps
    r = check(http, sb, "254722000000", token(http, sb))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["customerNumber"] == "254722000000" and body["imsi"] == "9233817055099406"
    assert body["lastSwapDate"].startswith("01-01-1900") and body["msisdnRegistrationDate"] == "01-03-2022"
    assert sb.stats()["checks_per_msisdn"] == {"254722000000": 1}


def test_reason_phrases_come_from_http_status(sb, http):
    iccid = sb.fleet.sims[1].iccid
    for kind, phrase in (("502", "Bad Gateway"), ("503", "Service Unavailable"), ("429", "Too Many Requests")):
        sb.inject(kind, count=1)
        r = m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>")
        assert (r.status_code, r.reason) == (int(kind), phrase)
    sb.inject("504", count=1, platform="daraja")
    r = http.get(sb.url + "/oauth/v1/generate?grant_type=client_credentials")
    assert (r.status_code, r.reason, r.json()["errorMessage"]) == (504, "Gateway Timeout", "Gateway Timeout")
    r = http.post(sb.url + "/_sandbox/stats", timeout=5)
    assert (r.status_code, r.reason, r.headers["Allow"]) == (405, "Method Not Allowed", "GET")


def test_spawn_takes_the_same_options_as_sandbox():
    """``Sandbox.spawn`` cannot drift from ``Sandbox``: its options are bound against ``Sandbox``'s signature."""
    rs = Sandbox.spawn(12, 0.0, 0, 3, ANCHOR)  # by position, as Sandbox(12, 0.0, 0, 3, ANCHOR) takes them
    assert rs.proc is None and rs.fleet.iccids == Fleet(12, seed=3, anchor=ANCHOR).iccids
    assert RemoteSandbox(Fleet(5, seed=9, anchor=ANCHOR)).fleet.iccids == Fleet(5, seed=9).iccids
    with pytest.raises(TypeError, match="unknown sandbox options: \\['latncy'\\]"):
        Sandbox.spawn(fleet=10, latncy=0.05)
    with pytest.raises(TypeError):
        Sandbox.spawn(10, 0.0, 0, 0, None, 5.0)  # rate_limit is keyword-only, as in Sandbox


def test_spawn_honours_every_option_and_reports_tokens(http):
    with Sandbox.spawn(
        fleet=20, anchor=ANCHOR, sms_delivery_delay=0.0, host="127.0.0.1", daraja_secret="spawned-secret"
    ) as rs:
        assert isinstance(rs, SandboxControls) and rs.url.startswith("http://127.0.0.1:")
        assert rs.credentials["daraja_secret"] == "spawned-secret"
        iccid = rs.fleet.sms_edge_cases["delivered"]
        root = parse(send(http, rs, iccid, "hello"))
        uid = root.findtext("sms_uid")
        details = parse(m2m(http, rs, "query_sms_mt_details", f"<iccid>{iccid}</iccid>"))
        assert (details.findtext("sms/sms_uid"), details.findtext("sms/status")) == (uid, "delivered")
        r = http.get(
            rs.url + "/oauth/v1/generate",
            params={"grant_type": "client_credentials"},
            auth=(C["daraja_key"], "spawned-secret"),
            timeout=5,
        )
        assert rs.issued_tokens() == [r.json()["access_token"]]
        rs.configure(m2m_password="changed")
        assert rs.credentials["m2m_password"] == "changed"
        assert '"password": "changed"' in rs.conn_env()["AIRFLOW_CONN_M2M_DEFAULT"]


def test_reset_while_a_request_is_in_flight(sb, http):
    """A slow request from before a reset leaves afterwards: the gauge stays true and the cleared log stays clear."""
    sb.inject("slow", count=1, slow_seconds=0.5)
    iccid = sb.fleet.iccids[3]
    codes = []

    def query() -> None:
        codes.append(m2m(http, sb, "query_imei", f"<iccid>{iccid}</iccid>").status_code)

    t = threading.Thread(target=query)
    t.start()
    deadline = time.monotonic() + 5
    while sb.stats()["in_flight"] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    sb.reset()
    assert sb.stats()["in_flight"] == 1  # still being served
    t.join(5)
    st = settled_stats(sb)
    assert codes == [200] and st["in_flight"] == 0 and st["requests"] == 0 and sb.received() == []


@pytest.mark.parametrize("front_end", ["in_process", "spawn"])
def test_timeline_answers_the_changes_recorded_by_the_platforms_now(http, front_end):
    """Devices change at known moments after the anchor; ``configure(now=...)`` sets the clock on both front ends."""
    start = Sandbox.spawn if front_end == "spawn" else Sandbox
    with start(fleet=200, seed=4, anchor=ANCHOR, timeline_days=3) as sb:
        late = next(c for c in sb.fleet.timeline if c.label == "late")
        assert late.recorded > late.at and late.recorded - late.at == timedelta(hours=1, minutes=10)
        before = sb.fleet.by_iccid[late.iccid]

        def served(now):
            sb.configure(now=now)
            root = parse(m2m(http, sb, "query_imei", f"<iccid>{late.iccid}</iccid>"))
            return root.findtext("current_imei"), root.findtext("last_change"), root.findtext("previous_imei")

        assert served(late.at + timedelta(minutes=5)) == (
            before.current_imei,
            before.last_change.strftime("%d/%m/%Y %H:%M:%S"),
            before.previous_imei or "",
        )
        assert served(late.recorded) == (late.imei, late.at.strftime("%d/%m/%Y %H:%M:%S"), before.current_imei)
        assert sb._control("info")["now"] == late.recorded.isoformat()
        sb.configure(now="")  # the real clock again: long after the timeline
        assert served("")[0] == late.imei and sb._control("info")["now"] is None
        by_day = [
            [
                c
                for c in sb.fleet.timeline
                if ANCHOR + (d - 1) * timedelta(days=1) <= c.at < ANCHOR + d * timedelta(days=1)
            ]
            for d in (1, 2, 3)
        ]
        assert all(len(changes) >= 4 for changes in by_day)  # about 2 % of 200 a day, plus the named cases
        labels = [c.label for c in sb.fleet.timeline]
        assert {"back", "first_sighting", "boundary", "late"} <= set(labels)
        assert Fleet(200, seed=4, anchor=ANCHOR).timeline == []  # no timeline: the sandbox answers as before
