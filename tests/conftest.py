"""
Shared fixtures: one throwaway Airflow home and DB per test session, one sandbox server per session.

The environment is set before anything imports Airflow, so every test (and every subprocess it starts)
sees the same home, dags folder and settings.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from airflow_provider_m2m.sandbox.airflow_home import airflow_home_env, new_airflow_home

ROOT = Path(__file__).resolve().parent.parent
_HOME = new_airflow_home()
os.environ.update(
    {
        **airflow_home_env(_HOME),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # The OpenLineage provider is part of the test install; only tests/dags/test_lineage.py turns it on.
        "AIRFLOW__OPENLINEAGE__DISABLED": "True",
        # One Fernet key for this process and every subprocess, as a deployment has: without it, the first
        # `airflow` subprocess writes a key of its own into the home's airflow.cfg, and Variables it encrypts
        # (the shared Daraja token) read back as ciphertext in this process, which loaded its config before.
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
    }
)

# The fleet's "last day" ends at today's midnight (UTC), so "swapped N days ago" stays true whatever the
# date; tests take the expected changes from the sandbox fleet, never from hard-coded times.
ANCHOR = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)

# Distinctive secrets: the secret-leak checks search every captured output for these.
M2M_PASSWORD = "pw-Zq8#LEAKCHECK-m2m"
DARAJA_SECRET = "sec-Vx3LEAKCHECK-daraja"
SECRETS = (M2M_PASSWORD, DARAJA_SECRET)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's Airflow home."""
    return _HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """Create the session's metadata DB once (about 5 s)."""
    from airflow.utils import db

    db.initdb()
    return airflow_home


@pytest.fixture(scope="session", autouse=True)
def _one_execution_api():
    """
    One in-process Execution API for every ``dag.test()`` task of the session, as an API server has one app.

    ``dag.test()`` runs each task through ``InProcessTestSupervisor``, which by default builds a new Execution
    API app per task (a Cadwyn app: every route of every API version, then an event loop thread that never
    stops). That costs seconds per task on 3.3 and far more on 3.1 and 3.2, where Cadwyn and FastAPI
    build it more slowly; it was most of the suite's time there. The app is still the real one (real routes,
    real DB); the supervisor still points it at each DAG's own DagBag before each task. Building it is lazy,
    so tests that run no task pay nothing.
    """
    from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI
    from airflow.sdk.execution_time import supervisor

    api = InProcessExecutionAPI()
    patch = pytest.MonkeyPatch()
    patch.setattr(supervisor, "in_process_api_server", lambda: api)
    yield api
    patch.undo()


@pytest.fixture(scope="session")
def sandbox():
    """One sandbox server (SIM Insight + Daraja) for the whole session, with the distinctive secrets."""
    from airflow_provider_m2m.sandbox import Sandbox

    with Sandbox(fleet=1000, anchor=ANCHOR, m2m_password=M2M_PASSWORD, daraja_secret=DARAJA_SECRET) as sb:
        yield sb


@pytest.fixture
def sb(sandbox, monkeypatch):
    """The session sandbox, reset (counters, faults, knobs), with ``m2m_default``/``daraja_default`` pointing at it."""
    sandbox.reset()
    for name, value in sandbox.conn_env().items():
        monkeypatch.setenv(name, value)
    yield sandbox
    sandbox.clear_faults()


#: A fixed past for the audits' nights (tests/dags/test_fleet_audit*.py): the sandbox's clock is set for each night.
AUDIT_ANCHOR = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
def timeline_sandbox(monkeypatch):
    """A sandbox of 300 SIMs whose devices change over 5 days after AUDIT_ANCHOR, with the connections at it."""
    from airflow_provider_m2m.sandbox import Fleet, Sandbox

    with Sandbox(Fleet(300, seed=5, anchor=AUDIT_ANCHOR, timeline_days=5)) as sb:
        for name, value in sb.conn_env().items():
            monkeypatch.setenv(name, value)
        yield sb


