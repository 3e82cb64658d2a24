"""
The push receiver in a real api-server, over real HTTP: items become asset events once each, hostile or
unauthenticated bodies record nothing, and a crash of the api-server loses nothing.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import requests

from airflow_provider_m2m.sandbox import Sandbox
from airflow_provider_m2m.sandbox import push as sandbox_push

pytestmark = pytest.mark.airflow

ICCID = "8925401000000000017"
PASSPHRASE = "pp-Kd7LEAKCHECK-push"  # the m2m_push_default password the tests' api-server has (conftest)
WHEN = "09/10/2026 16:28:15"
_API_DIDS = itertools.count(1000)


def new_api_dids(n: int) -> list[int]:
    return [next(_API_DIDS) for _ in range(n)]


def mo_items(api_dids: list[int]) -> list[bytes]:
    return [sandbox_push.mo_sms(d, ICCID, "254722000000", f"reply {d}", WHEN) for d in api_dids]


def ids(api_dids: list[int]) -> set[str]:
    return {f"{d:010d}" for d in api_dids}


def post(push_airflow, body: bytes, content_type: str = "text/xml") -> requests.Response:
    return requests.post(push_airflow.url, data=body, headers={"Content-Type": content_type}, timeout=30)


def test_each_payload_type_becomes_one_event_on_its_asset(push_airflow):
    sms, receipt, warning, limit = new_api_dids(4)
    bodies = [
        sandbox_push.mo_sms(sms, ICCID, "254722000000", "status: ok ✓", WHEN),
        sandbox_push.delivery_receipt(receipt, ICCID, "254722000000", "uid42", "delivered", WHEN),
        sandbox_push.usage_alert(warning, ICCID, 2560, WHEN),
        sandbox_push.usage_alert(limit, ICCID, 5120, WHEN, cut_off=True),
    ]
    for body in bodies:
        answer = post(push_airflow, sandbox_push.with_passphrase(body, PASSPHRASE))
        assert answer.status_code == 200, answer.text
    recorded = push_airflow.events_of(ids([sms, receipt, warning, limit]))
    events = {extra["api_did"]: (name, extra) for name, extra in recorded}
    assert len(events) == 4
    name, extra = events[f"{sms:010d}"]
    assert name == "sim_insight_mo_sms"
    assert {k: extra[k] for k in ("payload", "iccid", "msisdn", "timestamp", "text")} == {
        "payload": "post_sms", "iccid": ICCID, "msisdn": "254722000000",
        "timestamp": "2026-10-09T16:28:15+00:00", "text": "status: ok ✓",
    }  # fmt: skip
    name, extra = events[f"{receipt:010d}"]
    assert (name, extra["sms_uid"], extra["status"]) == ("sim_insight_delivery_receipts", "uid42", "delivered")
    name, extra = events[f"{warning:010d}"]
    assert (name, extra["level"], extra["level_mb"]) == ("sim_insight_usage_alerts", "warning", 2560)
    name, extra = events[f"{limit:010d}"]
    assert (name, extra["level"], extra["level_mb"]) == ("sim_insight_usage_alerts", "cut_off", 5120)
    assert all(PASSPHRASE not in repr(extra) and len(extra["push_id"]) == 32 for _, extra in events.values())


MARK = "BODYMARK-q2w9"  # in every refused body: it must never come back in an answer or reach the log
XXE = (
    '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
    f'<post_sms api_did="1"><passphrase>{PASSPHRASE}</passphrase><iccid>{ICCID}</iccid>'
    f"<message_text>{MARK}&x;</message_text></post_sms>"
).encode()
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    f'<post_sms api_did="2"><passphrase>{PASSPHRASE}</passphrase><iccid>{ICCID}</iccid>'
    f"<message_text>{MARK}&d;&d;&d;</message_text></post_sms>"
).encode()


def _good(api_did: int, passphrase: str | None = PASSPHRASE) -> bytes:
    body = sandbox_push.mo_sms(api_did, ICCID, "254722000000", MARK, WHEN)
    return body if passphrase is None else sandbox_push.with_passphrase(body, passphrase)


@pytest.mark.parametrize(
    ("case", "body", "content_type", "status"),
    [
        ("wrong passphrase", _good(1, "pp-wrong-" + MARK), "text/xml", 401),
        ("no passphrase", _good(2, None), "text/xml", 401),
        ("passphrase prefix", _good(3, PASSPHRASE[:-1]), "text/xml", 401),
        ("XXE", XXE, "text/xml", 400),
        ("entity bomb", BOMB, "text/xml", 400),
        ("2 MB", _good(4).replace(MARK.encode(), MARK.encode() * 100_000), "text/xml", 413),
        ("JSON", f'{{"passphrase": "{PASSPHRASE}", "text": "{MARK}"}}'.encode(), "application/json", 415),
        ("XML as JSON", _good(5), "application/json", 415),
        ("unknown root", _good(6).replace(b"post_sms", b"post_" + MARK.encode()), "text/xml", 400),
        ("malformed", _good(7)[:-20], "text/xml", 400),
    ],
)
def test_refused_bodies_record_nothing_and_leak_nothing(push_airflow, case, body, content_type, status):
    before = len(push_airflow.events())
    answer = post(push_airflow, body, content_type)
    assert answer.status_code == status, (case, answer.text)
    assert MARK not in answer.text and PASSPHRASE not in answer.text
    assert len(push_airflow.events()) == before
    log = push_airflow.log()
    assert MARK not in log and PASSPHRASE not in log and "aaaaaaaaaa" not in log


def test_a_chunked_body_over_the_limit_is_refused_while_reading(push_airflow):
    def chunks():  # no Content-Length: the receiver has to count
        yield _good(8)[:50]
        for _ in range(40):
            yield b"x" * 65536

    before = len(push_airflow.events())
    answer = requests.post(push_airflow.url, data=chunks(), headers={"Content-Type": "text/xml"}, timeout=30)
    assert answer.status_code == 413
    assert len(push_airflow.events()) == before


def test_duplicates_give_one_event_per_distinct_item(push_airflow):
    api_dids = new_api_dids(200)
    pusher = sandbox_push.Pusher(push_airflow.url, PASSPHRASE, duplicate_ratio=0.1, retry_scale=0.01)
    report = pusher.push_all(mo_items(api_dids), senders=8)
    assert report.delivered == 200 and report.duplicates_sent > 5
    recorded = [extra["api_did"] for _, extra in push_airflow.events_of(ids(api_dids))]
    assert sorted(recorded) == sorted(ids(api_dids))


def test_load_16_senders_2000_items_each_recorded_once(push_airflow):
    api_dids = new_api_dids(2000)
    pusher = sandbox_push.Pusher(push_airflow.url, PASSPHRASE, retry_scale=0.01)
    report = pusher.push_all(mo_items(api_dids), senders=16)
    recorded = [extra["api_did"] for _, extra in push_airflow.events_of(ids(api_dids))]
    print(
        f"\n[push load] {len(api_dids)} items from 16 senders in {report.seconds:.1f} s: "
        f"{len(api_dids) / report.seconds:.0f} items/s ({report.posts} POSTs)"
    )
    assert report.delivered == 2000
    assert sorted(recorded) == sorted(ids(api_dids))


def test_api_server_killed_mid_push_then_restarted_loses_and_repeats_nothing(push_airflow):
    server = push_airflow.server
    api_dids = new_api_dids(400)
    pusher = sandbox_push.Pusher(push_airflow.url, PASSPHRASE, retry_scale=0.01, max_attempts=200)
    reports = []
    sender = threading.Thread(target=lambda: reports.append(pusher.push_all(mo_items(api_dids), senders=4)))
    sender.start()
    server.wait_until(lambda: len(push_airflow.events_of(ids(api_dids))) >= 50, 60, "the first 50 items", 0.05)
    server.kill("api-server")  # SIGKILL: requests in flight die with it, committed or not
    time.sleep(1)
    assert len(push_airflow.events_of(ids(api_dids))) < len(api_dids), "the kill came too late to matter"
    server.launch("api-server")
    sender.join(180)
    assert not sender.is_alive()
    assert reports[0].delivered == len(api_dids)
    assert reports[0].posts > len(api_dids)  # some items were retried
    recorded = [extra["api_did"] for _, extra in push_airflow.events_of(ids(api_dids))]
    assert sorted(recorded) == sorted(ids(api_dids))


def test_the_sandbox_pushes_a_receipt_of_each_message_it_settles(push_airflow, sb):
    from airflow_provider_m2m.hooks.m2m import M2mHook

    sb.configure(sms_delivery_delay=0.5)
    sb.push_to(push_airflow.url, PASSPHRASE, retry_scale=0.01)
    try:
        fates = {fate: sb.fleet.sms_edge_cases[fate] for fate in ("delivered", "failed", "pending")}
        hook = M2mHook()
        sent = {fate: hook.send_sms(iccid, f"receipt test {fate}").sms_uid for fate, iccid in fates.items()}

        def receipts():
            found = {
                extra["sms_uid"]: extra
                for name, extra in push_airflow.events()
                if name == "sim_insight_delivery_receipts" and extra["sms_uid"] in sent.values()
            }
            return found if len(found) >= 2 else None

        found = push_airflow.server.wait_until(receipts, 30, "the receipts of two messages", 0.2)
        time.sleep(1)  # a receipt for the pending message would have come by now
    finally:
        sb.push_to(None)
    assert set(found) == {sent["delivered"], sent["failed"]}
    for fate in ("delivered", "failed"):
        receipt = found[sent[fate]]
        assert (receipt["iccid"], receipt["status"]) == (fates[fate], fate)


def _pushed_by(sandbox, push_airflow) -> dict[str, tuple[str, dict]]:
    """An MO message and an alert of each level pushed by ``sandbox`` on command: api_did -> (kind, what)."""
    iccids = sandbox.fleet.iccids[:3]
    return {
        sandbox.send_mo(iccids[0], "door open ✓"): ("mo_sms", {"iccid": iccids[0], "text": "door open ✓"}),
        sandbox.raise_alert(iccids[1], "warning", 2560): ("warning", {"iccid": iccids[1], "level_mb": 2560}),
        sandbox.raise_alert(iccids[2], "cut_off", 5120): ("cut_off", {"iccid": iccids[2], "level_mb": 5120}),
    }


def _assert_one_event_each(sandbox, push_airflow, pushed: dict[str, tuple[str, dict]]) -> None:
    def arrived():
        found = push_airflow.events_of(set(pushed))
        return found if len(found) >= len(pushed) else None

    found = push_airflow.server.wait_until(arrived, 30, "the sandbox's pushed items", 0.2)
    assert sorted(extra["api_did"] for _, extra in found) == sorted(pushed)  # exactly one event each
    for name, extra in found:
        kind, what = pushed[extra["api_did"]]
        sim = sandbox.fleet.by_iccid[what["iccid"]]
        assert extra["iccid"] == sim.iccid
        if kind == "mo_sms":
            assert (name, extra["payload"], extra["text"]) == ("sim_insight_mo_sms", "post_sms", what["text"])
            assert extra["msisdn"] == sim.msisdn  # from the fleet (an alert carries no MSISDN)
        else:
            assert (name, extra["level"], extra["level_mb"]) == ("sim_insight_usage_alerts", kind, what["level_mb"])


def test_the_sandbox_pushes_mo_messages_and_alerts_on_command(push_airflow, sb):
    sb.configure(now="2026-10-09T16:28:15Z")
    sb.push_to(push_airflow.url, PASSPHRASE, retry_scale=0.01)
    pushed = _pushed_by(sb, push_airflow)
    _assert_one_event_each(sb, push_airflow, pushed)
    events = push_airflow.events_of(set(pushed))
    assert {extra["timestamp"] for _, extra in events} == {"2026-10-09T16:28:15+00:00"}  # the platforms' clock
    assert sb.stats()["pushes"] == {"delivered": 3, "refused": 0, "posts": 3, "duplicates_sent": 0}
    with pytest.raises(ValueError, match="not a SIM of the sandbox's fleet"):
        sb.send_mo("8925401999999999999", "unknown SIM")
    with pytest.raises(ValueError, match="kind must be one of"):
        sb.raise_alert(sb.fleet.iccids[0], "critical")
    sb.reset()  # stops pushing
    with pytest.raises(ValueError, match="call push_to"):
        sb.send_mo(sb.fleet.iccids[0], "nobody listens")


def test_a_spawned_sandbox_pushes_with_duplicates_one_event_per_distinct_item(push_airflow):
    with Sandbox.spawn(fleet=50, seed=3) as remote:
        remote.push_to(push_airflow.url, PASSPHRASE, retry_scale=0.01, duplicate_ratio=0.5)
        pushed = _pushed_by(remote, push_airflow)
        for iccid in remote.fleet.iccids[3:23]:
            text = f"hello from {iccid}"
            pushed[remote.send_mo(iccid, text)] = ("mo_sms", {"iccid": iccid, "text": text})
        _assert_one_event_each(remote, push_airflow, pushed)

        def all_answered():  # every item delivered, and every duplicate POSTed after it
            s = remote.stats()["pushes"]
            return s if s["delivered"] == len(pushed) and s["posts"] >= len(pushed) + s["duplicates_sent"] else None

        stats = push_airflow.server.wait_until(all_answered, 30, "every push and duplicate answered", 0.2)
    assert stats["duplicates_sent"] > 2
    assert sorted(extra["api_did"] for _, extra in push_airflow.events_of(set(pushed))) == sorted(pushed)


def test_a_dag_scheduled_on_the_mo_asset_runs_and_reports_the_reply(push_airflow):
    """Last in the file: device_replies is unpaused only here, so the bulk tests' events trigger no runs."""
    server = push_airflow.server
    server.wait_until(lambda: server.api("GET", "/api/v2/dags/device_replies")[0] == 200, 120, "device_replies parsed")
    status, body = server.api("PATCH", "/api/v2/dags/device_replies", {"is_paused": False})
    assert status == 200, body
    (api_did,) = new_api_dids(1)
    body = sandbox_push.mo_sms(api_did, ICCID, "254722000000", "battery low, reply from truck-0001", WHEN)
    assert post(push_airflow, sandbox_push.with_passphrase(body, PASSPHRASE)).status_code == 200

    def finished_run():
        status, runs = server.api("GET", "/api/v2/dags/device_replies/dagRuns?run_type=asset_triggered")
        done = [run for run in runs["dag_runs"] if run["state"] in ("success", "failed")] if status == 200 else []
        return done[0] if done else None

    run = server.wait_until(finished_run, 120, "a device_replies run", 1)
    assert run["state"] == "success", server.tail("scheduler", 40)
    (report,) = (server.home / "reports" / "device_replies").rglob("replies.csv")
    lines = report.read_text("utf-8").splitlines()
    assert lines[0] == "iccid,msisdn,timestamp,text,api_did"
    assert (
        f'{ICCID},254722000000,2026-10-09T16:28:15+00:00,"battery low, reply from truck-0001",{api_did:010d}' in lines
    )
