"""
The measurements behind ``benchmarks/run_all.py``, one per fresh process.

Each sub-command measures one thing and prints one JSON object as its last stdout line. The sandbox
always runs in another process, so the client's CPU time and peak RSS are the client's alone.

    python benchmarks/figures.py batch --sims 10000 --latency 0.05 --workers 32
    python benchmarks/figures.py sequential --sims 200 --latency 0.05
    python benchmarks/figures.py executor --sims 30 --latency 0.05 --parallelism 4
    python benchmarks/figures.py rss --iccid-file F --out-dir D       (sandbox URL from AIRFLOW_CONN_M2M_DEFAULT)
    python benchmarks/figures.py ratelimit --sims 3000 --platform-rate 200 --client-rate 195 --workers 32
    python benchmarks/figures.py sms --sims 10000 --latency 0.05 --workers 16 --platform-rate 0
    python benchmarks/figures.py delivery --sims 10000 --platform-rate 200 --client-rate 195 --delay 2 --workers 16
    python benchmarks/figures.py sms_run --sims 100000 --latency 0 --workers 16 --wait 10 --poke-interval 2
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


def _in_airflow_home(args: argparse.Namespace, extra_env: dict[str, str] | None = None) -> dict | None:
    """
    Re-run this figure in a fresh process under a throwaway Airflow home (Airflow reads its configuration at
    import) and return its JSON result; return None in that child, which then measures.
    """
    if args.child:
        return None
    home = new_airflow_home("m2m-bench-home-")
    env = {
        **os.environ,
        **airflow_home_env(home),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("M2M_BENCH_LOG_LEVEL", "WARNING"),
        **(extra_env or {}),
    }
    cmd = [sys.executable, __file__, *sys.argv[1:], "--child"]
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
        raise SystemExit(f"{args.figure} child failed ({child.returncode}):\n{(stderr or stdout)[-3000:]}")
    return json.loads(lines[-1])


def executor(args: argparse.Namespace) -> dict:
    """``dag.test(use_executor=True)`` of one mapped task per SIM, under a throwaway Airflow home."""
    if not args.child:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            args.api_port = probe.getsockname()[1]
        sys.argv += ["--api-port", str(args.api_port)]
        # Airflow 3 task processes report to the Execution API: a real executor needs an API server,
        # which must sign and check the same JWTs as the executor.
        return _in_airflow_home(
            args,
            {
                "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{args.api_port}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            },
        )

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

    from airflow_provider_m2m.sandbox.airflow_home import dag_bag

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
    from airflow_provider_m2m.hooks.m2m import M2mHook
    from airflow_provider_m2m.operators.m2m import CSV_COLUMNS
    from airflow_provider_m2m.utils.files import write_csv

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


_SMS_DAG = """
import datetime as dt
import json
from airflow.sdk import DAG
from airflow_provider_m2m.operators.m2m import SendSmsOperator
from airflow_provider_m2m.sensors.m2m import SmsDeliverySensor

with DAG("bench_sms", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):
    if {send!r}:
        SendSmsOperator(task_id="send", iccids=json.load(open({data!r})), message_text="Service window tonight",
                        max_workers={workers})
    else:
        SmsDeliverySensor(task_id="wait", messages=json.load(open({data!r})), deferrable=True,
                          poke_interval={poke_interval}, max_workers={workers}, timeout=900)
