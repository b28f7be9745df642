"""The README's main job on the embedded lab: the lab federation up, deployed, tested, shown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from escape_fed.backends.ansible import PingResult, ping
from escape_fed.lab import runtime
from escape_fed.lab.plan import lab_spec
from escape_fed.model import Federation
from escape_fed.ops.deploy import DeployResult, deploy, prepare
from escape_fed.ops.smoke import SmokeResult, smoke
from escape_fed.ops.status import status

Progress = Callable[[str], None]


@dataclass
class DemoResult:
    reachable: list[PingResult] = field(default_factory=list)
    deployed: DeployResult | None = None
    status: dict[str, Any] = field(default_factory=dict)
    smoke: list[SmokeResult] = field(default_factory=list)
    lab: list[dict[str, object]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            bool(self.reachable)
            and all(r.ok for r in self.reachable)
            and self.deployed is not None
            and self.deployed.playbook.ok
            and bool(self.smoke)
            and all(s.ok for s in self.smoke)
        )


def demo(fed: Federation, source: str, progress: Progress) -> DemoResult:
    """Lab up, reach every host, deploy, wait for the pool, a smoke job at every site.

    Stops at the first step that fails; the result says how far it got.
    """
    result = DemoResult()
    spec = lab_spec(fed)
    progress(f"[1/5] lab up: {len(spec.hosts)} hosts in {len(spec.sites)} sites")
    runtime.up(spec, progress)
    result.lab = runtime.status(spec.state_dir)
    progress("[2/5] reach every host with Ansible over SSH (host-key checking on)")
    inventory = prepare(fed, source)
    result.reachable = ping(inventory / "hosts.yml")
    if not all(r.ok for r in result.reachable):
        return result
    progress("[3/5] deploy the federation (HTCondor pool(s), tokens, slots)")
    result.deployed = deploy(fed, source, progress)
    if not result.deployed.playbook.ok:
        return result
    progress("[4/5] wait for every execute node to join the pool")
    result.status = status(fed, wait=120, progress=progress)
    progress("[5/5] smoke: one job pinned to every site")
    result.smoke = smoke(fed)
    result.lab = runtime.status(spec.state_dir)
    return result