def csv_rows(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows as dicts (a report, a batch file...), read with the standard library."""
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def dags_folder(airflow_db: Path):
    """The session's dags folder, emptied after the test; write DAG files here for ``dag.test()``."""
    folder = airflow_db / "dags"
    yield folder
    for item in folder.iterdir():
        shutil.rmtree(item) if item.is_dir() else item.unlink()


def load_dag(folder: Path, source: str | Path, dag_id: str, name: str | None = None):
    """
    Put a DAG file in the dags folder and return the parsed DAG, ready for ``dag.test()``.

    ``dag.test()`` refuses a DAG defined inside a test: it has to come from the dags folder.

    :param folder: the dags folder (the ``dags_folder`` fixture).
    :param source: DAG source text, or the path of a DAG file to copy.
    :param dag_id: the DAG to return.
    :param name: the file name (default: ``<dag_id>.py``).
    """
    from airflow_provider_m2m.sandbox.airflow_home import dag_bag

    target = folder / (name or f"{dag_id}.py")
    if isinstance(source, Path):
        shutil.copy(source, target)
    else:
        target.write_text(source)
    bag = dag_bag(str(target))  # examples are off: AIRFLOW__CORE__LOAD_EXAMPLES=False
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


# ---------------------------------------------------------------------- secret-leak guard (issue 7)
# After every test: none of SECRETS (nor any Daraja access token the session sandbox issued) may appear in
# captured logs or in captured stdout/stderr. At the end of the session: nor in the Airflow home's task
# logs, the XCom table, the rendered-template table or the task state store of the session DB.
# A test that must handle a secret in its own output opts out with ``@pytest.mark.handles_secrets``.


def _leaked(texts, secrets) -> list[str]:
    return sorted({secret for secret in secrets for text in texts if secret and text and secret in text})


_ISSUED_TOKENS: set[str] = set()  # every token seen by the per-test check, for the session-end scan


def _issued_tokens(request) -> list[str]:
    if "sandbox" not in request.fixturenames:
        return []
    sandbox = request.getfixturevalue("sandbox")
    tokens = sandbox.issued_tokens()
    _ISSUED_TOKENS.update(tokens)
    return tokens


@pytest.fixture(autouse=True)
def _no_secret_in_output(request, caplog):
    """Fail the test if a secret shows up in caplog or in captured stdout/stderr (structlog writes there)."""
    if request.node.get_closest_marker("handles_secrets"):
        yield
        return
    # capsys and capfd cannot be combined: use whichever the test already asks for, else capfd.
    name = "capsys" if "capsys" in request.fixturenames else "capfd"
    capture = request.getfixturevalue(name)
    yield
    out, err = capture.readouterr()
    report = getattr(request.node, "rep_call", None)
    if name == "capfd" and (out or err) and report is not None and report.failed:
        import sys

        with capture.disabled():  # a failing test's output would be lost otherwise: show it
            sys.stdout.write(out)
            sys.stderr.write(err)
    secrets = (*SECRETS, *_issued_tokens(request))
    leaked = _leaked((caplog.text, out, err), secrets)
    assert not leaked, f"secret(s) leaked into captured logs/output: {[s[:6] + '...' for s in leaked]}"


def _scan_airflow_home_for_secrets(home: Path, secrets) -> list[str]:
    import sqlite3

    found = []
    logs = home / "logs"
    if logs.is_dir():
        for path in logs.rglob("*"):
            if path.is_file():
                text = path.read_text("utf-8", "replace")
                found += [f"{path.relative_to(home)}: {s[:6]}..." for s in _leaked((text,), secrets)]
    db_file = home / "airflow.db"
    if db_file.exists():
        with sqlite3.connect(db_file) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            for table in ("xcom", "rendered_task_instance_fields", "task_state_store"):
                if table not in tables:
                    continue
                for row in db.execute(f"SELECT * FROM {table}"):
                    text = " ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row)
                    found += [f"table {table}: {s[:6]}..." for s in _leaked((text,), secrets)]
    return found


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_airflow_home():
    """At the end of the session, scan task logs, XCom, rendered templates and the state store for secrets."""
    yield
    found = _scan_airflow_home_for_secrets(_HOME, (*SECRETS, *_ISSUED_TOKENS))
    assert not found, f"secrets found in the Airflow home after the session: {found[:20]}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