"""


def _run_sms_dag(home: Path, send: bool, data: object, args: argparse.Namespace) -> tuple[object, float, object]:
    """Run the one-task SMS DAG under ``dag.test()`` (the real task state store); (run, wall seconds, task)."""
    from airflow.dag_processing.dagbag import DagBag

    data_file = home / "data.json"
    data_file.write_text(json.dumps(data))
    target = home / "dags" / "bench_sms.py"
    target.write_text(
        _SMS_DAG.format(send=send, data=str(data_file), workers=args.workers, poke_interval=args.poke_interval)
    )
    dag = DagBag(dag_folder=str(target)).get_dag("bench_sms")
    t0 = time.perf_counter()
    run = dag.test()
    wall = time.perf_counter() - t0
    (ti,) = run.get_task_instances()
    return run, wall, ti


def sms(args: argparse.Namespace) -> dict:
    """One SendSmsOperator task of ``--sims`` SIMs with ``--workers`` in flight, optionally under a rate limit."""
    if (result := _in_airflow_home(args)) is not None:
        return result
    from airflow.utils import db

    from airflow_provider_m2m.sms.ledger import SmsLedger

    db.initdb()
    ledgers: list[SmsLedger] = []  # the task's ledger, to read its store round trips after the run
    init = SmsLedger.__init__

    def keep(self: SmsLedger, *a: object, **k: object) -> None:
        init(self, *a, **k)
        ledgers.append(self)

    SmsLedger.__init__ = keep  # type: ignore[method-assign]
    # The task's own time: execute(), not the task start-up around it (the first task of a dag.test()
    # process also builds the in-process execution API, seconds that no operator controls).
    from airflow_provider_m2m.operators.m2m import SendSmsOperator

    executed: list[float] = []
    execute = SendSmsOperator.execute

    def timed(self: SendSmsOperator, context: object) -> object:
        t0 = time.perf_counter()
        try:
            return execute(self, context)
        finally:
            executed.append(time.perf_counter() - t0)

    SendSmsOperator.execute = timed  # type: ignore[method-assign]
    with Sandbox.spawn(fleet=args.sims, latency=args.latency, rate_limit=args.platform_rate) as sb:
        os.environ.update(
            _conn_env(sb, **({"max_requests_per_second": args.client_rate} if args.platform_rate else {}))
        )
        iccids = sb.fleet.iccids
        time.sleep(0.5)  # let the platform's bucket refill after start-up
        run, wall, ti = _run_sms_dag(Path(os.environ["AIRFLOW_HOME"]), True, iccids, args)
        stats = sb.stats()
    per_sim = stats["sms_per_iccid"]
    task_s = (ti.end_date - ti.start_date).total_seconds()
    execute_s = executed[0] if executed else task_s
    return {
        "sims": args.sims,
        "latency": args.latency,
        "workers": args.workers,
        "state": str(run.state),
        "dag_test_s": wall,
        "task_s": task_s,
        "execute_s": execute_s,
        "limit_s": args.sims * args.latency / args.workers,
        "throughput": args.sims / execute_s,
        "max_in_flight": stats["max_in_flight"],
        "rate_limited": stats["rate_limited"],
        "lost": sum(1 for i in iccids if i not in per_sim),
        "duplicated": sum(1 for n in per_sim.values() if n > 1),
        "store_round_trips": ledgers[0].round_trips if ledgers else None,
        "store_s": ledgers[0].store_seconds if ledgers else None,
    }


def delivery(args: argparse.Namespace) -> dict:
    """
    The delivery wait (SmsDeliverySensor, deferred) for ``--sims`` messages under a platform limit: seconds
    from the wait's start until every message is final, against ``sims / limit + delay``.
    """
    if (result := _in_airflow_home(args)) is not None:
        return result
    from airflow.utils import db

    from airflow_provider_m2m.hooks.m2m import M2mHook
    from airflow_provider_m2m.sandbox import Fleet
    from airflow_provider_m2m.utils import batches

    db.initdb()
    # Only SIMs whose messages end delivered or failed: a device that stays off never lets the wait end.
    fleet = Fleet(int(args.sims / 0.85) + 100)
    final = [i for i in fleet.iccids if fleet.sms_fate(i) != "pending"][: args.sims]
    # The wait's own time: from the sensor's first poke to the end of execute_complete (after the trigger),
    # not the DAG run's start-up around it.
    from airflow_provider_m2m.sensors.m2m import SmsDeliverySensor

    marks: list[float] = []
    execute, complete = SmsDeliverySensor.execute, SmsDeliverySensor.execute_complete

    def started(self: SmsDeliverySensor, context: object) -> object:
        marks.append(time.perf_counter())
        return execute(self, context)

    def completed(self: SmsDeliverySensor, context: object, event: dict) -> object:
        try:
            return complete(self, context, event)
        finally:
            marks.append(time.perf_counter())

    SmsDeliverySensor.execute, SmsDeliverySensor.execute_complete = started, completed  # type: ignore[method-assign]
    with Sandbox.spawn(fleet=fleet) as sb:
        sb.configure(sms_delivery_delay=args.delay)
        os.environ.update(_conn_env(sb))
        hook = M2mHook()
        hook.fetch_connection()  # fetched and masked before the batch's event loop starts
        # Send first, unlimited (not measured), then give the platform its limit and latency and wait.
        sends = batches.map_concurrently(
            final,
            lambda client, n: hook.asend_sms(client, n, "Update tonight"),
            session=lambda: hook.batch_session(32),
            max_workers=32,
        )
        messages = [[r.iccid, r.sms_uid] for r in sends]
        sb.configure(rate_limit=args.platform_rate, latency=args.latency)
        os.environ.update(_conn_env(sb, max_requests_per_second=args.client_rate))
        run, dag_wall, ti = _run_sms_dag(Path(os.environ["AIRFLOW_HOME"]), False, messages, args)
        wall = marks[-1] - marks[0] if len(marks) >= 2 else dag_wall
        stats = sb.stats()
        rows = ti.xcom_pull(task_ids="wait") or []
    return {
        "messages": len(messages),
        "platform_rate": args.platform_rate,
        "client_rate": args.client_rate,
        "delay": args.delay,
        "poke_interval": args.poke_interval,
        "state": str(run.state),
        "wall_s": wall,
        "dag_test_s": dag_wall,
        "floor_s": len(messages) / args.platform_rate + args.delay,
        "final": sum(1 for r in rows if r["state"] in ("delivered", "failed")),
        "queries": stats["by_command"].get("query_sms_mt_details", 0),
        "rate_limited": stats["rate_limited"],
    }


_SMS_RUN_DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_m2m.sms import SmsRun

with DAG("bench_sms_run", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):
    SmsRun(group_id="notify", fleet_uri={fleet!r}, message_text="Service window tonight", report_base_uri={base!r},
           delivery_wait=dt.timedelta(seconds={wait}), batch_size={batch_size}, max_workers={workers},
           poke_interval={poke_interval})
"""


