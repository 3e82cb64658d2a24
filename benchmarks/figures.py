"""
The measurements behind ``benchmarks/run_all.py``, one per fresh process.

Each sub-command measures one thing and prints one JSON object as its last stdout line. The sandbox
always runs in another process, so the client's CPU time and peak RSS are the client's alone.

    python benchmarks/figures.py batch --sims 10000 --latency 0.05 --workers 32
    python benchmarks/figures.py sequential --sims 200 --latency 0.05
    python benchmarks/figures.py executor --sims 30 --latency 0.05 --parallelism 4
    python benchmarks/figures.py rss --iccid-file F --out-dir D       (sandbox URL from AIRFLOW_CONN_M2M_DEFAULT)
    python benchmarks/figures.py ratelimit --sims 3000 --platform-rate 200 --client-rate 195 --workers 32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from airflow_provider_m2m.sandbox import Sandbox
from airflow_provider_m2m.sandbox.airflow_home import airflow_home_env, new_airflow_home

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox_throughput import hammer


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _conn_env(sb, **extra: object) -> dict[str, str]:
    """The sandbox's connection env, with extra connection settings (e.g. ``max_requests_per_second``)."""
    env = sb.conn_env()
    if extra:
        conn = json.loads(env["AIRFLOW_CONN_M2M_DEFAULT"])
        conn["extra"].update(extra)
        env["AIRFLOW_CONN_M2M_DEFAULT"] = json.dumps(conn)
    return env


def batch(args: argparse.Namespace) -> dict:
    """Wall and CPU time of ``query_imeis`` over ``--sims`` SIMs with ``--workers`` in flight."""
    with Sandbox.spawn(fleet=args.sims, latency=args.latency) as sb:
        os.environ.update(_conn_env(sb))
        from airflow_provider_m2m.hooks.m2m import M2mHook

        iccids = sb.fleet.iccids
        floor = None
        if args.latency:
            # What the sandbox (and this machine) allow at all: a minimal client, one thread and one keep-alive
            # http.client connection per slot, against the physical limit. The client is judged against this.
            ok, _, elapsed = hammer(sb.url, iccids, args.floor_seconds, args.workers)
            floor = ok / elapsed * args.latency / args.workers
        hook = M2mHook()
        for _ in hook.query_imeis(iccids[: 2 * args.workers], max_workers=args.workers):  # warm up code paths
            pass
        sb.reset()
        cpu0, t0 = _cpu(), time.perf_counter()
        count = failed = 0
        for record in hook.query_imeis(iccids, max_workers=args.workers):
            count += 1
            failed += record.error is not None
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        stats = sb.stats()
    return {
        "sims": args.sims,
        "latency": args.latency,
        "workers": args.workers,
        "records": count,
        "failed": failed,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ms_per_call": 1000 * cpu / max(1, stats["requests"]),
        "requests": stats["requests"],
        "max_in_flight": stats["max_in_flight"],
        "limit_s": args.sims * args.latency / args.workers,
        "sandbox_floor_ratio": floor,
    }


def sequential(args: argparse.Namespace) -> dict:
    """A plain loop of ``query_imei`` over ``--sims`` SIMs (one keep-alive session)."""
    with Sandbox.spawn(fleet=args.sims, latency=args.latency) as sb:
        os.environ.update(_conn_env(sb))
        from airflow_provider_m2m.hooks.m2m import M2mHook

        iccids = sb.fleet.iccids
        hook = M2mHook()
        hook.query_imei(iccids[0])  # warm up: connection and code paths
        t0 = time.perf_counter()
        records = [hook.query_imei(iccid) for iccid in iccids]
        wall = time.perf_counter() - t0
        hook.close()
    return {"sims": args.sims, "latency": args.latency, "records": len(records), "wall_s": wall}


_MAPPED_DAG = '''
"""One mapped task instance per SIM: the pattern the batch path replaces."""
import pendulum
from airflow.sdk import dag, task

ICCIDS = {iccids!r}


@dag(dag_id="bench_one_task_per_sim", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False)
def bench_one_task_per_sim():
    @task
    def query(iccid: str) -> str | None:
        from airflow_provider_m2m.hooks.m2m import M2mHook

        return M2mHook().query_imei(iccid).current_imei

    query.expand(iccid=ICCIDS)


bench_one_task_per_sim()
'''


