"""
A production-shaped Airflow 3 on loopback, started and stopped by ``make test-prod`` (tests/prod) and benchmark 7.

Every part is the real one, on 127.0.0.1, on a free port, in one throwaway directory:

* **PostgreSQL** (Debian's, from ``/usr/lib/postgresql/<version>/bin``): its own ``initdb`` data directory, never
  the system cluster; the metadata DB and the Celery result backend. As root, it runs as ``nobody`` (PostgreSQL
  refuses to run as root).
* **Redis** (Debian's ``redis-server``, nothing persisted) as the Celery broker.
* **S3**: moto's server (``ThreadedMotoServer``, in this process) for the fleet file, the batch files and the
  reports, reached by the tasks through the Amazon provider's s3fs filesystem: connection ``aws_default`` with
  ``endpoint_url`` in its extra.
* **The platform**: the bundled sandbox in its own process (``RemoteSandbox``).
* **Airflow** with CeleryExecutor: ``airflow db migrate``, then api-server, scheduler, dag-processor, triggerer and
  two ``airflow celery worker`` processes with distinct hostnames, each in its own process group (launched by the
  browser tests' ``AirflowServer``, tests/ui/ui_airflow.py), the package's example DAGs plus the stack's own
  ``tests/prod/dags/`` (a second DAG bundle), the ``m2m_platform`` pool.

A part that cannot start raises :class:`PartFailed` with the tail of that part's log; what did start is stopped.
Run it by hand to look at the same stack the tests see (Ctrl-C stops everything)::

    .venv/bin/python tests/prod/stack.py
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ui"))

from ui_airflow import AirflowServer, Started, free_port  # noqa: E402

BUCKET = "m2m-fleet"
#: The stack's S3 URIs name their connection (ObjectStoragePath reads it from the user part of the URI; without
#: one, s3fs would fall back to boto's default credentials and endpoint, not the connection's).
S3_ROOT = f"s3://aws_default@{BUCKET}"
#: The Celery workers: two, as on two machines, each running up to WORKER_CONCURRENCY tasks at once.
WORKERS = ("worker-1", "worker-2")
WORKER_CONCURRENCY = 4
#: A task whose worker died is failed (and retried) after this many seconds without a heartbeat (default 300).
HEARTBEAT_TIMEOUT_S = 30
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
AWS_KEYS = {"login": "testing", "password": "testing"}  # moto accepts any keys; these are not secrets


class PartFailed(RuntimeError):
    """A part of the stack could not start; the message ends with the tail of its log."""


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file."""
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])


