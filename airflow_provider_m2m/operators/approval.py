"""Ask a person, in the Airflow UI, which SIMs of a finding to act on (Airflow 3.1+ human-in-the-loop)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from airflow_provider_m2m.operators.arguments import as_int
from airflow_provider_m2m.utils.task_failures import bad_input_fails_task
from airflow_provider_m2m.utils.version_compat import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The form field holding the chosen ICCIDs, and the XCom key the approved ones are pushed under.
CHOSEN_FIELD = "iccids"
APPROVED_KEY = "approved_iccids"
#: The XCom key of the decision: ``{"choice": "Approve" | "Reject", "responded_by": name or None (no answer
#: by the timeout), "approved": [...]}``.
DECISION_KEY = "decision"
#: The XCom key of the ICCIDs past ``max_offered``: listed, never offered (so never approved).
NOT_OFFERED_KEY = "not_offered"
#: SIMs offered in one request by default: a person can review about this many, and the request (a row in
#: the metadata DB, shown whole in the UI) stays small. The most a DAG may ask for is MAX_OFFERED_LIMIT.
DEFAULT_MAX_OFFERED, MAX_OFFERED_LIMIT = 200, 1000

#: Set True only where something answers Airflow's human-in-the-loop request inside ``dag.test()`` as a
#: triggerer would (the project's own tests do); otherwise the step fails at once under ``dag.test()``.
DAG_TEST_ANSWERED = False

_UNDER_DAG_TEST = (
    "ApproveSimsOperator cannot ask a person under `airflow dags test` / `dag.test()`: nothing there answers "
    "Airflow's human-in-the-loop request (before Airflow 3.3 its HITLTrigger fails without a triggerer; on 3.3 "
    "no scheduler applies response_timeout, so the task would wait forever). Nothing was approved. To try the "
    "approval, run the DAG in a running Airflow (`airflow standalone`, or a scheduler, an api-server and, before "
    "Airflow 3.3, a triggerer), then answer under Browse > Required actions."
)


def under_dag_test() -> bool:
    """
    True when this task runs under ``dag.test()`` / ``airflow dags test``: the Task SDK's in-process test
    supervisor, whose comms stand in for the supervisor's socket (``task_runner.SUPERVISOR_COMMS``).
    """
    try:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.supervisor import InProcessSupervisorComms
    except ImportError:  # a Task SDK without the in-process supervisor: no dag.test() to detect
        return False
    return isinstance(getattr(task_runner, "SUPERVISOR_COMMS", None), InProcessSupervisorComms)


def sims_table(sims: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``sims`` with ``columns`` (missing values shown as ``-``)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ") if value not in (None, "") else "-"

    lines = [" | ".join(columns), " | ".join("---" for _ in columns)]
    lines += [" | ".join(cell(sim.get(column)) for column in columns) for sim in sims]
    return "\n".join(f"| {line} |" for line in lines)


class ApproveSimsOperator(ApprovalOperator):
    """
    Show a person a list of SIMs in the Airflow UI ("Required actions") and let them choose which to act on.

    The body lists the SIMs as a table (``intro`` above it); the form offers them in a multi-select,
    none chosen. **Approve** pushes the chosen ICCIDs (only ones offered) to XCom under the key
    ``approved_iccids``, so the next task takes ``approve.output["approved_iccids"]``; the decision (who
    chose what) goes under the key ``decision``. **Reject** skips the downstream tasks, like
    :class:`~airflow.providers.standard.operators.hitl.ApprovalOperator`. With no answer by
    ``response_timeout`` the answer is Reject: nothing is acted on without a person's yes.
    An empty ``sims`` list asks nobody and approves nothing.

    At most ``max_offered`` SIMs (the first ones) are offered in one request; the rest are listed under the
    XCom key ``not_offered`` (also ``[]`` when all were offered), with a warning in the log: a later run, or
    a person, takes them up.

    A person's answer needs a running Airflow: under ``airflow dags test`` / ``dag.test()`` the task fails at
    once (``AirflowFailException``, nothing approved) with a message saying how to try it: ``airflow
    standalone``, or a scheduler, an api-server and, before Airflow 3.3, a triggerer.

    :param sims: the SIMs, as dicts with at least ``iccid`` (e.g. an upstream task's output). Templated.
    :param max_offered: the most SIMs offered in one request, 1 to 1000 (default 200). Templated.
    :param columns: the keys shown in the table, in order (default: ``iccid`` first, then the first
        SIM's other keys).
    :param intro: Markdown shown above the table. Templated.
    :param subject: the headline of the request. Templated.
    :param response_timeout: how long to wait for an answer (then: Reject).
    :param kwargs: passed to ``ApprovalOperator`` (``assigned_users``, ``notifiers``...).
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "sims", "intro", "max_offered")

    def __init__(
        self,
        *,
        sims: Any,
        subject: str,
        columns: Sequence[str] | None = None,
        intro: str = "",
        max_offered: int | str = DEFAULT_MAX_OFFERED,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("params", None)  # the DAG's params, which Airflow passes in: not the person's to answer
        params = {CHOSEN_FIELD: self._field([])}
        super().__init__(subject=subject, defaults=ApprovalOperator.REJECT, params=params, **kwargs)
        self.sims = sims
        self.columns = columns
        self.intro = intro
        self.max_offered = max_offered

    @staticmethod
    def _field(iccids: list[str], labels: dict[str, str] | None = None) -> Param:
        extra = {"examples": iccids, "values_display": labels} if iccids else {}
        return Param(
            [],
            type="array",
            items={"type": "string"},
            title="SIMs to act on",
            description="Choose the SIMs, then Approve. Reject (or no answer) acts on none.",
            source="task",
            **extra,
        )

    def _split(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The SIMs offered (the first ``max_offered``) and the ICCIDs of the rest."""
        from airflow_provider_m2m.exceptions import InvalidRequestError

        limit = as_int(self.max_offered, "max_offered", 1, MAX_OFFERED_LIMIT)
        sims = list(self.sims or [])
        if not all(isinstance(sim, dict) and sim.get("iccid") for sim in sims):
            raise InvalidRequestError("sims", "every SIM must be a dict with an 'iccid'")
        return sims[:limit], [str(sim["iccid"]) for sim in sims[limit:]]

    def execute(self, context: Context) -> Any:
        with bad_input_fails_task():
            sims, not_offered = self._split()
        ti = context["ti"]
        ti.xcom_push(key=NOT_OFFERED_KEY, value=not_offered)
        if not sims:
            self.log.info("No SIMs to ask about: nothing approved")
            ti.xcom_push(key=APPROVED_KEY, value=[])
            return None
        if not_offered:
            self.log.warning(
                "%d SIMs listed, only the first %d offered (max_offered); the %d others are under the XCom key %r",
                len(sims) + len(not_offered),
                len(sims),
                len(not_offered),
                NOT_OFFERED_KEY,
            )
        if under_dag_test() and not DAG_TEST_ANSWERED:
            raise AirflowFailException(_UNDER_DAG_TEST)
        columns = list(self.columns or ["iccid", *(k for k in sims[0] if k != "iccid")])
        iccids = [str(sim["iccid"]) for sim in sims]
        labels = {
            iccid: " / ".join(str(sim[c]) for c in columns if sim.get(c))
            for iccid, sim in zip(iccids, sims, strict=True)
        }
        # The choices exist only now, at run time. The form holds this field alone: at run time Airflow
        # has merged the DAG's params into the task's again, and they are not the person's to answer.
        self.params = ParamsDict({CHOSEN_FIELD: self._field(iccids, labels)})
        self.body = f"{self.intro}\n\n{sims_table(sims, columns)}".strip()
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        self.params = ParamsDict({CHOSEN_FIELD: self._field([])})  # the form's one field, as in execute()
        if "error" not in event:
            # Recorded before the parent acts on the answer: on Reject it skips the downstream tasks by
            # raising, and nothing after it would run.
            offered = {str(sim["iccid"]) for sim in self._split()[0]}
            choice = (event.get("chosen_options") or [self.REJECT])[0]
            chosen = (event.get("params_input") or {}).get(CHOSEN_FIELD) or []
            # Only SIMs that were offered: a hand-made answer cannot add one.
            picked = [i for i in dict.fromkeys(chosen) if i in offered] if choice == self.APPROVE else []
            who = (event.get("responded_by_user") or {}).get("name")
            self.log.info("%s by %s: %d of %d SIMs", choice, who or "nobody (timed out)", len(picked), len(offered))
            ti = context["ti"]
            ti.xcom_push(key=APPROVED_KEY, value=picked)
            ti.xcom_push(key=DECISION_KEY, value={"choice": choice, "responded_by": who, "approved": picked})
        return super().execute_complete(context, event)


__all__ = ["APPROVED_KEY", "DECISION_KEY", "NOT_OFFERED_KEY", "ApproveSimsOperator", "sims_table"]
