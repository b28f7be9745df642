"""Deploy benchmark on a fresh copy of the lab federation (root).

Prints, as `name value` lines:
  deploy.first_s        full deploy of the lab federation on freshly booted lab hosts
  deploy.noop_s         a second deploy (nothing changed: health check only); target < 25 %
                        of the first
  deploy.noop_full_s    a third deploy with --full (every role runs again, 0 changed)
  submit.start_s.*      submit -> start latency of jobs submitted at site-a's access point,
                        pinned to site-b (across the WAN link) and to site-a; target < 10 s
Usage: python bench/deploy_bench.py [--mode global-pool|flock] [--jobs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.labfed import cli, lab_copy  # noqa: E402

SOURCES = {
    "global-pool": (ROOT / "inventories/lab/federation.yaml", "10.90.0.0/16"),
    "flock": (ROOT / "inventories/lab/federation-flock.yaml", "10.91.0.0/16"),
}


def _deploy(path: Path, *flags: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = cli("deploy", str(path), *flags, "-o", "json")
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"deploy failed:\n{proc.stderr[-2000:]}")
    return seconds, int(json.loads(proc.stdout)["changed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=list(SOURCES), default="global-pool")
    parser.add_argument("--jobs", type=int, default=3, help="jobs per target site")
    args = parser.parse_args()
    source, supernet = SOURCES[args.mode]
    path = lab_copy(source, "bench-deploy", "efd", supernet, Path(tempfile.mkdtemp()))
    cli("lab", "down", str(path))
    try:
        t0 = time.perf_counter()
        up = cli("lab", "up", str(path))
        if up.returncode != 0:
            sys.exit(f"lab up failed: {up.stderr}")
        print(f"deploy.lab_up_s {time.perf_counter() - t0:.1f}")
        first, changed = _deploy(path)
        print(f"deploy.first_s {first:.1f}  ({changed} tasks changed, mode {args.mode})")
        noop, changed_again = _deploy(path)
        ratio = noop / first
        print(
            f"deploy.noop_s {noop:.1f}  ({changed_again} changed; health check only: "
            f"{ratio:.0%} of the first: target < 25%: {'met' if ratio < 0.25 else 'MISSED'})"
        )
        full, changed_full = _deploy(path, "--full")
        print(
            f"deploy.noop_full_s {full:.1f}  ({changed_full} changed; every role run again: "
            f"{full / first:.0%} of the first)"
        )
        if cli("status", str(path), "--wait", "120").returncode != 0:
            sys.exit("the pool did not come up")
        for site in ("site-b", "site-a"):
            latencies = []
            for _ in range(args.jobs):
                proc = cli(
                    "smoke", str(path), "--access-point", "ap-a", "--site", site, "-o", "json"
                )
                [res] = json.loads(proc.stdout or "[{}]")
                if not res.get("ok"):
                    sys.exit(f"job to {site} failed: {res.get('message')} {proc.stderr}")
                latencies.append(res["submit_to_start_s"])
            med = statistics.median(latencies)
            print(
                f"submit.start_s.ap-a_to_{site} {med:.0f}  (median of {latencies}; "
                f"target < 10: {'met' if med < 10 else 'MISSED'})"
            )
    finally:
        cli("lab", "down", str(path))


if __name__ == "__main__":
    main()
