"""
Every Python block the docs show, run as written against the sandbox: a doc example that is not run breaks.

The blocks are read from the pages themselves (``docs/**/*.md`` and ``README.md``), so editing a page changes
what is tested; nothing here restates an example. A block that defines a DAG is put in the dags folder and run
with ``dag.test()`` (every task must succeed); any other block runs as a script, statement by statement, with
``m2m_default`` / ``daraja_default`` pointing at the session sandbox. The how-to pages show no blocks of their
own: they include their code from the example DAGs (``literalinclude``), which ``tests/dags`` runs.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
from pathlib import Path

import pytest
from conftest import ROOT, load_dag

from airflow_provider_m2m.hooks.daraja import clear_token_cache

DOCS = ROOT / "docs"
_BLOCK = re.compile(r"^```python\n(.*?)\n```$", re.S | re.M)


def doc_pages() -> list[Path]:
    """The pages the site builds (not the build, not the notes folded into pages later), and the README."""
    pages = [p for p in DOCS.rglob("*.md") if not {"_build", "notes"} & set(p.relative_to(DOCS).parts)]
    return [ROOT / "README.md", *sorted(pages)]


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return [match.group(1) + "\n" for match in _BLOCK.finditer(page.read_text(encoding="utf-8"))]


BLOCKS = [
    pytest.param(page, n, source, id=f"{page.relative_to(ROOT)}[{n}]")
    for page in doc_pages()
    for n, source in enumerate(python_blocks(page))
]


def run_block(source: str, name: str) -> dict:
    """
    Run a block statement by statement, as a reader pastes it; return its namespace.

    A statement with a top-level ``await`` runs in an event loop of its own (as in Jupyter or async code).
    """
    namespace: dict = {"__name__": "__doc_example__"}
    for statement in ast.parse(source, name).body:
        code = compile(ast.Module([statement], []), name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # the page's own code
        if inspect.iscoroutine(result):
            asyncio.run(result)
    return namespace


def dag_id_of(source: str) -> str | None:
    """The ``dag_id`` of a block that defines a DAG, else None."""
    found = re.search(r"\bDAG\(\s*(?:dag_id=)?[\"']([\w.-]+)[\"']", source)
    return found.group(1) if found else None


def test_the_docs_have_python_examples():
    """The collection is not silently empty: the pages below show Python, and all of it is collected."""
    pages = {str(param.values[0].relative_to(ROOT)) for param in BLOCKS}
    assert {"README.md", "docs/getting-started.md", "docs/connections/m2m.md", "docs/reference/sandbox.md"} <= pages


@pytest.mark.airflow
@pytest.mark.parametrize(("page", "n", "source"), BLOCKS)
def test_doc_example_runs_against_the_sandbox(sb, dags_folder, page, n, source):
    clear_token_cache()  # a token of an earlier test's sandbox settings must not decide this one
    name = f"{page.relative_to(ROOT)}[{n}]"
    own_sandbox = "Sandbox(" in source
    dag_id = dag_id_of(source)
    saved = dict(os.environ)
    try:
        if dag_id:
            dag = load_dag(dags_folder, source, dag_id)
            run = dag.test()
            states = {ti.task_id: ti.state for ti in run.get_task_instances()}
            assert run.state == "success" and set(states.values()) == {"success"}, (name, states)
        else:
            run_block(source, name)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        clear_token_cache()
    if not own_sandbox:
        assert sb.stats()["requests"] > 0, f"{name} reached no platform: it shows nothing of the provider"
