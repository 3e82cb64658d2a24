"""
Shared fixtures: one throwaway Airflow home and DB per test session, one sandbox server per session.

The environment is set before anything imports Airflow, so every test (and every subprocess it starts)
sees the same home, dags folder and settings.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_HOME = Path(tempfile.mkdtemp(prefix="m2m-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(_HOME / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)
(_HOME / "dags").mkdir()

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
    from airflow.dag_processing.dagbag import DagBag

    target = folder / (name or f"{dag_id}.py")
    if isinstance(source, Path):
        shutil.copy(source, target)
    else:
        target.write_text(source)
    bag = DagBag(dag_folder=str(target))  # examples are off: AIRFLOW__CORE__LOAD_EXAMPLES=False
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)
