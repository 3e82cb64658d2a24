"""
Fixtures of the production-stack tests (``make test-prod``): the whole stack of ``stack.py``, started once.

Not collected by plain ``pytest`` (pyproject's ``--ignore=tests/prod``); ``pytest tests/prod`` runs them. A part
that cannot start fails the session with its log's tail (never a skip). At the end, after the stack stopped, no
sandbox secret may be in the Airflow home (task and component logs) or in PostgreSQL's XCom, rendered-template,
task-state-store and audit-log tables.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import ProdStack

#: Tables where a leaked secret would be kept (PostgreSQL casts each row to text).
SECRET_TABLES = ("xcom", "rendered_task_instance_fields", "task_state_store", "log")


@pytest.fixture(scope="session")
def stack():
    """The running stack: 100,000 SIMs, 50 ms per call, a platform limit of 400/s, a pool of 4 slots."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # CI giving up still stops every process group
    with ProdStack(fleet=100_000, latency=0.05, rate_limit=400, pool_slots=4) as running:
        print(f"\nproduction stack up in {running.startup_s:.0f} s under {running.root}")
        yield running
        secrets = (running.sandbox.credentials["m2m_password"],)
        leaks = [f"table {table}" for table in SECRET_TABLES if _table_holds(running, table, secrets)]
    signal.signal(signal.SIGTERM, previous)
    home = running.airflow.home
    for path in home.rglob("*"):
        if path.is_file() and any(s in path.read_bytes().decode("utf-8", "replace") for s in secrets):
            leaks.append(str(path.relative_to(home)))
    assert not leaks, f"a sandbox secret is in the Airflow deployment: {leaks}"


def _table_holds(stack: ProdStack, table: str, secrets) -> bool:
    rows = stack.postgres.query(f"SELECT count(*) FROM {table} t WHERE t::text LIKE ANY(%s)",  # names from above
                                ([f"%{s}%" for s in secrets],))  # fmt: skip
    return rows[0][0] > 0


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)
