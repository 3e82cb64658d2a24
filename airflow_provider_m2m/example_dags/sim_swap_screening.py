"""
SIM-swap screening with Safaricom Daraja.

Before a risky action (a payout, a password reset, onboarding), check whether the phone numbers' SIMs
were swapped recently: a fresh SIM swap is the usual first step of account takeover. Numbers come from
the form (``07...``, ``+254...`` and ``254...`` forms are all accepted) and/or a CSV file with a ``msisdn``
column. Each distinct number is checked once (a check costs money). ``on_recent_swap`` decides what a
recent swap does: ``continue`` writes the report, ``skip`` skips everything downstream, ``fail`` fails the
run listing the numbers (masked to their last 4 digits). A number that could not be checked blocks the same way
(the screen fails closed); under ``continue`` it is reported with ``swapped_recently`` empty. The report
lists the numbers swapped within ``within_days`` days, plus the numbers whose check failed.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator

REPORT_COLUMNS = ["msisdn", "swapped_recently", "last_swap_date", "registration_date", "registration_note", "error"]

with DAG(
    dag_id="sim_swap_screening",
    description="Screen phone numbers for a recent SIM swap (Safaricom Daraja)",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    doc_md=__doc__,
    tags=["daraja", "sim-swap"],
    params={
        "msisdns": Param(
            ["254105433721", "0118756361", "+254163369922", "254773645173"],
            type=["array", "null"],
            items={"type": "string"},
            title="Phone numbers",
            description="One Kenyan mobile number per line: 07XXXXXXXX, 01XXXXXXXX, +2547... or 2547...",
        ),
        "msisdn_file_uri": Param(
            None,
            type=["null", "string"],
            title="Numbers file (optional)",
            description=(
                "URI of a CSV file with a msisdn column, e.g. s3://bucket/numbers.csv or file:///data/numbers.csv. "
                "Its numbers are added to the list above."
            ),
        ),
        "within_days": Param(
            30,
            type="integer",
            minimum=1,
            maximum=90,
            title="Window (days)",
            description="A swap at most this many days ago counts as recent. Daraja only knows the last 90 days.",
        ),
        "on_recent_swap": Param(
            "continue",
            type="string",
            enum=["continue", "skip", "fail"],
            values_display={
                "continue": "Continue: write the report",
                "skip": "Skip everything downstream",
                "fail": "Fail the run",
            },
            title="When a number was swapped recently",
        ),
        "report_base_uri": Param(
            None,
            type=["null", "string"],
            title="Report folder",
            description="URI under which reports are written (default: reports/ under the Airflow home).",
        ),
    },
) as dag:

    @task
    def collect_numbers(params=None) -> list[str]:
        """The numbers from the form and the file, as given (the operator validates and normalises them)."""
        from airflow_provider_m2m.utils.files import read_csv

        numbers = list(params["msisdns"] or [])
        if params["msisdn_file_uri"]:
            numbers += [row["msisdn"] for row in read_csv(params["msisdn_file_uri"])]
        if not numbers:
            raise ValueError("no phone numbers: fill in the list or give a file")
        return numbers

    screen = CheckSimSwapOperator(
        task_id="check_sim_swap",
        msisdns=collect_numbers(),
        within_days="{{ params.within_days }}",
        on_recent_swap="{{ params.on_recent_swap }}",
    )

    @task(multiple_outputs=False)  # one XCom: the summary dict, not one per key
    def write_report(rows: list[dict], params=None, run_id=None) -> dict:
        """Write the numbers swapped within the window (and failed checks) as CSV."""
        from airflow_provider_m2m.utils.files import report_folder, write_csv

        flagged = [row for row in rows if row["swapped_recently"] or row.get("error")]
        uri = report_folder(params["report_base_uri"], "sim_swap_screening", run_id) + "/recent_swaps.csv"
        write_csv(uri, REPORT_COLUMNS, flagged)
        summary = {
            "report_csv": uri,
            "checked": len(rows),
            "swapped_recently": sum(bool(row["swapped_recently"]) for row in rows),
            "failed": sum(bool(row.get("error")) for row in rows),
        }
        print(f"Report: {uri}\nSummary: {summary}")
        return summary

    write_report(screen.output)
