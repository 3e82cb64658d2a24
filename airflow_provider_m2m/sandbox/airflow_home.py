"""
A throwaway Airflow home for the tests, ``make demo``, the benchmarks and the browser tests: written once here.

It lives next to the sandbox because it is the same kind of thing (dev tooling that scripts, benchmarks and
tests import without path tricks). It is not part of the provider's API. Importing it imports nothing from
Airflow (``dag_bag`` imports it when called): it builds the environment that
points an Airflow process (this one before it imports Airflow, or a subprocess) at the home. The provider's
hooks and operators never use it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def airflow_home_env(home: str | Path, dags_folder: str | Path | None = None) -> dict[str, str]:
    """
    The environment variables of an Airflow home of its own: SQLite DB inside it, no example DAGs,
    LocalExecutor. Callers add what is particular to them (log level, API ports...).

    :param home: the directory to use as ``AIRFLOW_HOME``.
    :param dags_folder: the dags folder (default: ``<home>/dags``).
    """
    home = Path(home)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }


def new_airflow_home(prefix: str = "m2m-airflow-home-") -> Path:
    """A new empty temporary directory with an empty ``dags/`` folder, to use as ``AIRFLOW_HOME``."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    (home / "dags").mkdir()
    return home


def dag_bag(dag_folder: str) -> Any:
    """
    Parse ``dag_folder`` (a folder or one file) as the DAG processor does; for tests, demos and benchmarks.

    :param dag_folder: the folder or file to parse.
    """
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1: DagBag still lives in airflow.models
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag(dag_folder=dag_folder)
