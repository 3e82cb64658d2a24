"""
The README's Python examples, run as written against the sandbox: a doc example that is not run breaks.

Each block is taken from README.md by the heading it sits under, so editing the README changes what is
tested; nothing here restates the examples.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re

from conftest import ROOT

from airflow_provider_m2m.hooks.daraja import clear_token_cache


def readme_block(heading: str) -> str:
    """The first ```python block after ``heading`` (a whole line of README.md), in that heading's section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index(f"\n{heading}\n") + len(heading) + 2 :]
    match = re.search(r"^```python\n(.*?)\n```$", after, re.S | re.M)
    assert match, f"no python block under {heading!r}"
    assert not re.search(r"^#{1,6} ", after[: match.start()], re.M), f"no python block in the {heading!r} section"
    return match.group(1) + "\n"


def run_block(source: str, namespace: dict, name: str) -> None:
    """
    Run a README block statement by statement in ``namespace``, as a reader pastes it line by line.

    A statement with a top-level ``await`` runs in an event loop of its own (as it would in Jupyter or async
    code); the others run plainly, as in a script.
    """
    for statement in ast.parse(source, name).body:
        code = compile(ast.Module([statement], []), name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # the README's own code
        if inspect.iscoroutine(result):
            asyncio.run(result)


def test_using_it_block_runs_against_the_sandbox(sb):
    """The "Using it" block: hook calls over real HTTP, then the operators, built inside a DAG."""
    from airflow.sdk import DAG

    from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator
    from airflow_provider_m2m.operators.m2m import QueryImeiOperator, SendSmsOperator

    clear_token_cache()
    namespace: dict = {}
    with DAG("readme_using_it", schedule=None) as dag:
        run_block(readme_block("## Using it"), namespace, "README.md: Using it")
    clear_token_cache()

    record, receipt, swap = namespace["record"], namespace["receipt"], namespace["swap"]
    assert record.iccid in namespace["iccids"] and record.error is None
    for iccid in namespace["iccids"]:
        assert iccid in sb.fleet.by_iccid, "the README's ICCIDs exist in the sandbox fleet"
    assert (receipt.iccid, receipt.outcome) == ("8925401551663717897", "success")
    assert swap.msisdn == "254722000000" and swap.error is None
    iccids = namespace["iccids"]
    assert sorted(r.iccid for r in namespace["records"]) == sorted(iccids), "the awaited batch, one record per SIM"
    assert all(r.error is None for r in namespace["records"])
    # query_imei once, then the sync and the awaited batch over the same ICCIDs.
    assert sb.stats()["by_command"] == {"query_imei": 1 + 2 * len(iccids), "send_sms": 1, "oauth": 1, "checkATI": 1}
    assert sb.stats()["sms_per_iccid"] == {"8925401551663717897": 1}
    kinds = {task_id: type(task).__name__ for task_id, task in dag.task_dict.items()}
    assert kinds == {"query": "MappedOperator", "notify": "SendSmsOperator", "screen": "CheckSimSwapOperator"}
    assert dag.task_dict["query"].operator_class is QueryImeiOperator
    assert isinstance(dag.task_dict["notify"], SendSmsOperator)
    assert isinstance(dag.task_dict["screen"], CheckSimSwapOperator)
