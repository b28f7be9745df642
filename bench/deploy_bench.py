"""Deploy benchmark on a fresh copy of the lab federation (root).

One run, from the cached lab image, prints as `name value` lines, each next to its target:
  deploy.first_s        first deploy on freshly booted lab hosts, with no control-machine state
                        or secrets left from an earlier run; target <= 150 s (half of the 317 s
                        measured before issue 10)
  deploy.noop_full_s    a second deploy with --full: every file, directory, account and service
                        the roles manage checked on every host against the first deploy's
                        record, then the health play (a converge would follow any difference);
                        0 changed, target <= 40 % of the first
  deploy.converge_s     a deploy with --converge (every role runs again, whatever the checks
                        say): the idempotence proof, 0 changed; shown next to the first
  deploy.noop_s         a third, plain deploy (nothing changed: health check only); 0 changed,
                        target < 25 % of the first
  submit.start_s.*      submit -> start latency of jobs submitted at site-a's access point,
                        pinned to site-b (across the WAN link) and to site-a; target < 10 s
                        (--jobs 0 skips it)
Exits 1 when a deploy fails, or when a deploy after the first changes anything (idempotence).
The machine's load average is printed first: other labs deploying at the same time slow every
figure down, so compare runs made under the same load, and the changed-task counts.
Usage: python bench/deploy_bench.py [--mode global-pool|flock] [--jobs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.labfed import cli, lab_copy  # noqa: E402

FIRST_TARGET_S = 150.0  # half of the 317 s first deploy measured before issue 10
FULL_TARGET = 0.40  # deploy --full with nothing to change, as a share of the first
NOOP_TARGET = 0.25  # plain deploy with nothing changed (health check only)

SOURCES = {
    "global-pool": (ROOT / "inventories/lab/federation.yaml", "10.90.0.0/16"),
    "flock": (ROOT / "inventories/lab/federation-flock.yaml", "10.91.0.0/16"),
}


def _deploy(path: Path, *flags: str) -> tuple[float, int, bool]:
    """Seconds, changed tasks, and whether every host was verified against the record."""
    t0 = time.perf_counter()
    proc = cli("deploy", str(path), *flags, "-o", "json")
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"deploy failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout)
    return seconds, int(out["changed"]), bool(out.get("verified"))


def _forget_control_state(path: Path) -> None:
    """A first deploy starts from nothing on the control machine too: no state, no secrets."""
    data = yaml.safe_load(path.read_text())
    for key in (data["control"]["state_dir"], data["security"]["secrets_dir"]):
        shutil.rmtree(key, ignore_errors=True)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=list(SOURCES), default="global-pool")
    parser.add_argument("--jobs", type=int, default=3, help="jobs per target site (0: none)")
    args = parser.parse_args()
    source, supernet = SOURCES[args.mode]
    path = lab_copy(source, "bench-deploy", "efd", supernet, Path(tempfile.mkdtemp()))
    cli("lab", "down", str(path))
    _forget_control_state(path)
    idempotent = True
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"deploy.loadavg {load}  (1, 5, 15 min, before lab up: other labs slow it down)")
        t0 = time.perf_counter()
        up = cli("lab", "up", str(path))
        if up.returncode != 0:
            sys.exit(f"lab up failed: {up.stderr}")
        print(f"deploy.lab_up_s {time.perf_counter() - t0:.1f}")
        first, changed, _ = _deploy(path)
        print(
            f"deploy.first_s {first:.1f}  ({changed} tasks changed, mode {args.mode}; "
            f"target <= {FIRST_TARGET_S:.0f}: {_verdict(first <= FIRST_TARGET_S)})"
        )
        full, changed_full, verified = _deploy(path, "--full")
        idempotent &= changed_full == 0 and verified
        print(
            f"deploy.noop_full_s {full:.1f}  ({changed_full} changed, target 0: "
            f"{_verdict(changed_full == 0)}; every host verified against the record: "
            f"{_verdict(verified)}; {full / first:.0%} of the first: target <= "
            f"{FULL_TARGET:.0%}: {_verdict(full <= FULL_TARGET * first)})"
        )
        conv, changed_conv, _ = _deploy(path, "--converge")
        idempotent &= changed_conv == 0
        print(
            f"deploy.converge_s {conv:.1f}  ({changed_conv} changed, target 0: "
            f"{_verdict(changed_conv == 0)}; every role run again: {conv / first:.0%} of the "
            "first)"
        )
        noop, changed_again, _ = _deploy(path)
        idempotent &= changed_again == 0
        print(
            f"deploy.noop_s {noop:.1f}  ({changed_again} changed, target 0: "
            f"{_verdict(changed_again == 0)}; health check only: {noop / first:.0%} of the "
            f"first: target < {NOOP_TARGET:.0%}: {_verdict(noop < NOOP_TARGET * first)})"
        )
        if args.jobs > 0 and cli("status", str(path), "--wait", "120").returncode != 0:
            sys.exit("the pool did not come up")
        for site in ("site-b", "site-a") if args.jobs > 0 else ():
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
                f"target < 10: {_verdict(med < 10)})"
            )
    finally:
        cli("lab", "down", str(path))
    if not idempotent:
        sys.exit("not idempotent: a deploy with nothing to change changed tasks")


if __name__ == "__main__":
    main()
