"""QueryImeiOperator and SendSmsOperator in real ``dag.test()`` runs against the sandbox (plus bad-input checks)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import Counter

import pytest
from conftest import ANCHOR, load_dag

from airflow_provider_m2m.operators.m2m import QueryImeiOperator, SendSmsOperator
from airflow_provider_m2m.utils.version_compat import HAS_TASK_STATE_STORE, AirflowFailException

NOT_IN_FLEET = "8900000000000000000"
DAY = dt.timedelta(days=1)


def states(dr) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}


def ti_of(dr, task_id: str, map_index: int = -1):
    (ti,) = [t for t in dr.get_task_instances() if t.task_id == task_id and t.map_index == map_index]
    return ti


def xcom(dr, task_id: str, map_index: int = -1, key: str = "return_value"):
    return ti_of(dr, task_id, map_index).xcom_pull(task_ids=task_id, map_indexes=map_index, key=key)


def expected_row(sb, iccid: str) -> dict:
    sim = sb.fleet.by_iccid[iccid]
    return {
        "iccid": iccid,
        "current_imei": sim.normalized_imei,
        "last_change": sim.last_change.isoformat() if sim.last_change else None,
        "previous_imei": sim.previous_imei,
        "error": None,
    }


QUERY_DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_m2m.operators.m2m import QueryImeiOperator

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

with DAG("m2m_query_test", schedule="@daily", start_date=START, catchup=False):
    QueryImeiOperator(task_id="rows", iccids={all_iccids!r}, max_workers="4")
    QueryImeiOperator(task_id="changed_templated", iccids={all_iccids!r}, changed_since="{{{{ data_interval_start }}}}")
    QueryImeiOperator(task_id="changed_iso", iccids={all_iccids!r}, changed_since="{since_iso}")
    QueryImeiOperator(task_id="to_csv", iccids={all_iccids!r}, changed_since="{since_iso}", output_uri="{uri}")
    QueryImeiOperator(
        task_id="window",
        iccids={all_iccids!r},
        changed_since="{{{{ data_interval_start }}}}",
        changed_before="{{{{ data_interval_start + macros.timedelta(days=1) }}}}",
        output_uri="{window_uri}",
    )
    QueryImeiOperator(task_id="before_only", iccids={all_iccids!r}, changed_before="{since_iso}")
    QueryImeiOperator(task_id="one", iccids="{one}")
    QueryImeiOperator.partial(task_id="mapped", max_workers=2).expand(iccids={batches!r})
"""


