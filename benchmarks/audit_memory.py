"""
Peak memory of the fleet audit's diff and report step (``audit_state.audit_night``) for a fleet of N SIMs.

The platform calls are not measured: the batch files are generated directly, as QueryImeiOperator writes them,
with a previous state in which about 10 % of the SIMs had another device, so the night diffs, merges and writes
a report of real size. ``--measure`` runs only the step itself in this process and prints JSON
``{"sims": N, "peak_rss_mb": ...}``; without it, both sizes run in subprocesses and their difference is printed::

    .venv/bin/python benchmarks/audit_memory.py              # 20,000 vs 200,000 SIMs
    .venv/bin/python benchmarks/audit_memory.py --measure 200000 --folder /tmp/audit
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

NIGHT = dt.date(2026, 3, 2)
BATCH = 2000


def generate(folder: Path, sims: int) -> dict:
    """Write a fleet file, its batch files and a previous state under ``folder``; return audit_night's arguments."""
    from airflow_provider_m2m.audit_state import state_uri
    from airflow_provider_m2m.files import chunked, write_csv

    rng = random.Random(sims)
    audit = folder.as_uri() + "/fleet_imei_change_report"
    iccids = [f"89254{n:014d}" for n in rng.sample(range(10**13), sims)]
    imeis = {i: f"35982704{rng.randrange(10**7):07d}" for i in iccids}
    fleet = ({"iccid": i, "asset_name": f"truck-{n}", "expected_imei": imeis[i]} for n, i in enumerate(iccids))
    write_csv(f"{folder.as_uri()}/fleet.csv", ["iccid", "asset_name", "expected_imei"], fleet)
    when = "2026-02-01T00:00:00+00:00"
    moved = set(rng.sample(iccids, sims // 10))
    state = ({"iccid": i, "imei": "86205704" + imeis[i][8:] if i in moved else imeis[i], "last_change": when}
             for i in sorted(iccids))  # fmt: skip
    write_csv(state_uri(audit, NIGHT - dt.timedelta(days=1)), ["iccid", "imei", "last_change"], state)
    uris = []
    for n, chunk in enumerate(chunked(iccids, BATCH)):
        uri = f"{audit}/{NIGHT:%Y-%m-%d}/batches/batch-{n:05d}.csv"
        rows = ({"iccid": i, "current_imei": imeis[i], "last_change": when, "previous_imei": None} for i in chunk)
        write_csv(uri, ["iccid", "current_imei", "last_change", "previous_imei", "error"], rows)
        uris.append(uri)
    return {"fleet_uri": f"{folder.as_uri()}/fleet.csv", "batch_uris": uris, "audit_folder": audit}


def measure(folder: Path, sims: int) -> dict:
    """Run the diff and report step once over the generated files; return the counts and the peak RSS."""
    from airflow_provider_m2m.audit_state import audit_night

    args = json.loads((folder / "args.json").read_text())
    result = audit_night(**args, batch_size=BATCH, night=NIGHT, since=dt.datetime.combine(NIGHT, dt.time(), dt.UTC))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"sims": sims, "peak_rss_mb": round(peak_kb / 1024, 1), "changed": result["changed"]}


def run(sims: int) -> dict:
    """Generate in one subprocess, measure in another (so the generation's memory is not counted)."""
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import audit_memory as m; "
            "f = Path(sys.argv[2]); (f / 'args.json').write_text(json.dumps(m.generate(f, int(sys.argv[3]))))"
        )
        here = str(Path(__file__).parent)
        subprocess.run([sys.executable, "-c", code, here, tmp, str(sims)], check=True)
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(sims), "--folder", tmp],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", type=int, help="measure this many SIMs in this process (files in --folder)")
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.folder, args.measure)))
        return
    small, big = run(20_000), run(200_000)
    print(json.dumps({"small": small, "big": big, "growth_mb": round(big["peak_rss_mb"] - small["peak_rss_mb"], 1)}))


if __name__ == "__main__":
    main()
