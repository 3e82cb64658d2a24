"""Ask a person, in the Airflow UI, which SIMs of a finding to act on (Airflow 3.1+ human-in-the-loop)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The form field holding the chosen ICCIDs, and the XCom key the approved ones are pushed under.
CHOSEN_FIELD = "iccids"
APPROVED_KEY = "approved_iccids"
#: The XCom key of the decision: ``{"choice": "Approve" | "Reject", "responded_by": name or None (no answer
#: by the timeout), "approved": [...]}``.
DECISION_KEY = "decision"


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
    none chosen. **Approve** pushes the chosen ICCIDs (only ones from ``sims``) to XCom under the key
    ``approved_iccids``, so the next task takes ``approve.output["approved_iccids"]``; the decision (who
    chose what) goes under the key ``decision``. **Reject** skips the downstream tasks, like
    :class:`~airflow.providers.standard.operators.hitl.ApprovalOperator`. With no answer by
    ``response_timeout`` the answer is Reject: nothing is acted on without a person's yes.
    An empty ``sims`` list asks nobody and approves nothing.

    :param sims: the SIMs, as dicts with at least ``iccid`` (e.g. an upstream task's output). Templated.
    :param columns: the keys shown in the table, in order (default: ``iccid`` first, then the first
        SIM's other keys).
    :param intro: Markdown shown above the table. Templated.
    :param subject: the headline of the request. Templated.
    :param response_timeout: how long to wait for an answer (then: Reject).
    :param kwargs: passed to ``ApprovalOperator`` (``assigned_users``, ``notifiers``...).
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "sims", "intro")

    def __init__(
        self,
        *,
        sims: Any,
        subject: str,
        columns: Sequence[str] | None = None,
        intro: str = "",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("params", None)  # the DAG's params, which Airflow passes in: not the person's to answer
        params = {CHOSEN_FIELD: self._field([])}
        super().__init__(subject=subject, defaults=ApprovalOperator.REJECT, params=params, **kwargs)
        self.sims = sims
        self.columns = columns
        self.intro = intro

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

    def _offered(self) -> list[dict[str, Any]]:
        sims = list(self.sims or [])
        if not all(isinstance(sim, dict) and sim.get("iccid") for sim in sims):
            raise ValueError("sims: every SIM must be a dict with an 'iccid'")
        return sims

    def execute(self, context: Context) -> Any:
        sims = self._offered()
        if not sims:
            self.log.info("No SIMs to ask about: nothing approved")
            context["ti"].xcom_push(key=APPROVED_KEY, value=[])
            return None
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
            offered = {str(sim["iccid"]) for sim in self._offered()}
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
