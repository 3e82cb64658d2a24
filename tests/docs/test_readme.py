"""The README: small enough to read on a screen, and its one example does what it says (run as written)."""

from __future__ import annotations

import re

from conftest import ROOT, load_dag
from test_doc_examples import dag_id_of, python_blocks

README = ROOT / "README.md"


def test_readme_is_under_about_8_kb_and_links_into_the_docs():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) <= 8 * 1024, f"README.md is {len(text.encode())} bytes: move detail into docs/"
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
    assert "docs/index.md" in text


def test_readme_example_queries_both_sims_and_screens_the_number(sb, dags_folder):
    """The README's DAG: the two SIMs' devices as the sandbox serves them, one Daraja check, nothing else."""
    (source,) = python_blocks(README)
    dag = load_dag(dags_folder, source, dag_id_of(source))
    run = dag.test()
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    devices = next(ti for ti in run.get_task_instances() if ti.task_id == "devices").xcom_pull(task_ids="devices")
    for row in devices:
        assert row["iccid"] in sb.fleet.by_iccid, "the README's ICCIDs exist in the sandbox fleet"
        assert row["error"] is None
    by_command = sb.stats()["by_command"]
    assert by_command["query_imei"] == len(devices) == 2
    assert by_command["checkATI"] == 1
    assert set(by_command) <= {"query_imei", "checkATI", "oauth"}
