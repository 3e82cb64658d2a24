"""
SIM-swap screening with Safaricom Daraja before a risky action (a payout): a fresh SIM swap is the usual first
step of account takeover. **Before payout**: the screen blocks by default, so the payout runs only if no number
was swapped within ``within_days`` days and every number could be checked (the screen's XCom ``blocked_msisdns``
lists the numbers that stopped it, masked). **Per customer**: screen with ``on_recent_swap="continue"``, keep
the customers checked and not swapped recently, pay those. The default numbers include one swapped yesterday.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator

with DAG(
    dag_id="sim_swap_screening",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    doc_md=__doc__,
    tags=["daraja", "sim-swap"],
    params={
        "msisdns": Param(
            ["254105433721", "0118756361", "+254163369922", "254773645173"],
            type="array",
            items={"type": "string"},
            title="Phone numbers",
            description="One Kenyan mobile number per line: 07XXXXXXXX, 01XXXXXXXX, +2547... or 2547...",
        ),
        "within_days": Param(30, type="integer", minimum=1, maximum=90, title="Window (days)"),
    },
) as dag:

    @task
    def pay(rows: list[dict]) -> list[str]:
        """Stands in for the risky action (a payout): here it only says how many customers it pays."""
        print(f"Paying {len(rows)} customer(s)")
        return [row["msisdn"] for row in rows]

    # [START howto_screen_before_payout]
    screen = CheckSimSwapOperator(
        task_id="screen", msisdns="{{ params.msisdns }}", within_days="{{ params.within_days }}"
    )
    pay.override(task_id="payout")(screen.output)  # runs only if the screen let every number through
    # [END howto_screen_before_payout]

    # [START howto_screen_per_customer]
    rows = CheckSimSwapOperator(
        task_id="screen_each",
        msisdns="{{ params.msisdns }}",
        within_days="{{ params.within_days }}",
        on_recent_swap="continue",  # report every number; the next task decides per customer
    ).output

    @task
    def not_swapped(rows: list[dict]) -> list[dict]:
        """The customers checked and not swapped recently (None means "could not check", never "safe")."""
        return [row for row in rows if row["swapped_recently"] is False]

    pay.override(task_id="pay_each")(not_swapped(rows))
    # [END howto_screen_per_customer]