def sms_run(args: argparse.Namespace) -> dict:
    """
    A whole SmsRun (plan, mapped sends, deferred delivery wait, report) of ``--sims`` SIMs under ``dag.test()``:
    the run's XCom bytes (every task, from the xcom table), each SIM's messages (the sandbox's counts), the report.
    """
    if (result := _in_airflow_home(args)) is not None:
        return result
    import csv

    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils import db
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    db.initdb()
    home = Path(os.environ["AIRFLOW_HOME"])
    with Sandbox.spawn(fleet=args.sims, latency=args.latency, sms_delivery_delay=0) as sb:
        os.environ.update(_conn_env(sb))
        iccids = sb.fleet.iccids
        fleet = home / "fleet.csv"
        fleet.write_text("iccid\n" + "\n".join(iccids) + "\n")
        target = home / "dags" / "bench_sms_run.py"
        target.write_text(
            _SMS_RUN_DAG.format(
                fleet=fleet.as_uri(), base=(home / "reports").as_uri(), wait=args.wait, batch_size=args.batch_size,
                workers=args.workers, poke_interval=args.poke_interval,
            )
        )  # fmt: skip
        dag = DagBag(dag_folder=str(target)).get_dag("bench_sms_run")
        t0 = time.perf_counter()
        run = dag.test()
        wall = time.perf_counter() - t0
        stats = sb.stats()
    with create_session() as session:
        per_task = dict(
            session.execute(
                select(XComModel.task_id, func.sum(func.length(XComModel.value)))
                .where(XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id)
                .group_by(XComModel.task_id)
            ).all()
        )
    (report,) = (home / "reports").rglob("outcomes.csv")
    with report.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    per_sim = stats["sms_per_iccid"]
    return {
        "sims": args.sims,
        "batches": -(-args.sims // args.batch_size),
        "state": str(run.state),
        "wall_s": round(wall, 1),
        "xcom_bytes": sum(per_task.values()),
        "xcom_by_task": per_task,
        "report_bytes": report.stat().st_size,
        "report_rows": len(rows),
        "report_sims_once": sorted(r["iccid"] for r in rows) == sorted(iccids),
        "outcomes": dict(Counter(r["outcome"] for r in rows)),
        "sent": sum(per_sim.values()),
        "lost": sum(1 for i in iccids if i not in per_sim),
        "duplicated": sum(1 for n in per_sim.values() if n > 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "figure", choices=["batch", "sequential", "executor", "rss", "ratelimit", "sms", "delivery", "sms_run"]
    )
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
    p.add_argument("--delay", type=float, default=2.0, help="sandbox SMS delivery delay (s)")
    p.add_argument("--poke-interval", type=float, default=10.0)
    p.add_argument("--wait", type=float, default=10.0, help="SmsRun's delivery wait (s)")
    p.add_argument("--batch-size", type=int, default=1000, help="SmsRun's SIMs per batch")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--api-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    result = globals()[args.figure](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
