"""CheckSimSwapOperator under dag.test(): the three on_recent_swap modes, the blocking default, templating, mapping."""

from __future__ import annotations

import json

import pendulum
import pytest
from conftest import DARAJA_SECRET, load_dag

from airflow_provider_m2m.hooks.daraja import clear_token_cache

DAG_SOURCE = """
import json
import pendulum
from airflow.sdk import DAG, task
from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator

RECENT, NO_SWAP, NOTE = {recent!r}, {no_swap!r}, {note!r}
NUMBERS = ["0" + RECENT[3:], NO_SWAP, "+" + NOTE, RECENT]

with DAG(
    "check_sim_swap",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={{"number": "+" + NO_SWAP, "days": "30", "mode": "fail"}},
) as dag:
    keep = CheckSimSwapOperator(
        task_id="continue", msisdns=NUMBERS, within_days=30, on_recent_swap="continue", max_workers="{{{{ 1 + 1 }}}}"
    )
    CheckSimSwapOperator(task_id="skip", msisdns=NUMBERS, within_days=30, on_recent_swap="skip")
    CheckSimSwapOperator(task_id="fail", msisdns=NUMBERS, within_days=30, on_recent_swap="fail")
    CheckSimSwapOperator(task_id="quiet_fail", msisdns=[NO_SWAP, NOTE], within_days=30, on_recent_swap="fail")
    templated = CheckSimSwapOperator(
        task_id="templated",
        msisdns="{{{{ params.number }}}}",
        within_days="{{{{ params.days }}}}",
        on_recent_swap="{{{{ params.mode }}}}",
    )
    CheckSimSwapOperator(task_id="bad_input", msisdns=[RECENT, "0202000000"])
    CheckSimSwapOperator(task_id="bad_window", msisdns=RECENT, within_days=91)
    mapped = CheckSimSwapOperator.partial(task_id="mapped", within_days=30, on_recent_swap="continue").expand(
        msisdns=[[RECENT], NO_SWAP]
    )

    @task
    def record(rows, mapped_rows, templated_rows):
        with open({out!r}, "w") as f:
            json.dump({{"rows": rows, "mapped": list(mapped_rows), "templated": templated_rows}}, f)

    record(keep.output, mapped.output, templated.output)
"""


@pytest.fixture
def run(sb, dags_folder, tmp_path, capsys):
    clear_token_cache()
    cases = sb.fleet.swap_edge_cases
    out = tmp_path / "rows.json"
    source = DAG_SOURCE.format(
        recent=cases["swapped_1_day_ago"], no_swap=cases["no_swap"], note=cases["registration_note"], out=str(out)
    )
    dag = load_dag(dags_folder, source, "check_sim_swap")
    dag_run = dag.test()
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    captured = capsys.readouterr()
    yield {
        "states": states,
        "results": json.loads(out.read_text()),
        "output": captured.out + captured.err,
        "cases": cases,
        "stats": sb.stats(),
        "recent_swap": sb.fleet.swaps[cases["swapped_1_day_ago"]].last_swap,
    }
    clear_token_cache()


