"""The one throwaway-Airflow-home helper: a fresh Airflow process really uses the home it describes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from airflow_provider_m2m.sandbox.airflow_home import airflow_home_env, new_airflow_home

_READ_CONFIG = """
import json
from airflow.configuration import conf
print(json.dumps({
    "dags_folder": conf.get("core", "dags_folder"),
    "load_examples": conf.getboolean("core", "load_examples"),
    "executor": conf.get("core", "executor"),
    "sql_alchemy_conn": conf.get("database", "sql_alchemy_conn"),
}))
"""


def test_a_fresh_airflow_reads_the_home(tmp_path):
    home = new_airflow_home("m2m-home-test-")
    assert home.is_dir() and list(home.iterdir()) == [home / "dags"]
    dags = tmp_path / "my-dags"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(airflow_home_env(home, dags_folder=dags))
    try:
        out = subprocess.run(
            [sys.executable, "-c", _READ_CONFIG], env=env, capture_output=True, text=True, timeout=120, check=True
        )
    finally:
        shutil.rmtree(home)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["dags_folder"] == str(dags)
    assert seen["load_examples"] is False and seen["executor"] == "LocalExecutor"
    assert seen["sql_alchemy_conn"] == f"sqlite:///{home / 'airflow.db'}"
    assert airflow_home_env(home)["AIRFLOW__CORE__DAGS_FOLDER"] == str(home / "dags")
