"""The README's main job on the embedded lab: bring the lab federation up and show it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from escape_fed.backends.ansible import PingResult, ping
from escape_fed.lab import runtime
from escape_fed.lab.plan import lab_spec
from escape_fed.model import Federation
from escape_fed.ops.facilities import facilities
from escape_fed.render.inventory import write_inventory

Progress = Callable[[str], None]


@dataclass
class DemoResult:
    inventory: Path
    reachable: list[PingResult] = field(default_factory=list)
    lab: list[dict[str, object]] = field(default_factory=list)
    facilities: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.reachable) and all(r.ok for r in self.reachable)


def demo(fed: Federation, source: str, progress: Progress) -> DemoResult:
    """Lab up, render the inventory, reach every host with Ansible (host keys checked)."""
    spec = lab_spec(fed)
    progress(f"[1/3] lab up: {len(spec.hosts)} hosts in {len(spec.sites)} sites")
    runtime.up(spec, progress)
    inventory = spec.state_dir / "inventory"
    progress(f"[2/3] render the inventory to {inventory}")
    write_inventory(fed, inventory, source)
    progress("[3/3] reach every host with Ansible over SSH (host-key checking on)")
    result = DemoResult(inventory=inventory)
    result.reachable = ping(inventory / "hosts.yml")
    result.lab = runtime.status(spec.state_dir)
    result.facilities = facilities(fed)
    return result