def test_query_imei_operator(sb, dags_folder, tmp_path):
    fleet = sb.fleet
    iccids = fleet.iccids[:60] + [NOT_IN_FLEET]
    batches = [fleet.iccids[100:103], fleet.iccids[103:105]]
    out = tmp_path / "reports" / "imei.csv"
    since = ANCHOR - DAY  # the run's data_interval_start below
    source = QUERY_DAG.format(
        all_iccids=iccids,
        since_iso=since.isoformat(),
        uri=out.as_uri(),
        window_uri=(tmp_path / "window.csv").as_uri(),
        one=fleet.edge_cases["imeisv"],
        batches=batches,
    )
    dag = load_dag(dags_folder, source, "m2m_query_test")
    dr = dag.test(logical_date=since)

    assert dr.state == "success", states(dr)
    assert set(states(dr).values()) == {"success"}

    rows = xcom(dr, "rows")
    assert [r["iccid"] for r in rows].count(NOT_IN_FLEET) == 1
    assert Counter(r["iccid"] for r in rows) == Counter(iccids)
    failed = {r["iccid"]: r for r in rows if r["error"]}
    assert failed == {
        NOT_IN_FLEET: {
            "iccid": NOT_IN_FLEET,
            "current_imei": None,
            "last_change": None,
            "previous_imei": None,
            "error": f"SIM Insight query_imei for SIM {NOT_IN_FLEET} failed: invalid iccid",
        }
    }
    assert sorted((r for r in rows if not r["error"]), key=lambda r: r["iccid"]) == sorted(
        (expected_row(sb, i) for i in fleet.iccids[:60]), key=lambda r: r["iccid"]
    )

    # changed_since: only SIMs whose last_change >= since (unknown is not "changed"), plus the failed SIM.
    changed = {s.iccid for s in fleet.sims[:60] if s.last_change is not None and s.last_change >= since}
    assert fleet.edge_cases["interval_start"] in changed  # inclusive
    assert fleet.edge_cases["just_before"] not in changed
    assert fleet.edge_cases["unknown"] not in changed
    assert 3 <= len(changed) < 30
    for task_id in ("changed_templated", "changed_iso"):
        kept = xcom(dr, task_id)
        assert sorted(r["iccid"] for r in kept) == sorted([*changed, NOT_IN_FLEET]), task_id
        assert all(r == expected_row(sb, r["iccid"]) for r in kept if not r["error"])

    # output_uri: CSV rows in the file, a small summary in XCom.
    summary = xcom(dr, "to_csv")
    unknown = sum(1 for s in fleet.sims[:60] if s.last_change is None)
    assert summary == {
        "uri": out.as_uri(),
        "total": 61,
        "changed": len(changed),
        "unknown": unknown,
        "failed": 1,
        "rows": len(changed) + 1,
        "changed_iccids": sorted(changed),
        "changed_iccids_truncated": False,
    }
    assert len(json.dumps(summary)) < 300 + 22 * len(changed)

    # changed_before closes the window, half-open: a change at exactly its end belongs to the next window.
    window = xcom(dr, "window")
    in_window = {i for i in changed if fleet.by_iccid[i].last_change < ANCHOR}
    assert fleet.edge_cases["interval_end"] in changed and fleet.edge_cases["interval_end"] not in in_window
    assert fleet.edge_cases["last_second"] in in_window
    assert window["changed_iccids"] == sorted(in_window) and window["changed"] == len(in_window)
    assert window["rows"] == len(in_window) + 1  # plus the failed SIM
    # query.output["changed_iccids"] is an XCom key of its own (also without output_uri).
    assert xcom(dr, "window", key="changed_iccids") == sorted(in_window)
    assert xcom(dr, "changed_iso", key="changed_iccids") == sorted(changed)
    before_only = xcom(dr, "before_only")
    older = {s.iccid for s in fleet.sims[:60] if s.last_change is not None and s.last_change < since}
    assert fleet.edge_cases["just_before"] in older and fleet.edge_cases["interval_start"] not in older
    assert sorted(r["iccid"] for r in before_only) == sorted([*older, NOT_IN_FLEET])
    with out.open(newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == ["iccid", "current_imei", "last_change", "previous_imei", "error"]
    by_iccid = {line[0]: line for line in lines[1:]}
    assert len(lines) - 1 == len(by_iccid) == len(changed) + 1
    for iccid in changed:
        row = expected_row(sb, iccid)
        assert by_iccid[iccid] == [row[c] or "" for c in ("iccid", "current_imei", "last_change", "previous_imei")] + [
            ""
        ]
    assert by_iccid[NOT_IN_FLEET][1:] == [
        "",
        "",
        "",
        f"SIM Insight query_imei for SIM {NOT_IN_FLEET} failed: invalid iccid",
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["imei.csv"]  # no partial file left behind

    # A plain string is one ICCID; the IMEISV comes back as a 15-digit IMEI.
    (one,) = xcom(dr, "one")
    assert one == expected_row(sb, fleet.edge_cases["imeisv"])
    assert len(one["current_imei"]) == 15

    # Mapped over batches: one task instance per batch, each with its own rows.
    for index, batch in enumerate(batches):
        mapped = xcom(dr, "mapped", index)
        assert [r["iccid"] for r in sorted(mapped, key=lambda r: r["iccid"])] == sorted(batch)
        assert all(r == expected_row(sb, r["iccid"]) for r in mapped)
    per_iccid = sb.stats()["imei_queries_per_iccid"]
    assert all(per_iccid[i] == 1 for batch in batches for i in batch)


SEND_DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_m2m.operators.m2m import SendSmsOperator

with DAG("{dag_id}", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):
{tasks}
"""


def send_dag(dags_folder, dag_id: str, *tasks: str):
    source = SEND_DAG.format(dag_id=dag_id, tasks="\n".join(f"    {t}" for t in tasks))
    return load_dag(dags_folder, source, dag_id)


def test_send_sms_operator_success(sb, dags_folder):
    sims = sb.fleet.iccids[200:203]
    template = "Dear {{ dag.dag_id }}\r\nService at 10:00 {ok} [1] ~ 50€\r"
    text = "Dear m2m_send_ok\r\nService at 10:00 {ok} [1] ~ 50€\r"  # carriage returns survive the template
    dag = send_dag(
        dags_folder, "m2m_send_ok", f"SendSmsOperator(task_id='send', iccids={sims!r}, message_text={template!r})"
    )
    dr = dag.test()
    assert dr.state == "success", states(dr)
    rows = xcom(dr, "send")
    assert [r["iccid"] for r in rows] == sims
    assert all(r["outcome"] == "success" and r["error"] is None for r in rows)
    uids = [r["sms_uid"] for r in rows]
    assert len(set(uids)) == 3
    assert all(len(u) == 12 and u.isalnum() for u in uids)
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(sims, 1)
    received = sb.received("send_sms")
    assert sorted((e["iccid"], e["sms_uid"]) for e in received) == sorted(zip(sims, uids, strict=True))
    assert [e["message_text"] for e in received] == [text] * 3


def test_send_sms_operator_bad_input_sends_nothing(sb, dags_folder):
    sims = sb.fleet.iccids[210:212]
    dag = send_dag(
        dags_folder,
        "m2m_send_bad",
        f"SendSmsOperator(task_id='accent', iccids={sims!r}, message_text='héllo á', retries=2)",
        f"SendSmsOperator(task_id='too_long', iccids={sims!r}, message_text='x' * 161, retries=2)",
        f"SendSmsOperator(task_id='fixed_uid', iccids={sims!r}, message_text='hello', sms_uid='Fixed1', retries=2)",
        f"SendSmsOperator(task_id='bad_iccid', iccids=[{sims[0]!r}, '123'], message_text='hello', retries=2)",
    )
    dr = dag.test()
    assert dr.state == "failed"
    for task_id in ("accent", "too_long", "fixed_uid", "bad_iccid"):
        ti = ti_of(dr, task_id)
        assert ti.state == "failed", task_id
        assert ti.try_number == 1, task_id  # AirflowFailException: no retries for bad input
    assert sb.stats()["requests"] == 0
    assert sb.received() == []


def test_send_sms_operator_retry_does_not_resend(sb, dags_folder):
    sims = sb.fleet.iccids[220:224]
    dag = send_dag(
        dags_folder,
        "m2m_send_retry",
        f"SendSmsOperator(task_id='send', iccids={sims!r}, message_text='hello again', retries=1, "
        "retry_delay=dt.timedelta(0))",
    )
    # A 502 on the first SIM: its outcome is unknown (the gateway may have passed it on), the others go
    # through, so the first try fails part-way. Here the platform did not store it, so the retry must look
    # it up, find nothing and send it; the SIMs recorded as sent must not get a second SMS.
    sb.inject("502", count=1)
    dr = dag.test()
    assert dr.state == "success", states(dr)
    assert ti_of(dr, "send").try_number == 2
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(sims, 1)
    sends = [e["iccid"] for e in sb.received("send_sms")]
    # the first SIM goes alone, the others side by side; only the unknown one was tried again
    assert sends[0] == sends[4] == sims[0] and sorted(sends[1:4]) == sorted(sims[1:]) and len(sends) == 5
    # looked up before resending: the unknown one, or (no task state store, before Airflow 3.3) every SIM
    looked_up = [sims[0]] if HAS_TASK_STATE_STORE else sims
    assert sorted(e["iccid"] for e in sb.received("query_sms_mt_details")) == sorted(looked_up)
    uids = [e["sms_uid"] for e in sb.received("send_sms") if e["iccid"] == sims[0]]
    assert uids[0] == uids[1]  # the retry reuses the run's uid
    rows = xcom(dr, "send")
    assert [r["iccid"] for r in rows] == sims
    assert all(r["outcome"] == "success" for r in rows)


def test_send_sms_operator_unknown_outcome_settled_from_history(sb, dags_folder):
    sims = sb.fleet.iccids[230:232]
    dag = send_dag(
        dags_folder,
        "m2m_send_settle",
        f"SendSmsOperator(task_id='send', iccids={sims!r}, message_text='hi', retries=1, retry_delay=dt.timedelta(0))",
    )
    sb.inject("drop_after", count=1)  # the first SMS is stored, but the answer is lost
    dr = dag.test()
    assert dr.state == "success", states(dr)
    assert ti_of(dr, "send").try_number == 2
    assert sb.stats()["sms_per_iccid"] == dict.fromkeys(sims, 1)
    assert [e["iccid"] for e in sb.received("send_sms")] == sims  # found in the history: not sent again
    looked_up = [sims[0]] if HAS_TASK_STATE_STORE else sims  # without a store every SIM is looked up
    assert sorted(e["iccid"] for e in sb.received("query_sms_mt_details")) == sorted(looked_up)


def test_send_sms_operator_refused_credentials_fail_without_retry(sb, dags_folder, monkeypatch):
    creds = sb.credentials
    conn = {
        "conn_type": "m2m",
        "host": sb.url,
        "login": creds["m2m_username"],
        "password": "wrong-password-dag",
        "extra": {"api_id": creds["m2m_api_id"]},
    }
    monkeypatch.setenv("AIRFLOW_CONN_M2M_DAG_BADPW", json.dumps(conn))
    sims = sb.fleet.iccids[240:243]
    dag = send_dag(
        dags_folder,
        "m2m_send_badpw",
        f"SendSmsOperator(task_id='send', iccids={sims!r}, message_text='hi', m2m_conn_id='m2m_dag_badpw', "
        "retries=2, retry_delay=dt.timedelta(0))",
    )
    dr = dag.test()
    assert dr.state == "failed"
    ti = ti_of(dr, "send")
    assert ti.state == "failed"
    assert ti.try_number == 1  # refused credentials: retrying cannot help
    assert sb.stats()["requests"] == 1  # the first SIM's refusal stopped the batch
    assert sb.stats()["sms_per_iccid"] == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"message_text": "héllo á"}, r"^message_text: character 'á' \(U\+00E1\) at position 6"),
        ({"message_text": "x" * 161}, r"^message_text: 161 septets is over the 160-septet limit"),
        ({"message_text": "hi", "sms_uid": "Fixed1"}, r"^sms_uid: a fixed sms_uid is only allowed with one SIM"),
        ({"message_text": "hi", "origin": "abc"}, r"^origin: must be a number of 1 to 15 digits"),
        ({"message_text": "hi", "data_coding": "utf8"}, r"^data_coding: must be 'default' or 'binary'"),
    ],
)
def test_send_sms_operator_bad_input_messages(sb, kwargs, match):
    operator = SendSmsOperator(task_id="send", iccids=sb.fleet.iccids[250:252], **kwargs)
    with pytest.raises(AirflowFailException, match=match):
        operator.execute({})
    assert sb.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"changed_since": "2026-11-19T00:00:00"}, r"^changed_since: must carry a timezone"),
        ({"changed_since": "yesterday"}, r"^changed_since: must be an ISO 8601 date-time"),
        ({"max_workers": "0"}, r"^max_workers: must be an integer from 1 to 256"),
        ({"iccids": "8925401000000000012,8925401000000000013"}, r"^iccids: an ICCID has digits only"),
    ],
)
def test_query_imei_operator_bad_input_messages(sb, kwargs, match):
    operator = QueryImeiOperator(task_id="query", **{"iccids": sb.fleet.iccids[:2], **kwargs})
    with pytest.raises(AirflowFailException, match=match):
        operator.execute({})
    assert sb.stats()["requests"] == 0


CAPPED_DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_m2m.operators.m2m import QueryImeiOperator

with DAG("m2m_capped", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):
    QueryImeiOperator(task_id="capped", iccids={iccids!r}, changed_since="{since}", output_uri="{uri}")
"""


def test_changed_iccids_is_capped_and_says_so(sb, dags_folder, tmp_path, monkeypatch):
    from airflow_provider_m2m.operators import m2m

    monkeypatch.setattr(m2m, "MAX_CHANGED_ICCIDS", 3)  # the cap, lowered so a small fleet reaches it (in-process)
    since = ANCHOR - 30 * DAY
    iccids = sb.fleet.iccids[:200]
    changed = {i for i in iccids if (s := sb.fleet.by_iccid[i]).last_change is not None and s.last_change >= since}
    assert len(changed) > 3
    source = CAPPED_DAG.format(iccids=iccids, since=since.isoformat(), uri=(tmp_path / "c.csv").as_uri())
    dr = load_dag(dags_folder, source, "m2m_capped").test()
    summary = xcom(dr, "capped")
    assert summary["changed"] == len(changed) and summary["rows"] == len(changed)
    assert summary["changed_iccids_truncated"] is True
    assert len(summary["changed_iccids"]) == 3 and set(summary["changed_iccids"]) <= changed
    assert xcom(dr, "capped", key="changed_iccids") == summary["changed_iccids"]
