"""CheckSimSwapOperator under dag.test(): the three on_recent_swap modes, templating, mapping, bad input."""

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
    keep = CheckSimSwapOperator(task_id="continue", msisdns=NUMBERS, within_days=30, max_workers=2)
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
    mapped = CheckSimSwapOperator.partial(task_id="mapped", within_days=30).expand(msisdns=[[RECENT], NO_SWAP])

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
    assert "1 number(s) swapped SIM within the last 30 days" in output
    assert "msisdns[1]: must be a Kenyan mobile number" in output
    assert "within_days: must be an integer from 1 to 90 (got 91)" in output
    assert DARAJA_SECRET not in output
