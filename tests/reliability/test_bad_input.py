"""
Suite 3, bad input: every malformed input raises InvalidRequestError naming the field (an operator:
AirflowFailException, no retry), and the platform receives nothing at all.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from conftest import load_dag

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.hooks.daraja import DarajaHook
from airflow_provider_m2m.hooks.m2m import M2mHook
from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator
from airflow_provider_m2m.operators.m2m import QueryImeiOperator, SendSmsOperator
from airflow_provider_m2m.utils.version_compat import AirflowFailException

GOOD_ICCID = "8925401000000000012"
GOOD_TEXT = "Hello"
TALLY = {"cases": 0, "held": 0}


def sms(**kw):
    return ("send_sms", {"iccid": GOOD_ICCID, "message_text": GOOD_TEXT, **kw})


# (label, (hook method, kwargs), expected field)
HOOK_CASES = [
    # ICCID
    ("iccid empty", sms(iccid=""), "iccid"),
    ("iccid letters", sms(iccid="89254010000000000AB"), "iccid"),
    ("iccid 17 digits", sms(iccid="8" * 17), "iccid"),
    ("iccid 23 digits", sms(iccid="8" * 23), "iccid"),
    ("iccid fullwidth digits", sms(iccid="\uff18" * 19), "iccid"),
    ("iccid arabic-indic digits", sms(iccid="\u0668" * 19), "iccid"),
    ("iccid None", sms(iccid=None), "iccid"),
    ("iccid float", sms(iccid=8.9e18), "iccid"),
    ("iccid list", sms(iccid=[GOOD_ICCID]), "iccid"),
    ("iccid bool", sms(iccid=True), "iccid"),
    ("iccid plus sign", sms(iccid="+" + GOOD_ICCID), "iccid"),
    ("iccid dot", sms(iccid=GOOD_ICCID[:10] + "." + GOOD_ICCID[10:]), "iccid"),
    ("iccid newline inside", sms(iccid=GOOD_ICCID[:10] + "\n" + GOOD_ICCID[10:]), "iccid"),
    ("iccid xml injection", sms(iccid="<iccid>1</iccid>"), "iccid"),
    ("query_imei iccid short", ("query_imei", {"iccid": "123"}), "iccid"),
    ("query_imei iccid bytes", ("query_imei", {"iccid": GOOD_ICCID.encode()}), "iccid"),
    ("query_imeis one bad of three", ("query_imeis", {"iccids": [GOOD_ICCID, GOOD_ICCID, "x"]}), "iccids[2]"),
    ("query_imeis None item", ("query_imeis", {"iccids": [GOOD_ICCID, None]}), "iccids[1]"),
    ("query_imeis max_workers 0", ("query_imeis", {"iccids": [GOOD_ICCID], "max_workers": 0}), "max_workers"),
    ("query_imeis max_workers 1000", ("query_imeis", {"iccids": [GOOD_ICCID], "max_workers": 1000}), "max_workers"),
    # message text
    ("text empty", sms(message_text=""), "message_text"),
    ("text None", sms(message_text=None), "message_text"),
    ("text int", sms(message_text=42), "message_text"),
    ("text bytes", sms(message_text=b"hello"), "message_text"),
    ("text c-cedilla lowercase", sms(message_text="gar\u00e7on"), "message_text"),
    ("text emoji", sms(message_text="ok \U0001f600"), "message_text"),
    ("text CJK", sms(message_text="\u4e2d\u6587"), "message_text"),
    ("text curly quote", sms(message_text="it\u2019s"), "message_text"),
    ("text no-break space", sms(message_text="a\u00a0b"), "message_text"),
    ("text tab", sms(message_text="a\tb"), "message_text"),
    ("text NUL", sms(message_text="a\x00b"), "message_text"),
    ("text form feed", sms(message_text="page\x0cbreak"), "message_text"),
    ("text ESC", sms(message_text="a\x1bb"), "message_text"),
    ("text 161 septets", sms(message_text="a" * 161), "message_text"),
    ("text 159 + euro (161)", sms(message_text="a" * 159 + "\u20ac"), "message_text"),
    ("text 159 + [ (161)", sms(message_text="a" * 159 + "["), "message_text"),
    ("text 81 braces (162)", sms(message_text="{" * 81), "message_text"),
    ("text 80 ext + 1 (161)", sms(message_text="^" * 80 + "a"), "message_text"),
    ("text combining accent", sms(message_text="e\u0301"), "message_text"),
    ("text greek lowercase", sms(message_text="\u03b1\u03b2"), "message_text"),
    ("text 1000 chars", sms(message_text="x" * 1000), "message_text"),
    # data coding and binary payloads
    ("data_coding unknown", sms(data_coding="text"), "data_coding"),
    ("data_coding upper-case", sms(data_coding="BINARY", message_text="QUJD"), "data_coding"),
    ("data_coding empty", sms(data_coding=""), "data_coding"),
    ("data_coding None", sms(data_coding=None), "data_coding"),
    ("binary not base64", sms(data_coding="binary", message_text="not base64!"), "message_text"),
    ("binary empty", sms(data_coding="binary", message_text=""), "message_text"),
    ("binary bad padding", sms(data_coding="binary", message_text="QUJ"), "message_text"),
    ("binary url-safe alphabet", sms(data_coding="binary", message_text="-_-_"), "message_text"),
    ("binary embedded newline", sms(data_coding="binary", message_text="QUJD\nREVG"), "message_text"),
    ("binary non-ascii", sms(data_coding="binary", message_text="\u00c4BCD"), "message_text"),
    ("binary 121 bytes", sms(data_coding="binary", message_text="QUJD" * 40 + "QQ=="), "message_text"),
    ("binary None", sms(data_coding="binary", message_text=None), "message_text"),
    # sms_uid
    ("sms_uid empty", sms(sms_uid=""), "sms_uid"),
    ("sms_uid 13 chars", sms(sms_uid="a" * 13), "sms_uid"),
    ("sms_uid dash", sms(sms_uid="abc-def"), "sms_uid"),
    ("sms_uid space", sms(sms_uid="abc def"), "sms_uid"),
    ("sms_uid non-ascii letters", sms(sms_uid="\u00c4bc"), "sms_uid"),
    ("sms_uid xml", sms(sms_uid="<x/>"), "sms_uid"),
    ("sms_uid float", sms(sms_uid=1.5), "sms_uid"),
    # origin
    ("origin letters", sms(origin="ACME"), "origin"),
    ("origin plus only", sms(origin="+"), "origin"),
    ("origin 16 digits", sms(origin="1" * 16), "origin"),
    ("origin spaces", sms(origin="254 722"), "origin"),
    ("origin arabic-indic", sms(origin="\u0661\u0662\u0663"), "origin"),
    ("origin negative int", sms(origin=-5), "origin"),
    ("origin empty", sms(origin=""), "origin"),
    # MSISDN (Daraja)
    ("msisdn empty", ("check_sim_swap", {"msisdn": ""}), "msisdn"),
    ("msisdn too short", ("check_sim_swap", {"msisdn": "0722"}), "msisdn"),
    ("msisdn 11 digits local", ("check_sim_swap", {"msisdn": "07220000000"}), "msisdn"),
    ("msisdn US number", ("check_sim_swap", {"msisdn": "+1 202 555 0100"}), "msisdn"),
    ("msisdn landline range", ("check_sim_swap", {"msisdn": "254202000000"}), "msisdn"),
    ("msisdn letter O", ("check_sim_swap", {"msisdn": "07220000O0"}), "msisdn"),
    ("msisdn extension", ("check_sim_swap", {"msisdn": "0722000000 ext 5"}), "msisdn"),
    ("msisdn None", ("check_sim_swap", {"msisdn": None}), "msisdn"),
    ("msisdn float", ("check_sim_swap", {"msisdn": 254722000000.0}), "msisdn"),
    ("msisdns one bad", ("check_sim_swaps", {"msisdns": ["0722000000", "12"]}), "msisdns[1]"),
]


@pytest.mark.parametrize(("label", "call", "field"), HOOK_CASES, ids=[c[0] for c in HOOK_CASES])
def test_hook_rejects_before_sending(sb, label, call, field):
    method, kwargs = call
    hook = DarajaHook() if "sim_swap" in method else M2mHook()
    TALLY["cases"] += 1
    with pytest.raises(InvalidRequestError) as info:
        result = getattr(hook, method)(**kwargs)
        list(result) if method in ("query_imeis", "check_sim_swaps") else None
    assert info.value.field == field, (label, info.value.field, str(info.value))
    assert str(info.value).startswith(f"{field}:")
    assert sb.stats()["requests"] == 0, label
    TALLY["held"] += 1


OPERATOR_CASES = [
    # A hook's batch of nothing yields nothing; these operators refuse an empty list as bad input.
    ("query iccids empty", lambda: QueryImeiOperator(task_id="t", iccids=[]), "iccids"),
    ("screen msisdns empty", lambda: CheckSimSwapOperator(task_id="t", msisdns=[]), "msisdns"),
    ("within_days 0", lambda: CheckSimSwapOperator(task_id="t", msisdns="0722000000", within_days=0), "within_days"),
    (
        "within_days 91",
        lambda: CheckSimSwapOperator(task_id="t", msisdns="0722000000", within_days="91"),
        "within_days",
    ),
    (
        "within_days 'abc'",
        lambda: CheckSimSwapOperator(task_id="t", msisdns="0722000000", within_days="abc"),
        "within_days",
    ),
    (
        "within_days 1.5",
        lambda: CheckSimSwapOperator(task_id="t", msisdns="0722000000", within_days=1.5),
        "within_days",
    ),
    (
        "within_days True",
        lambda: CheckSimSwapOperator(task_id="t", msisdns="0722000000", within_days=True),
        "within_days",
    ),
    (
        "on_recent_swap",
        lambda: CheckSimSwapOperator(task_id="t", msisdns="0722000000", on_recent_swap="panic"),
        "on_recent_swap",
    ),
    ("msisdns dict", lambda: CheckSimSwapOperator(task_id="t", msisdns={"a": 1}), "msisdns"),
    ("iccids int", lambda: QueryImeiOperator(task_id="t", iccids=42), "iccids"),
    (
        "changed_since naive",
        lambda: QueryImeiOperator(task_id="t", iccids=GOOD_ICCID, changed_since="2026-01-01T00:00:00"),
        "changed_since",
    ),
    (
        "changed_since words",
        lambda: QueryImeiOperator(task_id="t", iccids=GOOD_ICCID, changed_since="yesterday"),
        "changed_since",
    ),
    (
        "changed_since date",
        lambda: QueryImeiOperator(task_id="t", iccids=GOOD_ICCID, changed_since=dt.date(2026, 1, 1)),
        "changed_since",
    ),
    (
        "changed_before words",
        lambda: QueryImeiOperator(task_id="t", iccids=GOOD_ICCID, changed_before="tonight"),
        "changed_before",
    ),
    (
        "changed_before == changed_since",
        lambda: QueryImeiOperator(
            task_id="t",
            iccids=GOOD_ICCID,
            changed_since="2026-01-02T00:00:00+00:00",
            changed_before="2026-01-02T03:00:00+03:00",
        ),
        "changed_before",
    ),
    (
        "max_workers 'many'",
        lambda: QueryImeiOperator(task_id="t", iccids=GOOD_ICCID, max_workers="many"),
        "max_workers",
    ),
    (
        "sms_uid with 2 SIMs",
        lambda: SendSmsOperator(
            task_id="t", iccids=[GOOD_ICCID, "8925401000000000020"], message_text="hi", sms_uid="abc"
        ),
        "sms_uid",
    ),
    (
        "sms one bad of batch",
        lambda: SendSmsOperator(task_id="t", iccids=[GOOD_ICCID, "1"], message_text="hi"),
        "iccids[1]",
    ),
    (
        "sms text too long",
        lambda: SendSmsOperator(task_id="t", iccids=[GOOD_ICCID], message_text="\u20ac" * 81),
        "message_text",
    ),
]


@pytest.mark.parametrize(("label", "make", "field"), OPERATOR_CASES, ids=[c[0] for c in OPERATOR_CASES])
def test_operator_fails_without_sending(sb, label, make, field):
    TALLY["cases"] += 1
    with pytest.raises(AirflowFailException) as info:
        make().execute({})
    assert str(info.value).startswith(f"{field}:"), str(info.value)
    assert sb.stats()["requests"] == 0, label
    TALLY["held"] += 1


def test_an_empty_window_names_both_fields(sb):
    """The same instant written in two offsets is an empty window, not a one-instant one."""
    operator = QueryImeiOperator(
        task_id="t", iccids=GOOD_ICCID, changed_since="2026-01-02T00:00:00Z", changed_before="2026-01-02T03:00:00+03:00"
    )
    with pytest.raises(AirflowFailException, match=r"changed_before: must be later than changed_since \(the window"):
        operator.execute({})
    assert sb.stats()["requests"] == 0


TEMPLATED_DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator
from airflow_provider_m2m.operators.m2m import QueryImeiOperator, SendSmsOperator

ok = "{ok}"
with DAG("bad_templates", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False,
         params={{"days": "abc"}}):
    CheckSimSwapOperator(task_id="within_days_abc", msisdns="0722000000", within_days="{{{{ 'abc' }}}}", retries=3)
    CheckSimSwapOperator(task_id="within_days_param", msisdns="0722000000", within_days="{{{{ params.days }}}}",
                         retries=3)
    CheckSimSwapOperator(task_id="within_days_91", msisdns="0722000000", within_days="{{{{ 90 + 1 }}}}", retries=3)
    CheckSimSwapOperator(task_id="msisdns_list_text", msisdns="{{{{ ['0722000000', None] }}}}", retries=3)
    QueryImeiOperator(task_id="iccids_42", iccids="{{{{ 42 }}}}", retries=3)
    QueryImeiOperator(task_id="changed_since_words", iccids=ok, changed_since="{{{{ 'last tuesday' }}}}", retries=3)
    QueryImeiOperator(task_id="max_workers_none_text", iccids=ok, max_workers="{{{{ None }}}}", retries=3)
    SendSmsOperator(task_id="text_non_gsm", iccids=ok, message_text="{{{{ 'caf\\u00e9 \\u00e7a' }}}}", retries=3)
    SendSmsOperator(task_id="text_161", iccids=ok, message_text="{{{{ 'a' * 161 }}}}", retries=3)
    SendSmsOperator(task_id="sms_uid_long", iccids=ok, message_text="hi", sms_uid="{{{{ 'x' * 13 }}}}", retries=3)
"""
TEMPLATED_FIELDS = {
    "within_days_abc": "within_days",
    "within_days_param": "within_days",
    "within_days_91": "within_days",
    "msisdns_list_text": "msisdns",
    "iccids_42": "iccids",
    "changed_since_words": "changed_since",
    "max_workers_none_text": "max_workers",
    "text_non_gsm": "message_text",
    "text_161": "message_text",
    "sms_uid_long": "sms_uid",
}


