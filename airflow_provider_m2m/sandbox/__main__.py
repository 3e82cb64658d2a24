"""
Command line: ``python -m airflow_provider_m2m.sandbox [--port 8780] [--fleet 1000] ...``.

Prints a machine-readable ready line (``SANDBOX_READY {"url": ..., "port": ...}``), the URL and
``export AIRFLOW_CONN_...`` lines, then serves until Ctrl-C / SIGTERM. ``--self-check`` runs one call of
each kind against a sandbox on a free port and exits 0 on success; ``--write-fleet PATH`` writes the
fleet CSV and exits.
"""

from __future__ import annotations

import argparse
import base64
import json
import shlex
import signal
import sys
import urllib.error
import urllib.request
from datetime import datetime

from .fleet import Fleet
from .in_process import Sandbox
from .remote import READY_PREFIX
from .state import SANDBOX_CREDENTIALS


def _flag(value: str) -> bool:
    """``True``/``False`` (as RemoteSandbox passes a bool), also 1/0, yes/no, on/off."""
    if value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def _anchor(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError("anchor must carry a timezone (e.g. 2026-11-22T00:00:00Z)")
    return dt


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m airflow_provider_m2m.sandbox", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8780, help="0 = a free port")
    p.add_argument("--fleet", type=int, default=1000, help="number of SIMs")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every platform request")
    p.add_argument("--rate-limit", type=float, default=0.0, help="platform requests/s (0 = unlimited)")
    p.add_argument("--token-ttl", type=float, default=3599)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sms-delivery-delay", type=float, default=2.0, help="seconds until an SMS is delivered (or fails)")
    p.add_argument("--anchor", type=_anchor, default=None, help="end of 'the last day' (default: midnight UTC)")
    p.add_argument("--timeline-days", type=int, default=0, help="days after the anchor with device changes")
    p.add_argument(
        "--one-live-token",
        type=_flag,
        default=True,
        help="Daraja's rule: a new token invalidates the app's previous one (true, as the platform has it, or false)",
    )
    p.add_argument("--write-fleet", metavar="PATH", help="write the fleet CSV and exit")
    p.add_argument("--self-check", action="store_true", help="run one call of each kind and exit")
    for name, value in SANDBOX_CREDENTIALS.items():
        p.add_argument("--" + name.replace("_", "-"), default=value)
    return p


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # nosec B310  # the self-check's own http://127.0.0.1 URL
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def self_check(sb: Sandbox) -> list[str]:
    """Run one query_imei, one send_sms, one token + checkATI; return failure messages (empty = pass)."""
    failures: list[str] = []
    c = sb.credentials
    sim = sb.fleet.sims[0]
    auth = (
        f"<authentication><username>{c['m2m_username']}</username>"
        f"<password>{c['m2m_password']}</password></authentication>"
    )
    xml_h = {"Content-Type": "application/xml"}
    status, body = _post(
        sb.url + "/",
        f'<query_imei version="1" api_id="{c["m2m_api_id"]}">{auth}<iccid>{sim.iccid}</iccid></query_imei>'.encode(),
        xml_h,
    )
    ok = status == 200 and b"<api_outcome>success</api_outcome>" in body
    print(f"query_imei          {'PASS' if ok else 'FAIL'}  HTTP {status}")
    if not ok:
        failures.append("query_imei")
    status, body = _post(
        sb.url + "/",
        (
            f'<send_sms version="1" api_id="{c["m2m_api_id"]}">{auth}<iccid>{sim.iccid}</iccid>'
            "<message_text>self-check</message_text><data_coding>default</data_coding></send_sms>"
        ).encode(),
        xml_h,
    )
    ok = status == 200 and b"<sms_uid>" in body and sb.stats()["sms_per_iccid"].get(sim.iccid) == 1
    print(f"send_sms            {'PASS' if ok else 'FAIL'}  HTTP {status}")
    if not ok:
        failures.append("send_sms")
    basic = base64.b64encode(f"{c['daraja_key']}:{c['daraja_secret']}".encode()).decode()
    req = urllib.request.Request(
        sb.url + "/oauth/v1/generate?grant_type=client_credentials", headers={"Authorization": "Basic " + basic}
    )
    token = ""
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # nosec B310  # the self-check's own http://127.0.0.1 URL
            token = json.loads(r.read())["access_token"]
    except (urllib.error.URLError, ValueError, KeyError):
        pass
    print(f"oauth token         {'PASS' if token else 'FAIL'}")
    if not token:
        failures.append("oauth")
    status, body = _post(
        sb.url + "/imsi/v1/checkATI",
        json.dumps({"customerNumber": sim.msisdn}).encode(),
        {"Content-Type": "application/json", "Authorization": "Bearer " + token},
    )
    ok = status == 200 and json.loads(body or b"{}").get("responseCode") == "200"
    print(f"checkATI            {'PASS' if ok else 'FAIL'}  HTTP {status}")
    if not ok:
        failures.append("checkATI")
    return failures


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m airflow_provider_m2m.sandbox``."""
    args = _parser().parse_args(argv)
    creds = {name: getattr(args, name) for name in SANDBOX_CREDENTIALS}
    fleet = Fleet(args.fleet, seed=args.seed, anchor=args.anchor, timeline_days=args.timeline_days)
    if args.write_fleet:
        path = fleet.write_csv(args.write_fleet)
        print(f"wrote {len(fleet)} SIMs to {path}")
        return 0
    port = 0 if args.self_check else args.port
    sb = Sandbox(
        fleet,
        latency=args.latency,
        port=port,
        seed=args.seed,
        rate_limit=args.rate_limit,
        token_ttl=args.token_ttl,
        sms_delivery_delay=args.sms_delivery_delay,
        host=args.host,
        one_live_token=args.one_live_token,
        **creds,
    )
    if args.self_check:
        with sb:
            print(f"sandbox self-check against {sb.url}")
            failures = self_check(sb)
        print("PASS" if not failures else "FAIL: " + ", ".join(failures))
        return 0 if not failures else 1

    def _term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    url = sb.url  # binds the socket
    print(READY_PREFIX + json.dumps({"url": url, "port": sb.port}))
    print(
        f"M2M sandbox serving SIM Insight and Daraja at {url} (fleet {len(fleet)}, anchor {fleet.anchor.isoformat()})"
    )
    for name, value in sb.conn_env().items():
        print(f"export {name}={shlex.quote(value)}")
    sys.stdout.flush()
    try:
        sb.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
