"""Render benchmark: a federation of 500 sites x 20 hosts, validated and rendered.

Prints figures as `name value` lines; target: validate + render under 3 s on a 2-core machine.
Usage: python bench/render_bench.py [--sites 500] [--hosts 20]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from escape_fed.model import parse_federation
from escape_fed.render.inventory import inventory_files, write_inventory


def big_federation(n_sites: int, n_hosts: int) -> dict[str, Any]:
    """A valid federation dict: a central site plus n_sites sites of n_hosts ssh hosts."""
    sites: dict[str, Any] = {
        "central": {
            "backend": "ssh",
            "hosts": {
                "cm": {"address": "10.0.0.1", "roles": ["central_manager"]},
                "gw": {"address": "10.0.0.2", "roles": ["ingress", "monitoring"]},
            },
        },
    }
    for s in range(n_sites):
        hosts: dict[str, Any] = {
            f"s{s}-ap": {"address": f"10.{s // 250 + 1}.{s % 250}.1", "roles": ["access_point"]},
            f"s{s}-xc": {"address": f"10.{s // 250 + 1}.{s % 250}.2", "roles": ["cache"]},
        }
        for h in range(n_hosts - 2):
            hosts[f"s{s}-wn{h}"] = {
                "address": f"10.{s // 250 + 1}.{s % 250}.{h + 10}",
                "roles": ["execute"],
                "capacity": {"cpus": 8, "memory_mb": 16384, "gpus": h % 2},
            }
        sites[f"site-{s}"] = {
            "backend": "ssh",
            "storage": {
                "rse": f"SITE-{s}_DISK",
                "origin": f"root://se.site-{s}.example.org:1094",
                "paths": ["/escape"],
            },
            "cache": {"disk_gb": 100},
            "hosts": hosts,
        }
    return {
        "federation": {"name": "bench", "trust_domain": "bench.example.org"},
        "iam": {"issuer": "https://iam.example.org/", "audience": "https://bench.example.org"},
        "sites": sites,
        "datasets": {
            f"ds-{i}": {"rses": [f"SITE-{i}_DISK"], "path": f"/escape/ds{i}"}
            for i in range(0, n_sites, 10)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--hosts", type=int, default=20)
    args = parser.parse_args()
    data = big_federation(args.sites, args.hosts)
    n = args.sites * args.hosts + 2
    t0 = time.perf_counter()
    fed = parse_federation(data, "bench")
    t1 = time.perf_counter()
    files = inventory_files(fed, "bench.yaml")
    t2 = time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix="escape-fed-bench-")) / "inv"
    try:
        write_inventory(fed, out, "bench.yaml")
        t3 = time.perf_counter()
    finally:
        shutil.rmtree(out.parent)
    in_memory = t2 - t0
    print(f"render.hosts {n}")
    print(f"render.files {len(files)}")
    print(f"render.validate_s {t1 - t0:.2f}")
    print(f"render.render_s {t2 - t1:.2f}")
    print(
        f"render.validate_and_render_s {in_memory:.2f}  (target < 3.00: "
        f"{'met' if in_memory < 3 else 'MISSED'})"
    )
    print(f"render.write_atomic_s {t3 - t2:.2f}  (render again + write every file + swap)")
    # The disk's own cost of creating that many small files, for comparison.
    base = Path(tempfile.mkdtemp(prefix="escape-fed-bench-"))
    try:
        t4 = time.perf_counter()
        for i, text in enumerate(files.values()):
            (base / f"f{i}").write_text(text, encoding="utf-8")
        t5 = time.perf_counter()
    finally:
        shutil.rmtree(base)
    print(f"render.disk_baseline_s {t5 - t4:.2f}  (plain writes of the same files: the floor)")


if __name__ == "__main__":
    main()
