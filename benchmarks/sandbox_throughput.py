"""
How many query_imei requests/s the sandbox sustains (it must never be the bottleneck).

Spawns the sandbox in a subprocess, then hammers ``query_imei`` from 32 threads, each with its own
keep-alive ``http.client.HTTPConnection``, for about 5 s at zero latency and again at 50 ms latency.
Prints requests/s; no asserts.

    python benchmarks/sandbox_throughput.py [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import http.client
import threading
import time
from urllib.parse import urlparse

from airflow_provider_m2m.sandbox import SANDBOX_CREDENTIALS, Sandbox


def hammer(url: str, iccids: list[str], seconds: float, connections: int) -> tuple[int, int, float]:
    """Return (ok, errors, elapsed) for ``connections`` threads sending query_imei for ``seconds``."""
    c = SANDBOX_CREDENTIALS
    u = urlparse(url)
    bodies = [
        (
            f'<query_imei version="1" api_id="{c["m2m_api_id"]}"><authentication>'
            f"<username>{c['m2m_username']}</username><password>{c['m2m_password']}</password>"
            f"</authentication><iccid>{iccid}</iccid></query_imei>"
        ).encode()
        for iccid in iccids
    ]
    counts = [[0, 0] for _ in range(connections)]
    deadline = time.monotonic() + seconds
    start = threading.Barrier(connections + 1)

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        start.wait()
        n = i
        while time.monotonic() < deadline:
            body = bodies[n % len(bodies)]
            n += connections
            try:
                conn.request("POST", "/", body=body, headers={"Content-Type": "application/xml"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status == 200 and b"success" in data:
                    counts[i][0] += 1
                else:
                    counts[i][1] += 1
            except (OSError, http.client.HTTPException):
                counts[i][1] += 1
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    return sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--fleet", type=int, default=10_000)
    args = p.parse_args()
    with Sandbox.spawn(fleet=args.fleet) as sb:
        iccids = sb.fleet.iccids
        for latency in (0.0, 0.05):
            sb.reset()
            sb.configure(latency=latency)
            ok, errors, elapsed = hammer(sb.url, iccids, args.seconds, args.connections)
            st = sb.stats()
            ideal = f" (ideal {args.connections / latency:.0f}/s)" if latency else ""
            print(
                f"latency {latency * 1000:4.0f} ms, {args.connections} keep-alive connections: "
                f"{ok / elapsed:8.0f} req/s{ideal}, errors {errors}, server max_in_flight "
                f"{st['max_in_flight']}"
            )


if __name__ == "__main__":
    main()