def _wait(ready, timeout: float, part: str, log: Path, proc: subprocess.Popen | None = None) -> None:
    """Poll ``ready()`` until true; raise :class:`PartFailed` with the log's tail on timeout or if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise PartFailed(f"{part} exited with {proc.returncode}; the end of {log}:\n{tail(log)}")
        with contextlib.suppress(Exception):
            if ready():
                return
        if time.monotonic() > deadline:
            raise PartFailed(f"{part} not ready after {timeout:.0f} s; the end of {log}:\n{tail(log)}")
        time.sleep(0.3)


class Server:
    """
    One server subprocess in its own process group, logging to ``<root>/<name>.log``.

    :param name: the part's name (and its log's).
    :param argv: the command.
    :param root: the stack's directory.
    :param user: run as this user (only when we are root).
    :param stop_signal: the signal of a clean stop (PostgreSQL's fast shutdown is SIGINT).
    """

    def __init__(self, name: str, argv: list[str], root: Path, user: str | None = None, stop_signal=signal.SIGTERM):
        self.name, self.argv, self.user, self.stop_signal = name, argv, user, stop_signal
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_as_user(self.user),
            )
        return self.proc

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((self.stop_signal, 20), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
                break
        self.proc = None


def _as_user(user: str | None) -> dict:
    """Popen arguments that drop root for ``user``; nothing when we are not root."""
    if user is None or os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _owned_by(path: Path, user: str | None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if user is not None and os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL server's ``bin`` directory (``/usr/lib/postgresql/<version>/bin``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise PartFailed("PostgreSQL: no /usr/lib/postgresql/*/bin/initdb (`make test-prod` installs postgresql)")
    return Path(found[-1]).parent


class Postgres(Server):
    """PostgreSQL on 127.0.0.1:<free port> with a data directory of its own, database ``airflow``, no password."""

    USER = "nobody"

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.bin = postgres_bin()
        self.data = _owned_by(root / "postgres", self.USER) / "data"
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port)]
        # A throwaway DB: no unix socket, no durability (a crash loses nothing we keep), connections for every
        # component, both workers' task supervisors and the result backend.
        for setting in ("unix_socket_directories=", "fsync=off", "synchronous_commit=off", "full_page_writes=off",
                        "max_connections=300"):  # fmt: skip
            argv += ["-c", setting]
        super().__init__("postgres", argv, root, user=self.USER, stop_signal=signal.SIGINT)

    def dsn(self, database: str = "airflow") -> str:
        return f"postgresql://airflow@127.0.0.1:{self.port}/{database}"

    def start(self) -> subprocess.Popen:
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "airflow", "--auth=trust", "-E", "UTF8"]
        with self.log.open("ab") as log:
            done = subprocess.run(initdb + ["--no-sync"], stdout=log, stderr=subprocess.STDOUT, **_as_user(self.USER))
        if done.returncode:
            raise PartFailed(
                f"PostgreSQL initdb exited with {done.returncode}; the end of {self.log}:\n{tail(self.log)}"
            )
        proc = super().start()
        _wait(lambda: self.query("SELECT 1", database="postgres"), 60, "PostgreSQL", self.log, proc)
        self.query("CREATE DATABASE airflow", database="postgres")
        return proc

    def query(self, sql: str, params: tuple = (), database: str = "airflow") -> list[tuple]:
        """Run one statement; the rows it returns (none for a statement without)."""
        import psycopg2

        connection = psycopg2.connect(self.dsn(database), connect_timeout=5)
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else [(True,)]
        finally:
            connection.close()


class Redis(Server):
    """Redis on 127.0.0.1:<free port>, nothing written to disk."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        directory = root / "redis"
        directory.mkdir()
        argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--dir", str(directory)]  # fmt: skip
        super().__init__("redis", argv, root)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> subprocess.Popen:
        if not Path(self.argv[0]).exists():
            raise PartFailed("Redis: no redis-server on PATH (`make test-prod` installs redis-server)")
        proc = super().start()
        _wait(self.ping, 30, "Redis", self.log, proc)
        return proc

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")


class S3:
    """moto's S3 server on 127.0.0.1:<free port> (a thread of this process), with the stack's bucket."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = root / "s3.log"
        self.server = None

    def start(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request on the test's output

        try:
            self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self.server.start()
            _wait(lambda: requests.get(self.endpoint, timeout=2).status_code < 500, 30, "moto S3", self.log)
            self.client().create_bucket(Bucket=BUCKET)
        except PartFailed:
            raise
        except Exception as exc:
            raise PartFailed(f"moto S3 did not start: {type(exc).__name__}: {exc}") from exc

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self):
        """A boto3 S3 client of the test process (the tasks use s3fs through the connection)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=AWS_KEYS["login"],
            aws_secret_access_key=AWS_KEYS["password"],
            region_name="us-east-1",
        )

    def put(self, key: str, path: Path) -> str:
        """Upload a local file; its ``s3://`` URI (under :data:`S3_ROOT`)."""
        self.client().upload_file(str(path), BUCKET, key)
        return f"{S3_ROOT}/{key}"

    def read(self, uri: str) -> bytes:
        """The bytes of an object given by its URI under :data:`S3_ROOT`."""
        assert uri.startswith(f"{S3_ROOT}/"), f"{uri} is not in the stack's bucket"
        key = uri.removeprefix(f"{S3_ROOT}/")
        return self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def connection(self) -> str:
        """``AIRFLOW_CONN_AWS_DEFAULT``: the Amazon provider's connection, pointed at this server."""
        extra = {"endpoint_url": self.endpoint, "region_name": "us-east-1"}
        return json.dumps({"conn_type": "aws", **AWS_KEYS, "extra": extra})