def test_modes_templating_and_mapping(run):
    cases, states = run["cases"], run["states"]
    recent = cases["swapped_1_day_ago"]
    assert states == {
        ("continue", -1): "success",
        ("skip", -1): "skipped",
        ("fail", -1): "failed",
        ("quiet_fail", -1): "success",
        ("templated", -1): "success",
        ("bad_input", -1): "failed",
        ("bad_window", -1): "failed",
        ("mapped", 0): "success",
        ("mapped", 1): "success",
        ("record", -1): "success",
    }

    rows = run["results"]["rows"]
    assert [row["msisdn"] for row in rows].count(recent) == 2 and len(rows) == 4
    age = (pendulum.now("UTC").date() - run["recent_swap"]).days
    assert age <= 30, "conftest.ANCHOR is fixed: the sandbox's recent swap has aged out of the 30-day window"
    by_number = {row["msisdn"]: row for row in rows}
    assert by_number[recent]["swapped_recently"] is True
    assert by_number[cases["no_swap"]]["swapped_recently"] is False
    assert by_number[cases["no_swap"]]["last_swap_date"] is None
    assert by_number[cases["registration_note"]]["registration_note"] == "MSISDN registration is more than one year old"
    assert set(rows[0]) == {
        "msisdn",
        "last_swap_date",
        "registration_date",
        "registration_note",
        "imsi_hash",
        "request_ref_id",
        "error",
        "swapped_recently",
    }

    mapped = run["results"]["mapped"]
    assert [[row["msisdn"] for row in rows] for rows in mapped] == [[recent], [cases["no_swap"]]]
    assert [rows[0]["swapped_recently"] for rows in mapped] == [True, False]
    assert [row["msisdn"] for row in run["results"]["templated"]] == [cases["no_swap"]]

    # Each number is checked once per task that ran: continue, skip, fail, quiet_fail, templated, mapped.
    checks = run["stats"]["checks_per_msisdn"]
    assert checks[recent] == 4  # continue, skip, fail, mapped[0] (bad_input sent nothing)
    assert run["stats"]["tokens_issued"] == 1

    output = run["output"]
    masked = "*******" + recent[-4:]
    assert f"SIM swapped within the last 30 days: {masked}" in output
    assert f"SIM swapped within the last 30 days: {recent}" not in output
    assert output.count(f"SIM swapped within the last 30 days: {masked}") >= 2  # fail and skip
    assert "msisdns[1]: must be a Kenyan mobile number" in output
    assert "within_days: must be an integer from 1 to 90 (got 91)" in output
    assert DARAJA_SECRET not in output


# ---------------------------------------------------------------- fail closed (issue 20, point 1)
SCREEN_DAG = """
import json
import datetime as dt
import pendulum
from airflow.sdk import DAG, task
from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator

with DAG("screen_then_payout", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
    for mode in ("fail", "skip", "continue"):
        screen = CheckSimSwapOperator(
            task_id=f"screen_{{mode}}",
            msisdns=[{good!r}, {unknown!r}],
            within_days=30,
            on_recent_swap=mode,
            retries=2,
            retry_delay=dt.timedelta(0),
        )

        @task(task_id=f"payout_{{mode}}")
        def payout(rows, mode=mode):
            with open({out!r} + mode, "w") as f:
                json.dump(rows, f)

        payout(screen.output)

    CheckSimSwapOperator(
        task_id="bad_secret",
        msisdns={good!r},
        on_recent_swap="fail",
        daraja_conn_id="daraja_wrong_secret",
        retries=2,
        retry_delay=dt.timedelta(0),
    )
"""


@pytest.fixture
def screened(sb, dags_folder, tmp_path, capsys, monkeypatch):
    clear_token_cache()
    good = sb.fleet.swap_edge_cases["no_swap"]
    unknown = next(f"2547{n:08d}" for n in range(10**8) if f"2547{n:08d}" not in sb.fleet.swaps)
    wrong = json.loads(sb.conn_env()["AIRFLOW_CONN_DARAJA_DEFAULT"]) | {"password": "not-the-secret"}
    monkeypatch.setenv("AIRFLOW_CONN_DARAJA_WRONG_SECRET", json.dumps(wrong))
    out = tmp_path / "payout-"
    dag = load_dag(dags_folder, SCREEN_DAG.format(good=good, unknown=unknown, out=str(out)), "screen_then_payout")
    dag_run = dag.test()
    captured = capsys.readouterr()
    yield {
        "tis": {ti.task_id: ti for ti in dag_run.get_task_instances()},
        "output": captured.out + captured.err,
        "good": good,
        "unknown": unknown,
        "out": out,
    }
    clear_token_cache()


