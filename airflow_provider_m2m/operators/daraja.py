"""Operator for Safaricom Daraja: screen MSISDNs for a recent SIM swap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pendulum

from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.hooks.daraja import CHECK_PATH, DarajaHook
from airflow_provider_m2m.operators.arguments import as_int, as_workers
from airflow_provider_m2m.operators.base import PlatformOperator
from airflow_provider_m2m.protocol import msisdn as msisdn_rules
from airflow_provider_m2m.protocol.msisdn import masked
from airflow_provider_m2m.utils.task_failures import bad_input_fails_task
from airflow_provider_m2m.utils.version_compat import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Daraja reports only swaps younger than 3 months: a longer window cannot be answered.
MAX_WITHIN_DAYS = 90
ON_RECENT_SWAP = ("fail", "skip", "continue")
#: The XCom key under which a blocking screen lists the numbers that blocked it (masked).
BLOCKED_XCOM_KEY = "blocked_msisdns"


class CheckSimSwapOperator(PlatformOperator[DarajaHook]):
    """
    Ask Daraja whether each number's SIM was swapped recently, before a risky action (payout, reset...).

    Every number is validated first (``0722000000``, ``+254722000000`` and ``254722000000`` are the same
    number); an invalid one fails the task with :class:`AirflowFailException` and nothing is sent. Each
    distinct number is checked once (a check costs money). Returns one row per input number:
    ``SimSwapRecord.as_dict()`` plus ``swapped_recently``: True when the last swap is at most ``within_days``
    days before today (UTC), False when it is not, and None when the number could not be checked (Daraja
    answered an error, or retries ran out): its ``error`` says why. None means "unknown", never "safe".

    The screen blocks by default (``on_recent_swap="fail"``): a screen placed before a risky action fails
    closed unless the DAG author opts out. A safe default rather than a required argument: a required one
    would stop every existing DAG from parsing, the safe ones included, while the default alone already
    makes a screen written without the argument block; only a DAG that relied on the old ``continue``
    default has to say so now. ``continue`` is the explicit opt-out for reporting runs that filter the rows
    themselves (screen with ``continue``, keep the rows whose ``swapped_recently`` is False, act on those).
    With ``skip`` or ``fail``, a number that could not be checked blocks the task exactly as a recent swap
    does; this is folded into ``on_recent_swap`` rather than a separate switch on purpose: a screen that
    guards a risky action has one question ("may we go ahead?"), and no setting of it lets an unchecked
    number through except ``continue``, which blocks nothing and reports everything.

    When the screen blocks, it first pushes the numbers that blocked it to XCom under the key
    ``blocked_msisdns``, masked as in the logs (``*******1234``), so the run shows which customers were
    stopped; then it fails (without retries) or skips.

    .. code-block:: python

        screen = CheckSimSwapOperator(task_id="screen", msisdns="{{ params.msisdn }}", within_days=30)
        screen >> payout  # the payout runs only when no number was swapped within 30 days

    :param msisdns: one number (a plain string is one number, never split) or a list. Templated.
    :param within_days: the window in days, 1 to 90 (Daraja knows only the last 3 months). Templated.
    :param on_recent_swap: what a recent swap or an unchecked number does: ``fail`` (the default: fail the
        task without retries, listing the numbers masked to their last 4 digits), ``skip`` (skip the task, so
        its downstream does not run) or ``continue`` (return the rows, ``swapped_recently`` None for an
        unchecked number). Templated.
    :param daraja_conn_id: the Daraja connection. Templated.
    :param max_workers: checks in flight at once (default 16). Templated.
    """

    template_fields: Sequence[str] = ("msisdns", "within_days", "on_recent_swap", "daraja_conn_id", "max_workers")
    ui_color = "#dff3d8"
    hook_class = DarajaHook

    def __init__(
        self,
        *,
        msisdns: str | list[str],
        within_days: int | str = MAX_WITHIN_DAYS,
        on_recent_swap: str = "fail",
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

    def execute(self, context: Context) -> list[dict[str, Any]]:
        with bad_input_fails_task():
            days = as_int(self.within_days, "within_days", 1, MAX_WITHIN_DAYS)
            mode = str(self.on_recent_swap).strip().lower()
            if mode not in ON_RECENT_SWAP:
                raise InvalidRequestError("on_recent_swap", f"must be one of {', '.join(ON_RECENT_SWAP)}", repr(mode))
            workers = as_workers(self.max_workers)
            numbers = msisdn_rules.validate_many(self.msisdns)  # at least one: an empty screen is bad input
            try:
                records = self.hook.check_sim_swaps(numbers, max_workers=workers)
                today = pendulum.now("UTC").date()
                rows: list[dict[str, Any]] = []
                for record in records:
                    if record.error:
                        self.log.warning("Number %s could not be checked: %s", masked(record.msisdn), record.error)
                    swapped = None if record.error else record.swapped_within(days, today)
                    rows.append({**record.as_dict(), "swapped_recently": swapped})
            finally:
                self.hook.close()
        recent = sorted({row["msisdn"] for row in rows if row["swapped_recently"]})
        unchecked = sorted({row["msisdn"] for row in rows if row["swapped_recently"] is None})
        self.log.info(
            "Checked %d numbers: %d swapped SIM within the last %d days, %d not swapped, %d could not be checked",
            len(rows),
            sum(row["swapped_recently"] is True for row in rows),
            days,
            sum(row["swapped_recently"] is False for row in rows),
            sum(row["swapped_recently"] is None for row in rows),
        )
        if mode != "continue" and (recent or unchecked):
            blocked = self._blocked(recent, unchecked, days)
            # Before raising: the run then shows which customers were stopped (masked, as in the log).
            context["ti"].xcom_push(key=BLOCKED_XCOM_KEY, value=[masked(n) for n in sorted({*recent, *unchecked})])
            if mode == "skip":
                raise AirflowSkipException(blocked)
            raise AirflowFailException(blocked)
        return rows

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: Daraja's IMSI check (``imsi/v1/checkATI``) in."""
        from airflow_provider_m2m.utils import lineage

        return lineage.operator_lineage([lineage.platform_dataset(self.hook.base_url, CHECK_PATH.lstrip("/"))])

    @staticmethod
    def _blocked(recent: list[str], unchecked: list[str], days: int) -> str:
        """Why the screen blocks: the recent swaps and the numbers it could not check, masked."""
        parts = []
        if recent:
            parts.append(f"SIM swapped within the last {days} days: {', '.join(masked(n) for n in recent)}")
        if unchecked:
            parts.append(f"could not be checked (blocked, not assumed safe): {', '.join(masked(n) for n in unchecked)}")
        return "; ".join(parts)


__all__ = ["CheckSimSwapOperator"]
