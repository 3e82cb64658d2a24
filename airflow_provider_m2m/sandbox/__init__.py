"""
A local SIM Insight + Safaricom Daraja server for demos, tests and benchmarks.

One real HTTP server on 127.0.0.1 imitates both platforms (stdlib + lxml, no Airflow):

* SIM Insight: ``POST /`` (any path not under ``/oauth``, ``/imsi`` or ``/_sandbox``), XML commands
  ``query_imei``, ``send_sms``, ``query_sms_mt_details``, ``query_status``, ``set_status`` and
  ``query_usage``.
* Daraja: ``GET /oauth/v1/generate?grant_type=client_credentials`` and ``POST /imsi/v1/checkATI``.
* Control API (not counted, delayed, limited or faulted): ``GET /_sandbox/stats``,
  ``GET /_sandbox/received?command=...``, ``GET /_sandbox/issued_tokens``, ``GET /_sandbox/credentials``,
  ``GET /_sandbox/info``, ``POST /_sandbox/config`` (JSON knobs), ``POST /_sandbox/inject`` (JSON
  ``{"kind": ..., "count": ...}``), ``POST /_sandbox/clear_faults``, ``POST /_sandbox/reset``,
  ``POST /_sandbox/revoke_tokens``.

Modules, one concern each: ``state`` (what the sandbox knows and counts), ``sim_insight`` and ``daraja`` (one per
platform side: a new command is one handler registered in its table), ``controls`` (the control calls and the
one interface of both front ends), ``server`` (HTTP, latency, rate limit, faults), ``in_process`` (``Sandbox``)
and ``remote`` (``Sandbox.spawn`` / ``RemoteSandbox``), ``fleet`` (the generated SIMs and numbers),
``airflow_home`` (a throwaway Airflow home for tests, the demo and benchmarks), ``push`` (pushing to a receiver as
SIM Insight's push services do: payloads, retry schedule, duplicates, receipts of settled messages, MO
messages and usage alerts on command).

Python::

    from airflow_provider_m2m.sandbox import Sandbox
    with Sandbox(fleet=1000) as sb:          # in-process, daemon thread
        os.environ.update(sb.conn_env())
    with Sandbox.spawn(fleet=1000) as sb:    # subprocess, same methods over the control API
        ...

CLI: ``python -m airflow_provider_m2m.sandbox --help``.
"""

from __future__ import annotations

from .controls import SandboxControls
from .fleet import (
    DOCUMENTATION_SWAPS,
    EDGE_CASES,
    SWAP_EDGE_CASES,
    DeviceChange,
    Fleet,
    SimRecord,
    SwapRecord,
    imeisv_to_imei,
    midnight_utc,
)
from .in_process import Sandbox
from .remote import RemoteSandbox
from .server import SandboxHTTPServer
from .state import FAULT_KINDS, SANDBOX_CREDENTIALS, SandboxState

__all__ = [
    "DOCUMENTATION_SWAPS",
    "EDGE_CASES",
    "FAULT_KINDS",
    "SANDBOX_CREDENTIALS",
    "SWAP_EDGE_CASES",
    "DeviceChange",
    "Fleet",
    "RemoteSandbox",
    "Sandbox",
    "SandboxControls",
    "SandboxHTTPServer",
    "SandboxState",
    "SimRecord",
    "SwapRecord",
    "imeisv_to_imei",
    "midnight_utc",
]
