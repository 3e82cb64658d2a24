"""
Parallel SIM-swap screening as a big batch runs it: the numbers in chunks, one mapped task per chunk, spread over
the Celery workers. Every chunk needs a Daraja token at the same moment, and Daraja keeps one live token per app.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator

with DAG(
    dag_id="prod_mapped_sim_swap_screening",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    params={"chunks": Param([], type="array", items={"type": "array", "items": {"type": "string"}})},
):

    @task
    def chunks(params=None) -> list[list[str]]:
        return params["chunks"]

    CheckSimSwapOperator.partial(task_id="screen", within_days=30, on_recent_swap="continue", max_workers=4).expand(
        msisdns=chunks()
    )