class ProdStack(Started):
    """
    The whole stack; a context manager that starts it and stops it (Airflow first, PostgreSQL last).

    :param fleet: SIMs of the sandbox's fleet.
    :param latency: seconds the sandbox adds to every platform call.
    :param rate_limit: the platform's limit (requests/s) that the sandbox enforces with 429s.
    :param pool_slots: slots of the ``m2m_platform`` pool.
    :param max_requests_per_second: the ``m2m_default`` connection's client-side rate, per task (README,
        "Sizing", rule 2): default ``rate_limit`` / ``pool_slots``.
    :param anchor: the sandbox fleet's anchor (default: today's midnight UTC).
    """

    def __init__(
        self,
        fleet: int = 100_000,
        latency: float = 0.05,
        rate_limit: float = 400,
        pool_slots: int = 4,
        max_requests_per_second: float | None = None,
        anchor=None,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="m2m-prod-stack-"))
        self.root.chmod(0o755)  # PostgreSQL's user has to reach its data directory inside
        self.sandbox_options = {"fleet": fleet, "latency": latency, "rate_limit": rate_limit, "anchor": anchor}
        self.pool_slots = pool_slots
        self.max_requests_per_second = max_requests_per_second or round(rate_limit / pool_slots, 2)
        self.postgres = Postgres(self.root)
        self.redis = Redis(self.root)
        self.s3 = S3(self.root)
        self.sandbox = None
        self.airflow: AirflowServer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ProdStack:
        from airflow_provider_m2m.sandbox import RemoteSandbox

        started = time.monotonic()
        self.postgres.start()
        self.redis.start()
        self.s3.start()
        try:
            self.sandbox = RemoteSandbox(**self.sandbox_options, startup_timeout=120).start()
        except RuntimeError as exc:
            raise PartFailed(f"the sandbox did not start: {exc}") from exc
        self.airflow = AirflowServer(
            self.root / "airflow",
            extra_env=self._airflow_env(),
            components=("api-server", "scheduler", "dag-processor", "triggerer", *WORKERS),
            commands={
                name: [
                    "celery",
                    "worker",
                    "--celery-hostname",
                    name,
                    "--concurrency",
                    str(WORKER_CONCURRENCY),
                    "--skip-serve-logs",
                ]  # fmt: skip
                for name in WORKERS
            },
            component_env={
                name: {
                    "M2M_WORKER_HOSTNAME": name,
                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_hostname.worker_hostname",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
                }
                for name in WORKERS
            },
            pool_slots=self.pool_slots,
        )
        try:
            self.airflow.start(timeout=240)
            for name in WORKERS:
                self.wait_for_worker(name)
        except Exception as exc:
            raise PartFailed(f"Airflow did not start: {exc}\n{self._airflow_tails()}") from exc
        for dag_id in ("fleet_imei_change_report", "sms_notification_run"):
            self.airflow.wait_until(lambda d=dag_id: self.api("GET", f"/api/v2/dags/{d}")[0] == 200, 180,
                                    f"the dag-processor to parse {dag_id}")  # fmt: skip
            status, body = self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
            assert status == 200, f"unpausing {dag_id}: HTTP {status} {body}"
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.airflow is not None:
            self.airflow.stop()
        if self.sandbox is not None:
            self.sandbox.stop()
        self.s3.stop()
        self.redis.stop()
        self.postgres.stop()

    def _airflow_env(self) -> dict[str, str]:
        m2m = json.loads(self.sandbox.conn_env(timeout=30)["AIRFLOW_CONN_M2M_DEFAULT"])
        m2m["extra"]["max_requests_per_second"] = self.max_requests_per_second
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.dsn().replace(
                "postgresql://", "postgresql+psycopg2://"
            ),
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.dsn(),
            "AIRFLOW__CORE__PARALLELISM": str(len(WORKERS) * WORKER_CONCURRENCY),
            # The DAGs are triggered through the REST API only: unpausing the nightly DAG starts no cron run.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "AIRFLOW_CONN_M2M_DEFAULT": json.dumps(m2m),
            "AIRFLOW_CONN_DARAJA_DEFAULT": self.sandbox.conn_env(timeout=30)["AIRFLOW_CONN_DARAJA_DEFAULT"],
            "AIRFLOW_CONN_AWS_DEFAULT": self.s3.connection(),
            # The example DAGs (the dags folder) and DAGs that only the stack's tests run, as a second bundle.
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                [
                    {"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}},
                    {"name": "prod-test-dags", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(HERE / "dags")}},
                ]
            ),
        }

    def _airflow_tails(self) -> str:
        logs = self.root / "airflow" / "component-logs"
        return "\n".join(f"--- the end of {path}:\n{tail(path)}" for path in sorted(logs.glob("*.log")))

    # ------------------------------------------------------------------ the Celery workers
    def worker_log(self, name: str) -> Path:
        return self.airflow.logs / f"{name}.log"

    def wait_for_worker(self, name: str, since: int = 0, timeout: float = 120) -> None:
        """Wait until the Celery worker ``name`` says it is ready (its log after byte ``since``)."""
        log = self.worker_log(name)

        def ready() -> bool:
            with log.open("rb") as fh:
                fh.seek(since)
                return f"celery@{name} ready.".encode() in fh.read()

        self.airflow.wait_until(ready, timeout, f"Celery worker {name}")

    def kill_worker(self, name: str) -> None:
        """
        SIGKILL a Celery worker with every task process under it, as a machine dying would.

        The task runners are SIGKILLed too, by pid: Airflow's supervisor puts each in a process group of its own,
        so a kill of the worker's group alone leaves them running, orphaned, still calling the platform.
        """
        import psutil

        tree = psutil.Process(self.airflow.processes[name].pid).children(recursive=True)
        self.airflow.kill(name)
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(tree, timeout=10)

    def restart(self, name: str) -> None:
        """Start a component (again) and, for a worker, wait until it takes tasks."""
        if name in self.airflow.processes:
            self.airflow.kill(name)
        log = self.airflow.logs / f"{name}.log"
        since = log.stat().st_size if log.exists() else 0
        self.airflow.launch(name)
        if name in WORKERS:
            self.wait_for_worker(name, since)

    # ------------------------------------------------------------------ the REST API
    def api(self, method: str, path: str, payload: dict | None = None):
        return self.airflow.api(method, path, payload)

    def trigger(self, dag_id: str, conf: dict, logical_date, interval=None, run_id: str | None = None) -> str:
        """POST a DAG run (a logical date and, like a scheduled run, its data interval); its run id."""
        body = {"logical_date": logical_date.isoformat(), "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        if interval:
            body.update(data_interval_start=interval[0].isoformat(), data_interval_end=interval[1].isoformat())
        status, answer = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        assert status == 200, f"triggering {dag_id}: HTTP {status} {answer}"
        return answer["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        status, answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        assert status == 200, f"reading run {run_id}: HTTP {status} {answer}"
        return answer["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """Wait until the run is finished; its final state."""
        return self.airflow.wait_until(
            lambda: (state := self.run_state(dag_id, run_id)) in ("success", "failed") and state,
            timeout,
            f"run {run_id} of {dag_id} to finish",
            interval=2,
        )

    def task_instances(self, dag_id: str, run_id: str, task_id: str | None = None) -> list[dict]:
        """The run's task instances (mapped ones one by one), optionally of one task only."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000"
        if task_id:
            path += f"&task_id={task_id}"
        status, answer = self.api("GET", path)
        assert status == 200, f"reading task instances: HTTP {status} {answer}"
        return answer["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict]:
        """Every try of the task's instances so far (earlier tries from the task instance history)."""
        found = []
        for ti in self.task_instances(dag_id, run_id, task_id):
            path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{ti['map_index']}/tries"
            status, answer = self.api("GET", path)
            assert status == 200, f"reading the tries of {task_id}[{ti['map_index']}]: HTTP {status} {answer}"
            found += answer["task_instances"]
        return found

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> tuple[object, int]:
        """A task's return value read back through the REST API, and its size as JSON (bytes)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        status, answer = self.api("GET", f"{path}?map_index={map_index}&deserialize=true")
        assert status == 200, f"reading the XCom of {task_id}: HTTP {status} {answer}"
        value = answer["value"]
        return value, len(json.dumps(value, separators=(",", ":")).encode())


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    with ProdStack(fleet=10_000) as stack:
        print(f"Airflow at {stack.airflow.base_url}  user {stack.airflow.username}  password {stack.airflow.password}")
        print(f"PostgreSQL {stack.postgres.dsn()}  Redis {stack.redis.url}  S3 {stack.s3.endpoint} (bucket {BUCKET})")
        print(f"sandbox {stack.sandbox.url}; everything under {stack.root}; started in {stack.startup_s:.0f} s")
        print("Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                stack.airflow.check_alive()
                time.sleep(2)
