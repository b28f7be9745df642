"""Isolated copies of the lab federations for the slow tier.

A copy keeps the hosts, sites and roles of the original and moves every piece of state aside:
its own lab state dir, kernel-object prefix and supernet, its own control state and secrets
dirs. Tests can then run beside a developer's lab (or each other) without touching it. The lab
image is shared (a symlink to the default lab's image cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
IMAGES = Path("/var/lib/escape-fed/lab/images")


def lab_copy(source: Path, tag: str, prefix: str, supernet: str, out_dir: Path) -> Path:
    """Write a copy of ``source`` whose state all lives under /var/lib/escape-fed/test-TAG."""
    data: dict[str, Any] = yaml.safe_load(source.read_text())
    base = Path(f"/var/lib/escape-fed/test-{tag}")
    data.setdefault("lab", {}).update(
        {"state_dir": str(base / "lab"), "prefix": prefix, "supernet": supernet}
    )
    data["control"] = {"state_dir": str(base / "state")}
    data["security"] = {**data.get("security", {}), "secrets_dir": str(base / "secrets")}
    (base / "lab").mkdir(parents=True, exist_ok=True)
    images = base / "lab" / "images"
    IMAGES.mkdir(parents=True, exist_ok=True)  # on a fresh machine the first lab builds it here
    if not images.is_symlink() and not images.exists():
        images.symlink_to(IMAGES)  # share the default lab's cached image
    path = out_dir / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(
    *args: str,
    home: Path | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run ``escape-fed ARGS`` as a user would (a fresh process, stdout and stderr apart)."""
    env = {**os.environ, **({"HOME": str(home)} if home else {})}
    return subprocess.run(
        [sys.executable, "-m", "escape_fed", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
