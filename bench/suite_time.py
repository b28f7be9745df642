"""The test suite's time, tier by tier, next to its budget.

`make test` runs pytest with ESCAPE_FED_SUITE_TIME=build/suite-time.json: tests/conftest.py
adds up each test's setup, call and teardown time per tier (a setup over 60 s is a lab being
deployed, shown apart). This script prints that file as a table and the whole run against the
budget: `make test` under 60 minutes on a 2-core machine.

Usage: python bench/suite_time.py [build/suite-time.json] [--wall SECONDS]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BUDGET_S = 3600.0
ORDER = ["unit", "static", "install", "runtime", "roles", "e2e", "tokens"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default="build/suite-time.json", type=Path)
    parser.add_argument("--wall", type=float, help="the whole `make test` run, seconds")
    args = parser.parse_args()
    if not args.file.exists():
        print(f"{args.file}: no suite times yet: run `make test` first", file=sys.stderr)
        return 2
    data: dict[str, dict[str, float]] = json.loads(args.file.read_text())
    tiers = sorted(data, key=lambda t: (ORDER.index(t) if t in ORDER else len(ORDER), t))
    print(f"{'tier':<8} {'tests':>5} {'failed':>6} {'lab setup':>10} {'tests s':>8} {'total s':>8}")
    total = 0.0
    for name in tiers:
        row = data[name]
        setup = row.get("lab setup", 0.0)
        rest = sum(row.get(k, 0.0) for k in ("setup", "call", "teardown"))
        total += setup + rest
        print(
            f"{name:<8} {int(row.get('tests', 0)):>5} {int(row.get('failed', 0)):>6} "
            f"{setup:>10.0f} {rest:>8.0f} {setup + rest:>8.0f}"
        )
    print(f"suite_pytest_s {total:.0f}  (pytest's own time, every tier)")
    if args.wall is not None:
        verdict = "ok" if args.wall <= BUDGET_S else "OVER BUDGET"
        print(f"suite_wall_s {args.wall:.0f}  target <= {BUDGET_S:.0f}  {verdict}")
    else:
        verdict = "ok" if total <= BUDGET_S else "OVER BUDGET"
        print(f"suite_budget_s {BUDGET_S:.0f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