def executor(args: argparse.Namespace) -> dict:
    """``dag.test(use_executor=True)`` of one mapped task per SIM, under a throwaway Airflow home."""
    if not args.child:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # Airflow reads its configuration at import: set the environment, then re-run in a fresh process.
        home = new_airflow_home("m2m-bench-home-")
        env = {
            **os.environ,
            **airflow_home_env(home),
            "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            # Airflow 3 task processes report to the Execution API: a real executor needs an API server,
            # which must sign and check the same JWTs as the executor.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        }
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", "--api-port", str(port)]
        # A session of its own, so a timeout also ends the executor's worker processes and the API server.
        child = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            stdout, stderr = child.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return {"sims": args.sims, "succeeded": False, "state": f"timed out after {args.timeout:.0f} s"}
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # stray LocalExecutor workers
            shutil.rmtree(home, ignore_errors=True)
        lines = stdout.strip().splitlines()
        if child.returncode or not lines or not lines[-1].startswith("{"):
            raise SystemExit(f"executor child failed ({child.returncode}):\n{(stderr or stdout)[-3000:]}")
        return json.loads(lines[-1])

    from airflow.utils import db

    home = Path(os.environ["AIRFLOW_HOME"])
    t0 = time.perf_counter()
    db.initdb()
    initdb_s = time.perf_counter() - t0
    api_log = (home / "api-server.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server", "--apps", "execution", "--host", "127.0.0.1"]
        + ["--port", str(args.api_port), "--workers", "1"],
        stdout=api_log,
        stderr=subprocess.STDOUT,
    )
    try:
        api_s = _wait_for_port(args.api_port, api)
        result = _run_mapped_dag(args, home)
    finally:
        api.terminate()
        try:
            api.wait(15)
        except subprocess.TimeoutExpired:
            api.kill()
        api_log.close()
    return {**result, "initdb_s": initdb_s, "api_server_start_s": api_s}


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 90) -> float:
    """Seconds until something listens on ``port`` (the API server started)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the API server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the API server did not start")


def _run_mapped_dag(args: argparse.Namespace, home: Path) -> dict:
    from airflow.utils.state import DagRunState

    from airflow_provider_m2m.version_compat import dag_bag

    with Sandbox.spawn(fleet=args.sims, latency=args.latency) as sb:
        os.environ.update(_conn_env(sb))
        target = home / "dags" / "bench_one_task_per_sim.py"
        target.write_text(textwrap.dedent(_MAPPED_DAG.format(iccids=sb.fleet.iccids)))
        t0 = time.perf_counter()
        bag = dag_bag(str(target))
        if bag.import_errors:
            raise SystemExit(f"DAG import errors: {bag.import_errors}")
        dag = bag.get_dag("bench_one_task_per_sim")
        run = dag.test(use_executor=True)
        wall = time.perf_counter() - t0
        stats = sb.stats()
    return {
        "sims": args.sims,
        "latency": args.latency,
        "state": str(run.state),
        "succeeded": run.state == DagRunState.SUCCESS,
        "wall_s": wall,
        "requests": stats["requests"],
        "executor": os.environ["AIRFLOW__CORE__EXECUTOR"],
        "parallelism": int(os.environ["AIRFLOW__CORE__PARALLELISM"]),
        "database": "sqlite",
    }


def rss(args: argparse.Namespace) -> dict:
    """Peak RSS of an audit streamed to a CSV, the way QueryImeiOperator does with ``output_uri``."""
    from airflow_provider_m2m.files import write_csv
    from airflow_provider_m2m.hooks.m2m import M2mHook
    from airflow_provider_m2m.operators.m2m import CSV_COLUMNS

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    iccids = Path(args.iccid_file).read_text().split()[: args.sims]
    target = Path(args.out_dir) / f"audit-{len(iccids)}.csv"
    t0 = time.perf_counter()
    rows = write_csv(
        target.as_uri(), CSV_COLUMNS, (r.as_dict() for r in M2mHook().query_imeis(iccids, max_workers=args.workers))
    )
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"sims": len(iccids), "rows": rows, "wall_s": wall, "peak_rss_mb": peak / 1024, "import_rss_mb": base / 1024}


def ratelimit(args: argparse.Namespace) -> dict:
    """Throughput and correctness of a batch under the platform's rate limit."""
    with Sandbox.spawn(fleet=args.sims, latency=args.latency, rate_limit=args.platform_rate) as sb:
        os.environ.update(_conn_env(sb, max_requests_per_second=args.client_rate))
        from airflow_provider_m2m.hooks.m2m import M2mHook

        iccids = sb.fleet.iccids
        hook = M2mHook()
        time.sleep(0.5)  # let the platform's bucket refill after start-up
        t0 = time.perf_counter()
        seen = Counter(
            record.iccid for record in hook.query_imeis(iccids, max_workers=args.workers) if not record.error
        )
        wall = time.perf_counter() - t0
        stats = sb.stats()
    server = stats["imei_queries_per_iccid"]
    return {
        "sims": args.sims,
        "platform_rate": args.platform_rate,
        "client_rate": args.client_rate,
        "wall_s": wall,
        "throughput": args.sims / wall,
        "rate_limited": stats["rate_limited"],
        "requests": stats["requests"],
        "lost": sum(1 for i in iccids if i not in seen),
        "duplicated": sum(1 for n in seen.values() if n > 1),
        "server_missing": sum(1 for i in iccids if i not in server),
        "server_repeated": sum(1 for n in server.values() if n > 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("figure", choices=["batch", "sequential", "executor", "rss", "ratelimit"])
    p.add_argument("--sims", type=int, default=10_000)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--floor-seconds", type=float, default=4)
    p.add_argument("--parallelism", type=int, default=4)
    p.add_argument("--timeout", type=float, default=150, help="seconds before the executor run is abandoned")
    p.add_argument("--iccid-file")
    p.add_argument("--out-dir")
    p.add_argument("--platform-rate", type=float, default=200)
    p.add_argument("--client-rate", type=float, default=195)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--api-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    result = globals()[args.figure](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