def test_a_number_that_could_not_be_checked_blocks_the_payout(screened):
    """Daraja answers 404 for one number: fail and skip stop the payout; continue reports it as unknown."""
    tis, output, unknown = screened["tis"], screened["output"], screened["unknown"]
    states = {task_id: ti.state for task_id, ti in tis.items()}
    assert states == {
        "screen_fail": "failed",
        "payout_fail": "upstream_failed",
        "screen_skip": "skipped",
        "payout_skip": "skipped",
        "screen_continue": "success",
        "payout_continue": "success",
        "bad_secret": "failed",
    }
    assert tis["screen_fail"].try_number == 1, "a blocked screen is final, not retried"
    assert not (screened["out"].parent / "payout-fail").exists()
    assert not (screened["out"].parent / "payout-skip").exists()

    rows = json.loads((screened["out"].parent / "payout-continue").read_text())
    by_number = {row["msisdn"]: row for row in rows}
    assert by_number[screened["good"]]["swapped_recently"] is False
    assert by_number[screened["good"]]["error"] is None
    assert by_number[unknown]["swapped_recently"] is None, "an unchecked number is neither swapped nor safe"
    assert "404.001.01" in by_number[unknown]["error"]

    masked = "*******" + unknown[-4:]
    assert f"could not be checked (blocked, not assumed safe): {masked}" in output
    assert "Checked 2 numbers: 0 swapped SIM within the last 30 days, 1 not swapped, 1 could not be checked" in output
    assert unknown not in output, "numbers are masked in logs"

    # Refused credentials stay a failure without retries, naming the connection.
    assert tis["bad_secret"].try_number == 1
    assert "Connection 'daraja_wrong_secret': Daraja refused the consumer key/secret" in output


# ---------------------------------------------------------------- blocks by default (issue 25, point 1)
DEFAULT_SCREEN_DAG = """
import pendulum
from airflow.sdk import DAG, task
from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator

with DAG("screen_by_default", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
    screen = CheckSimSwapOperator(task_id="screen", msisdns=[{no_swap!r}, "0" + {recent!r}[3:]], within_days=30)

    @task
    def payout(rows):
        open({out!r}, "w").write("paid")

    payout(screen.output)
"""


def test_a_screen_written_without_on_recent_swap_stops_the_payout(sb, dags_folder, tmp_path, capsys):
    """The user's DAG: a screen without on_recent_swap before a payout; one number was swapped yesterday."""
    clear_token_cache()
    cases = sb.fleet.swap_edge_cases
    recent, out = cases["swapped_1_day_ago"], tmp_path / "paid"
    source = DEFAULT_SCREEN_DAG.format(no_swap=cases["no_swap"], recent=recent, out=str(out))
    dag_run = load_dag(dags_folder, source, "screen_by_default").test()
    output = "".join(capsys.readouterr())
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    assert {task_id: ti.state for task_id, ti in tis.items()} == {"screen": "failed", "payout": "upstream_failed"}
    assert not out.exists(), "the payout ran although a number was swapped yesterday"
    assert tis["screen"].try_number == 1, "a blocked screen is final, not retried"

    blocked = tis["screen"].xcom_pull(task_ids="screen", key="blocked_msisdns")
    assert blocked == ["*******" + recent[-4:]], blocked  # which customer was stopped, masked as in the log
    assert recent not in str(blocked) and recent[3:] not in str(blocked)
    assert f"SIM swapped within the last 30 days: *******{recent[-4:]}" in output
    assert recent not in output
    clear_token_cache()


def test_skip_pushes_the_blocking_numbers_too(screened):
    """skip and fail push the numbers that blocked them (here: one Daraja could not check) before stopping."""
    tis, unknown = screened["tis"], screened["unknown"]
    for task_id in ("screen_fail", "screen_skip"):
        assert tis[task_id].xcom_pull(task_ids=task_id, key="blocked_msisdns") == ["*******" + unknown[-4:]]
    assert tis["screen_continue"].xcom_pull(task_ids="screen_continue", key="blocked_msisdns") is None