@pytest.mark.airflow
def test_templated_values_of_the_wrong_type_fail_the_task(sb, dags_folder, capfd):
    dag = load_dag(dags_folder, TEMPLATED_DAG.format(ok=GOOD_ICCID), "bad_templates")
    dr = dag.test()
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    out = capfd.readouterr()
    text = out.out + out.err
    for task_id, field in TEMPLATED_FIELDS.items():
        TALLY["cases"] += 1
        ti = tis[task_id]
        assert ti.state == "failed", (task_id, ti.state)
        assert ti.try_number == 1, (task_id, "AirflowFailException must not be retried")
        assert f"{field}: " in text or f"{field}[" in text, (task_id, field)
        TALLY["held"] += 1
    assert sb.stats()["requests"] == 0
    print(
        f"\n[bad-input] {len(HOOK_CASES)} hook cases, {len(OPERATOR_CASES)} operator cases, "
        f"{len(TEMPLATED_FIELDS)} templated dag.test() tasks; {TALLY['held']} of {TALLY['cases']} held "
        "(InvalidRequestError / AirflowFailException naming the field, zero requests to the sandbox)"
    )


# ------------------------------------------------------------------------------------ iccids_uri (a batch file)
def _iccid_file(tmp_path, lines: list[str], header: str = "iccid,asset_name") -> str:
    path = tmp_path / "batch.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path.as_uri()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("both", r"^iccids / iccids_uri: give exactly one: .* \(got iccids and iccids_uri given\)$"),
        ("neither", r"^iccids / iccids_uri: give exactly one: .* \(got neither given\)$"),
        ("bad_line", r"^iccids_uri {uri} line 501: iccid: an ICCID has digits only \(got '89254010000000000O1'\)$"),
        ("short_line", r"^iccids_uri {uri} line 3: iccid: an ICCID has 18 to 22 digits, this one has 5"),
        ("after_blanks", r"^iccids_uri {uri} line 11: iccid: an ICCID has digits only \(got '89254010000000000O1'\)$"),
        ("no_column", r"^iccids_uri {uri} line 1: the header has no iccid column \(got sim,asset_name\)$"),
        ("empty", r"^iccids_uri {uri}: at least one ICCID is required: the file lists none$"),
    ],
)
def test_iccids_uri_bad_input_sends_nothing(sb, tmp_path, case, expected):
    """A bad batch file fails the task naming the file, the line and the rule, before any query (the whole file)."""
    good = sb.fleet.iccids[:600]
    lines, header, kwargs = [f"{i},truck" for i in good], "iccid,asset_name", {}
    if case == "both":
        kwargs["iccids"] = good[:1]
    elif case == "neither":
        lines = None
    elif case == "bad_line":
        lines[499] = "89254010000000000O1,truck"  # a letter O, far down the file: nothing before it is sent
    elif case == "short_line":
        lines[1] = "89254,truck"
    elif case == "after_blanks":  # skipped, yet counted: the message names the line an editor shows
        lines[3], lines[5], lines[9] = "", " , ", "89254010000000000O1,truck"
    elif case == "no_column":
        header = "sim,asset_name"
    else:
        lines = []
    uri = None if lines is None else _iccid_file(tmp_path, lines, header)
    with pytest.raises(AirflowFailException) as info:
        QueryImeiOperator(task_id="t", iccids_uri=uri, **kwargs).execute({})
    assert re.match(expected.format(uri=re.escape(uri or "")), str(info.value)), str(info.value)
    assert sb.stats()["requests"] == 0


def test_iccids_uri_takes_an_iccid_column_in_capitals(sb, tmp_path):
    """``ICCID`` is the iccid column too (any case), as in every fleet file."""
    good = sb.fleet.iccids[:3]
    uri = _iccid_file(tmp_path, [f"{i},truck" for i in good], header="ICCID,asset_name")
    pushed = {}

    class Ti:  # the one call the operator makes on its task instance outside a DAG run
        def xcom_push(self, key, value):
            pushed[key] = value

    rows = QueryImeiOperator(task_id="t", iccids_uri=uri).execute({"ti": Ti()})
    assert sorted(row["iccid"] for row in rows) == sorted(good) and not any(row["error"] for row in rows)
    assert sb.stats()["requests"] == 3 and "changed_iccids" in pushed

