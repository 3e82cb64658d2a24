"""
A real Airflow 3 on loopback for the browser tests: api-server, scheduler, dag-processor and triggerer.

The same components ``airflow standalone`` runs (LocalExecutor, sqlite), started one by one so that each gets its
own log file and its own process group, with settings a test needs to be exact about:

* a throwaway ``AIRFLOW_HOME``, the project's ``airflow_provider_m2m/example_dags/`` folder, no example DAGs
  (new DAGs paused, as by default);
* a free port on 127.0.0.1 for the API server (and the execution API the task workers talk to);
* the simple auth manager with one admin user whose password is written up front (no generated-password file to
  scrape from a log), and one JWT secret shared by every component.

Nothing here imports Airflow: the components are subprocesses of the test session's interpreter.
Run it by hand to poke at the same Airflow the tests see (Ctrl-C stops everything)::

    .venv/bin/python tests/ui/ui_airflow.py
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from airflow_provider_m2m.sandbox.airflow_home import airflow_home_env

ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = ROOT / "airflow_provider_m2m" / "example_dags"
USERNAME = "ui-tester"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# The components that report a job of their own in /api/v2/monitor/health (a Celery worker does not).
JOB_COMPONENTS = ("scheduler", "dag-processor", "triggerer")
POOL, POOL_SLOTS = "m2m_platform", 4  # the pool the example DAGs' SIM Insight tasks share (see the README)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Started:
    """``with`` over ``start()`` / ``stop()``: a ``start()`` that fails half-way stops what it had started."""

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AirflowServer(Started):
    """
    One Airflow (api-server, scheduler, dag-processor, triggerer) on ``127.0.0.1:<port>`` under ``home``.

    :param home: an empty directory to use as ``AIRFLOW_HOME``.
    :param port: the API server's port (default: a free one).
    :param extra_env: more environment for every component (e.g. ``AIRFLOW_CONN_...``).
    :param components: the components to start (default: all four); readiness waits for these only.
    :param commands: the ``airflow`` arguments of components not named after their command, e.g.
        ``{"worker-1": ["celery", "worker", "-H", "worker-1"]}`` (default: ``airflow <name>``).
    :param component_env: more environment for one component only, by component name.
    :param pool_slots: the slots of the ``m2m_platform`` pool created once Airflow is up.
    """

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        components: tuple[str, ...] = COMPONENTS,
        commands: dict[str, list[str]] | None = None,
        component_env: dict[str, dict[str, str]] | None = None,
        pool_slots: int = POOL_SLOTS,
    ) -> None:
        self.home = Path(home)
        self.components = components
        self.commands = commands or {}
        self.component_env = component_env or {}
        self.pool_slots = pool_slots
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.username = USERNAME
        self.password = secrets.token_urlsafe(12)
        self.logs = self.home / "component-logs"
        self.processes: dict[str, subprocess.Popen] = {}
        self._token: str | None = None
        passwords = self.home / "simple_auth_manager_passwords.json"
        # Only the variables set here configure Airflow: nothing leaks in from the caller's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                **airflow_home_env(self.home, dags_folder=DAGS_FOLDER),
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                # The log servers of the scheduler and triggerer default to 8793 / 8794: take free ports instead.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "PYTHONWARNINGS": "ignore",
            }
        )
        env.update(extra_env or {})
        self.env = env
        self.home.mkdir(parents=True, exist_ok=True)
        passwords.write_text(json.dumps({USERNAME: self.password}))

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 150) -> AirflowServer:
        """Migrate the DB, start the components and wait until the API answers and the jobs report healthy."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self._airflow("db", "migrate")
        for name in self.components:
            self.launch(name)
        self.wait_until(self._healthy, timeout, f"Airflow's {', '.join(self.components)}")
        pool = {"name": POOL, "slots": self.pool_slots, "description": "SIM Insight calls"}
        status, body = self.api("POST", "/api/v2/pools", pool)
        assert status in (200, 201), f"creating pool {POOL}: HTTP {status} {body}"
        return self

    def launch(self, name: str) -> None:
        """Start one component (appending to its log), in a process group of its own."""
        with (self.logs / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *self.commands.get(name, [name])],
                cwd=self.home,
                env={**self.env, **self.component_env.get(name, {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends it with all its children
            )

    def kill(self, name: str) -> None:
        """SIGKILL one component and all its children at once, as a crash would (no graceful shutdown)."""
        proc = self.processes.pop(name)
        _signal_group(proc, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        """SIGTERM every component's process group, then SIGKILL what is left after 15 s."""
        for proc in self.processes.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # also reaps children (task runners) that outlived their parent
            proc.wait(5)
        self.processes.clear()

    def _airflow(self, *args: str) -> None:
        with (self.logs / f"{args[0]}.log").open("wb") as log:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                cwd=self.home,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=180,
                check=False,
            )
        if result.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} exited {result.returncode}: {self.tail(args[0])}")

    # ------------------------------------------------------------------ readiness
    def check_alive(self) -> None:
        """Raise if a component has exited (its log's last lines in the message)."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {proc.returncode}: {self.tail(name)}")

    def wait_until(self, condition, timeout: float, what: str, interval: float = 0.5):
        """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` s or if a component dies."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}; component logs in {self.logs}")
            time.sleep(interval)

    def _healthy(self) -> bool:
        try:
            health = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        # The api-server answers for the metadatabase; every other component reports its own job.
        parts = [name.replace("-", "_") for name in self.components if name in JOB_COMPONENTS] + ["metadatabase"]
        return all((health.get(part) or {}).get("status") == "healthy" for part in parts)

    def tail(self, name: str, lines: int = 15) -> str:
        """The last lines of a component's log."""
        path = self.logs / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])

    # ------------------------------------------------------------------ REST API
    def token(self) -> str:
        """A JWT for the REST API, from the same user and password the browser logs in with."""
        if self._token is None:
            answer = requests.post(
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=10,
            )
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, payload: dict | None = None) -> tuple[int, dict | str]:
        """Call the REST API (``path`` like ``/api/v2/dags``); return (HTTP status, JSON body or text)."""
        answer = requests.request(
            method,
            self.base_url + path,
            json=payload,
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30,
        )
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, answer.text


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the component's pid
    except ProcessLookupError:
        pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    import tempfile

    signal.signal(signal.SIGTERM, _interrupt)  # stop the components on SIGTERM as on Ctrl-C
    with AirflowServer(Path(tempfile.mkdtemp(prefix="m2m-ui-airflow-"))) as server:
        print(f"Airflow at {server.base_url}  user {server.username}  password {server.password}")
        print(f"home {server.home}; Ctrl-C stops it", flush=True)
        try:
            while True:
                server.check_alive()
                time.sleep(2)
        except KeyboardInterrupt:
            pass
