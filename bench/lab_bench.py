"""Lab bench: image build, cold `lab up` of 10 hosts, idle memory per host, teardown.

Run as root from the repository:  python bench/lab_bench.py [--rebuild] [--idle 10]

Prints one figure a line (``name value``), then each target with ok/MISS. Memory per idle host
three ways: ``idle_mib_*`` is the host's memory cgroup (usage less inactive file cache: what the
target is about), ``idle_rss_mib_*`` sums its processes' RSS (shared library pages counted once
per host, an upper bound), ``idle_mib_machine`` is the drop of MemAvailable over the whole lab
divided by the hosts. Without --rebuild the
image is not built again: the bench reports the time to find the cached image and the build time
recorded when it was built. The lab uses its own prefix (``efb``) and addresses (10.77.200-204),
so it never touches another lab on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from escape_fed.errors import EscapeFedError
from escape_fed.lab import down, status, up
from escape_fed.lab.demo import demo_spec
from escape_fed.lab.hosts import cgroup_name, rss_mib
from escape_fed.lab.image import build_image, cached_image, last_build_info

TARGETS = {
    "lab.image.build_s": 120.0,
    "lab.up.10hosts_s": 15.0,
    "lab.host.idle_mib_mean": 40.0,
    "lab.host.idle_mib_max": 40.0,
}


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rebuild", action="store_true", help="build a fresh image in a temp dir")
    ap.add_argument("--state-dir", type=Path, default=Path("/var/tmp/escape-fed-bench"))
    ap.add_argument("--image-cache", type=Path, default=Path("/var/lib/escape-fed/lab/images"))
    ap.add_argument("--idle", type=float, default=10.0, help="seconds idle before measuring")
    args = ap.parse_args()
    figures: dict[str, float] = {}

    spec = demo_spec(
        args.state_dir,
        sites=3,
        hosts_per_site=3,
        central=True,
        prefix="efb",
        third=200,
        name="bench",
        image_cache=args.image_cache,
    )
    assert len(spec.hosts) == 10

    if args.rebuild:
        with tempfile.TemporaryDirectory(prefix="escape-fed-image-", dir="/var/tmp") as tmp:
            fresh = demo_spec(Path(tmp), image_cache=Path(tmp) / "images")
            start = time.monotonic()
            build_image(fresh, say, force=True)
            figures["lab.image.build_s"] = round(time.monotonic() - start, 1)
    else:
        start = time.monotonic()
        found = cached_image(spec)
        figures["lab.image.cached_check_s"] = round(time.monotonic() - start, 4)
        if found is None:
            start = time.monotonic()
            build_image(spec, say)
            figures["lab.image.build_s"] = round(time.monotonic() - start, 1)
        else:
            info = last_build_info(spec) or {}
            seconds = info.get("seconds")
            if isinstance(seconds, int | float):
                figures["lab.image.build_s"] = float(seconds)
                say(f"image: cached; last build took {seconds} s ({info.get('built_at')})")

    try:
        down(spec)  # cold: nothing of the bench lab is left from an earlier run
        build_image(spec, say)  # already cached: the up below times the lab only
        available_before = mem_available_mib()
        start = time.monotonic()
        up(spec, say)
        figures["lab.up.10hosts_s"] = round(time.monotonic() - start, 2)
        say(f"idle for {args.idle:.0f} s")
        time.sleep(args.idle)
        used = available_before - mem_available_mib()
        figures["lab.host.idle_mib_machine"] = round(used / len(spec.hosts), 1)
        samples: list[float] = []
        rss: list[float] = []
        for _ in range(3):
            samples += [
                float(r["memory_mib"])  # type: ignore[arg-type]
                for r in status(spec.state_dir)
                if r["memory_mib"] is not None
            ]
            rss += [m for h in spec.hosts if (m := rss_mib(cgroup_name(h))) is not None]
            time.sleep(1)
        if samples:  # the host's memory cgroup: usage less inactive file cache
            figures["lab.host.idle_mib_mean"] = round(statistics.fmean(samples), 1)
            figures["lab.host.idle_mib_max"] = round(max(samples), 1)
        if rss:  # RSS summed over the host's processes (shared pages counted per host)
            figures["lab.host.idle_rss_mib_mean"] = round(statistics.fmean(rss), 1)
            figures["lab.host.idle_rss_mib_max"] = round(max(rss), 1)
    finally:
        start = time.monotonic()
        down(spec, say)
        figures["lab.down.10hosts_s"] = round(time.monotonic() - start, 2)

    for name, value in figures.items():
        print(f"{name} {value}")
    missed = 0
    for name, limit in TARGETS.items():
        if name in figures:
            ok = figures[name] < limit
            missed += not ok
            print(f"target {name} < {limit:g}: {'ok' if ok else 'MISS'}")
    return 1 if missed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EscapeFedError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(exc.code)
