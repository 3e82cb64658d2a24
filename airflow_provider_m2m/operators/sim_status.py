"""Operator that activates or deactivates SIMs on SIM Insight, reading each SIM's status first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_m2m.exceptions import (
    AuthenticationError,
    M2mApiError,
    M2mProviderError,
    OutcomeUnknownError,
    RetryToSettleError,
)
from airflow_provider_m2m.hooks.m2m import M2mHook, SimStatus
from airflow_provider_m2m.operators.arguments import as_workers
from airflow_provider_m2m.operators.base import PlatformOperator
from airflow_provider_m2m.protocol import iccid as iccid_rules
from airflow_provider_m2m.protocol import sim_status
from airflow_provider_m2m.utils.task_failures import bad_input_fails_task
from airflow_provider_m2m.utils.version_compat import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

CHANGED, UNCHANGED, SKIPPED, FAILED = "changed", "unchanged", "skipped", "failed"


class SetSimStatusOperator(PlatformOperator[M2mHook]):
    """
    Give each SIM the status you name (``deactivated`` or ``active``), never touching a closed SIM.

    ``status`` is required: there is no default, so a task written without it cannot suspend SIMs by
    accident (before 0.2 it defaulted to ``deactivated``).

    Every ICCID and the status word are validated first; bad input fails the task and nothing is sent.
    Then each SIM's status is read (``query_status``, concurrently) and only the SIMs that need it get a
    ``set_status``: a SIM already so is ``unchanged``, a ``closed`` SIM is ``skipped`` (closed is
    permanent and the platform asks for no further calls). Because the status is read first, a retried
    task never changes a SIM twice. A ``set_status`` whose outcome is unknown (dropped connection, read
    timeout) is never resent blindly: the status is read back, and the SIM is ``changed`` if it now has the
    status, else ``failed``.

    Returns one row per SIM, in input order: ``{"iccid", "previous_status", "status", "outcome",
    "error"}`` with outcome ``changed`` / ``unchanged`` / ``skipped`` / ``failed``; each is also logged.
    If any SIM failed, the rows go to XCom under the key ``outcomes`` and the task fails after every SIM
    was tried, naming each failed one: without retries when the platform refused every one of them
    (e.g. ``invalid iccid``), with Airflow's retries otherwise (a retry reads the statuses again). An
    empty ICCID list succeeds with ``[]`` and sends nothing.

    :param iccids: one ICCID (a plain string is one ICCID) or a list of them. Templated.
    :param status: required: ``deactivated`` (suspend: no data, SMS or voice) or ``active``, any case.
        Templated.
    :param m2m_conn_id: the SIM Insight connection. Templated.
    :param max_workers: status reads in flight at once (default 16). Templated.
    """

    template_fields: Sequence[str] = ("iccids", "status", "m2m_conn_id", "max_workers")
    ui_color = "#f3d8d8"
    hook_class = M2mHook

    def __init__(
        self,
        *,
        iccids: str | list[str],
        status: str,
        m2m_conn_id: str = M2mHook.default_conn_name,
        max_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.iccids = iccids
        self.status = status
        self.m2m_conn_id = m2m_conn_id
        self.max_workers = max_workers

    def execute(self, context: Context) -> list[dict[str, Any]]:
        with bad_input_fails_task():
            target = sim_status.validate_target(self.status)
            workers = as_workers(self.max_workers)
            # One command per SIM. No SIM at all (nobody approved any, say) is not an error: nothing to do.
            numbers = list(dict.fromkeys(iccid_rules.validate_many(self.iccids, allow_empty=True)))
            if not numbers:
                self.log.info("No SIMs to set %s: nothing sent", target)
                return []
            self.hook.api_id  # noqa: B018 - a missing api_id is bad input too: fail before sending
            # Read every status before the first command: a bad connection fails here, having changed nothing.
            current = {record.iccid: record for record in self.hook.query_statuses(numbers, workers)}
        rows: list[dict[str, Any]] = []
        permanent: set[str] = set()
        for number in numbers:
            try:
                row = self._apply(current[number], target, permanent)
            except AuthenticationError as exc:
                raise AirflowFailException(str(exc)) from None
            self.log.info(
                "SIM %s: %s -> %s (%s)%s",
                number,
                row["previous_status"],
                row["status"],
                row["outcome"],
                f": {row['error']}" if row["error"] else "",
            )
            rows.append(row)
        counts = {
            outcome: sum(r["outcome"] == outcome for r in rows) for outcome in (CHANGED, UNCHANGED, SKIPPED, FAILED)
        }
        self.log.info("Set %s on %d SIMs: %s", target, len(rows), counts)
        failed = [row for row in rows if row["outcome"] == FAILED]
        if failed:
            context["ti"].xcom_push(key="outcomes", value=rows)
            listed = "; ".join(f"{row['iccid']}: {row['error']}" for row in failed[:20])
            more = f" and {len(failed) - 20} more" if len(failed) > 20 else ""
            message = f"{len(failed)} of {len(rows)} SIMs not set {target}: {listed}{more}"
            if all(row["iccid"] in permanent for row in failed):
                raise AirflowFailException(f"{message}. The platform refused them: retrying cannot help.")
            raise RetryToSettleError(f"{message}. A retry reads their status again first.")
        return rows

    def _apply(self, current: SimStatus, target: str, permanent: set[str]) -> dict[str, Any]:
        """Set one SIM's status unless it is closed or already so; settle an unknown outcome by reading back."""
        row = {"iccid": current.iccid, "previous_status": current.status, "status": current.status, "error": None}
        if current.error:
            return {**row, "outcome": FAILED, "error": f"status not read: {current.error}"}
        if current.status == sim_status.CLOSED:
            return {**row, "outcome": SKIPPED}
        if current.status == target:
            return {**row, "outcome": UNCHANGED}
        try:
            self.hook.set_status(current.iccid, target)
            return {**row, "status": target, "outcome": CHANGED}
        except OutcomeUnknownError as exc:
            unknown = str(exc)
        except M2mApiError as exc:
            permanent.add(current.iccid)
            return {**row, "outcome": FAILED, "error": str(exc)}
        except M2mProviderError as exc:  # refused by a 429/503 past the retry budget: certainly not carried out
            return {**row, "outcome": FAILED, "error": str(exc)}
        try:
            now = self.hook.query_status(current.iccid).status
        except AuthenticationError:
            raise
        except M2mProviderError as exc:
            return {**row, "outcome": FAILED, "error": f"{unknown}; reading the status back failed: {exc}"}
        if now == target:
            self.log.info("SIM %s: the set_status outcome was unknown; reading back shows %s", current.iccid, now)
            return {**row, "status": now, "outcome": CHANGED}
        return {**row, "status": now, "outcome": FAILED, "error": f"{unknown}; the status read back is {now}"}


__all__ = ["SetSimStatusOperator"]
