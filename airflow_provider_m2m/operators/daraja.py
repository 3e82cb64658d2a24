"""Operator for Safaricom Daraja: screen MSISDNs for a recent SIM swap."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import BaseOperator

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.hooks.daraja import CHECK_PATH, DarajaHook
from airflow_provider_m2m.operators._common import as_int, as_workers, bad_input_fails_task
from airflow_provider_m2m.protocol.msisdn import masked
from airflow_provider_m2m.version_compat import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Daraja reports only swaps younger than 3 months: a longer window cannot be answered.
MAX_WITHIN_DAYS = 90
ON_RECENT_SWAP = ("continue", "skip", "fail")


class CheckSimSwapOperator(BaseOperator):
    """
    Ask Daraja whether each number's SIM was swapped recently, before a risky action (payout, reset...).

    Every number is validated first (``0722000000``, ``+254722000000`` and ``254722000000`` are the same
    number); an invalid one fails the task with :class:`AirflowFailException` and nothing is sent. Each
    distinct number is checked once (a check costs money). Returns one row per input number:
    ``SimSwapRecord.as_dict()`` plus ``swapped_recently`` (the last swap is at most ``within_days`` days
    before today, UTC). A number whose check failed has ``error`` set and ``swapped_recently`` false.

    .. code-block:: python

        CheckSimSwapOperator(task_id="screen", msisdns="{{ params.msisdn }}", within_days=30, on_recent_swap="fail")

    :param msisdns: one number (a plain string is one number, never split) or a list. Templated.
    :param within_days: the window in days, 1 to 90 (Daraja knows only the last 3 months). Templated.
    :param on_recent_swap: what a recent swap does: ``continue`` (return the rows), ``skip`` (skip the
        task) or ``fail`` (fail the task, listing the numbers masked to their last 4 digits). Templated.
    :param daraja_conn_id: the Daraja connection. Templated.
    :param max_workers: checks in flight at once (default 16).
    """

    template_fields: Sequence[str] = ("msisdns", "within_days", "on_recent_swap", "daraja_conn_id")
    ui_color = "#dff3d8"

    def __init__(
        self,
        *,
        msisdns: str | list[str],
        within_days: int | str = MAX_WITHIN_DAYS,
        on_recent_swap: str = "continue",
        daraja_conn_id: str = DarajaHook.default_conn_name,
        max_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.msisdns = msisdns
        self.within_days = within_days
        self.on_recent_swap = on_recent_swap
        self.daraja_conn_id = daraja_conn_id
        self.max_workers = max_workers

    @cached_property
    def hook(self) -> DarajaHook:
        """The Daraja hook (built on first use, never at parse time)."""
        return DarajaHook(daraja_conn_id=self.daraja_conn_id)

    def execute(self, context: Context) -> list[dict[str, Any]]:
        with bad_input_fails_task():
            days = as_int(self.within_days, "within_days", 1, MAX_WITHIN_DAYS)
            mode = str(self.on_recent_swap).strip().lower()
            if mode not in ON_RECENT_SWAP:
                raise InvalidRequestError("on_recent_swap", f"must be one of {', '.join(ON_RECENT_SWAP)}", repr(mode))
            workers = as_workers(self.max_workers)
            try:
                records = self.hook.check_sim_swaps(self.msisdns, max_workers=workers)  # validates all first
                today = pendulum.now("UTC").date()
                rows: list[dict[str, Any]] = []
                failed = 0
                for record in records:
                    if record.error:
                        failed += 1
                        self.log.warning("Number %s: %s", masked(record.msisdn), record.error)
                    rows.append({**record.as_dict(), "swapped_recently": record.swapped_within(days, today)})
            finally:
                self.hook.close()
        recent = sorted({row["msisdn"] for row in rows if row["swapped_recently"]})
        self.log.info(
            "Checked %d numbers: %d swapped SIM within the last %d days, %d failed",
            len(rows),
            len(recent),
            days,
            failed,
        )
        if recent and mode == "skip":
            raise AirflowSkipException(f"{len(recent)} number(s) swapped SIM within the last {days} days")
        if recent and mode == "fail":
            shown = ", ".join(masked(number) for number in recent)
            raise AirflowFailException(f"SIM swapped within the last {days} days: {shown}")
        return rows

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: Daraja's IMSI check (``imsi/v1/checkATI``) in."""
        from airflow_provider_m2m import lineage

        return lineage.operator_lineage([lineage.platform_dataset(self.hook.base_url, CHECK_PATH.lstrip("/"))])
