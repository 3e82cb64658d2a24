"""
One real Airflow (api-server, scheduler, dag-processor) for the push tests' whole session, serving the receiver.

It is started through the browser tests' launcher (``tests/ui/ui_airflow.py``), without the triggerer, in an
Airflow home of its own whose SQLite DB the tests read to count the events.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ui"))

from ui_airflow import AirflowServer

PASSPHRASE = "pp-Kd7LEAKCHECK-push"
# The scheduler and dag-processor run the example DAG scheduled on the MO asset (device_replies).
COMPONENTS = ("api-server", "scheduler", "dag-processor")


class PushAirflow:
    """The running api-server, its receiver's URL and the events it recorded."""

    def __init__(self, server: AirflowServer) -> None:
        self.server = server
        self.url = f"{server.base_url}/sim-insight/push"
        self.db = server.home / "airflow.db"

    def events(self) -> list[tuple[str, dict]]:
        """Every asset event as ``(asset name, extra)``, oldest first."""
        with sqlite3.connect(self.db, timeout=30) as db:
            rows = db.execute(
                "SELECT asset.name, asset_event.extra FROM asset_event JOIN asset ON asset.id = asset_event.asset_id"
                " ORDER BY asset_event.id"
            ).fetchall()
        return [(name, json.loads(extra)) for name, extra in rows]

    def events_of(self, api_dids: set[str]) -> list[tuple[str, dict]]:
        """The events of the items whose ``api_did`` is in ``api_dids``."""
        return [(name, extra) for name, extra in self.events() if extra.get("api_did") in api_dids]

    def log(self) -> str:
        """The api-server's log so far."""
        return (self.server.logs / "api-server.log").read_text("utf-8", "replace")


@pytest.fixture(scope="session")
def push_airflow(tmp_path_factory) -> PushAirflow:
    # Airflow's default settings (lazy provider discovery): the receiver loads through its entry point.
    env = {
        "AIRFLOW_CONN_M2M_PUSH_DEFAULT": json.dumps({"conn_type": "generic", "password": PASSPHRASE}),
    }
    server = AirflowServer(tmp_path_factory.mktemp("push-airflow"), extra_env=env, components=COMPONENTS)
    with server:
        yield PushAirflow(server)
