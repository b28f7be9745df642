"""XCache benchmark on a fresh copy of the lab federation (root).

cache-a is pointed at site-b's origin (--extra-vars xcache_origin), so every cache miss crosses
the WAN link (100 Mbit, tbf). A job's host at site-a (wn-a1) reads site-b's 100 MiB file
directly from the origin and through its site's cache, in the same run, with a real token of
group /escape/hep from the lab issuer (ztn, over TLS, as a job reads). Prints `name value`:
  cache.origin_wan_s     read from origin-b across the WAN link (median)
  cache.first_read_s     first read through cache-a (a miss: crosses the WAN link once)
  cache.hit_s            later reads through cache-a (median)
  cache.speedup          origin_wan_s / hit_s; target >= 5
  cache.hit_mbps         throughput of a cached read (MB/s) next to
  cache.disk_mbps        a plain O_DIRECT read of the same cached file on cache-a's disk
Usage: python bench/cache_bench.py [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.roles.xrootd_lab import (  # noqa: E402
    BENCH_FILE,
    CACHE_ROOT,
    COLLISIONS,
    HEP,
    data_lab,
    timed_reads,
)

ORIGIN_B = "root://origin-b.site-b.escape.lab:1094"
CACHE_A = "root://cache-a.site-a.escape.lab:1094"
SIZE = 100 * 1024 * 1024


def _reads(lab, url: str, reps: int) -> list[float]:  # type: ignore[no-untyped-def]
    rows = timed_reads(lab, "wn-a1", url, reps)
    for _, rc, err in rows:
        if rc != 0:
            sys.exit(f"read of {url} failed: {err}")
    return [s for s, _, _ in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="repeated reads per measurement")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ef-cache-bench-"))
    for lab in data_lab(tmp, "bench-cache", "efc", "10.86.0.0/16"):
        issuer = lab.deploy_issuer()
        if issuer.rc != 0:
            sys.exit(f"iam.yml failed:\n{issuer.output[-3000:]}")
        run = lab.playbook()
        if run.rc != 0:
            sys.exit(f"data.yml failed:\n{run.output[-3000:]}")
        cross = lab.playbook(
            "--limit", "cache-a", "--extra-vars", json.dumps({"xcache_origin": ORIGIN_B})
        )
        if cross.rc != 0:
            sys.exit(f"pointing cache-a at origin-b failed:\n{cross.output[-3000:]}")
        lab.give_token("wn-a1", HEP)
        path = f"{COLLISIONS}/{BENCH_FILE}"

        origin = statistics.median(_reads(lab, f"{ORIGIN_B}/{path}", args.reps))
        [first] = _reads(lab, f"{CACHE_A}/{path}", 1)
        hit = statistics.median(_reads(lab, f"{CACHE_A}/{path}", max(args.reps, 3)))
        dd = lab.out(
            "cache-a", f"dd if={CACHE_ROOT}{path} of=/dev/null bs=1M iflag=direct 2>&1 | tail -1"
        )
        match = re.search(r"copied, ([0-9.]+) s", dd)
        if not match:
            sys.exit(f"cannot read dd's output: {dd}")
        disk = float(match.group(1))

        speedup = origin / hit
        wan_mbit = SIZE * 8 / origin / 1e6
        print(f"cache.origin_wan_s {origin:.2f}  (origin-b over the WAN: {wan_mbit:.0f} Mbit/s)")
        print(f"cache.first_read_s {first:.2f}  (miss: cache-a fetches from origin-b)")
        print(f"cache.hit_s {hit:.3f}  (median of {max(args.reps, 3)} cached reads from wn-a1)")
        print(f"cache.speedup {speedup:.1f}  (target >= 5: {'met' if speedup >= 5 else 'MISSED'})")
        print(f"cache.hit_mbps {SIZE / hit / 1e6:.0f}  (cached read, over the site network)")
        print(
            f"cache.disk_mbps {SIZE / disk / 1e6:.0f}  (O_DIRECT read of it on cache-a: the limit)"
        )


if __name__ == "__main__":
    main()
