"""deploy: hosts first (the lab; clouds later), then the roles, then record what was applied.

Preflight happens before anything changes: the site filter, backends that cannot be deployed
yet, the playbook. A failed run records nothing, so ``plan`` keeps showing what is left to do.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from escape_fed.backends.ansible import PLAYBOOKS, PlaybookResult, Progress, run_playbook
from escape_fed.errors import BadInput, NotBuiltYet, OperationFailed
from escape_fed.lab import runtime
from escape_fed.lab.plan import lab_spec
from escape_fed.model.schema import CLOUD_BACKENDS, Backend, Federation
from escape_fed.model.view import group_name
from escape_fed.ops.plan import desired, load_snapshot, write_snapshot
from escape_fed.render.inventory import write_inventory

PLAYBOOK = "site.yml"


@dataclass
class DeployResult:
    playbook: PlaybookResult
    inventory: Path
    snapshot: Path | None  # None: nothing recorded (check mode or failure)
    check: bool


def state_dir(fed: Federation) -> Path:
    """Per-federation state on the control machine: inventory, snapshot, logs."""
    return Path(fed.control.state_dir) / fed.federation.name


def secrets_dir(fed: Federation) -> Path:
    return Path(fed.security.secrets_dir) / fed.federation.name


def prepare(fed: Federation, source: str) -> Path:
    """Render the inventory and make the secrets directory (0700); return the inventory."""
    inventory = state_dir(fed) / "inventory"
    write_inventory(fed, inventory, source)
    secrets = secrets_dir(fed)
    secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(secrets, 0o700)
    return inventory


def deploy(
    fed: Federation,
    source: str,
    progress: Progress,
    site: str | None = None,
    check: bool = False,
    verbose: bool = False,
) -> DeployResult:
    """Provision the hosts of FED (or of one site) and apply the roles."""
    if site is not None and site not in fed.sites:
        raise BadInput(f"--site {site}: no such site: expected one of {', '.join(fed.sites)}")
    scope = [site] if site else list(fed.sites)
    cloud = [s for s in scope if fed.sites[s].backend in CLOUD_BACKENDS]
    if cloud:
        raise NotBuiltYet(
            f"sites {', '.join(cloud)} use cloud or kubernetes backends, which cannot be "
            "deployed yet: deploy the other sites with --site"
        )
    if not (PLAYBOOKS / PLAYBOOK).exists():
        raise OperationFailed(f"{PLAYBOOKS / PLAYBOOK} is missing: the checkout is incomplete")
    if any(fed.sites[s].backend is Backend.LAB for s in scope):
        spec = lab_spec(fed)
        if check:
            down = [h["host"] for h in runtime.status(spec.state_dir) if h["state"] != "running"]
            if down or runtime.load_state(spec.state_dir) is None:
                raise OperationFailed(
                    "check mode needs the lab hosts up: run 'escape-fed lab up FILE' first"
                )
        else:
            progress(f"hosts: lab up ({len(spec.hosts)} hosts)")
            runtime.up(spec, progress)
    inventory = prepare(fed, source)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log = state_dir(fed) / "logs" / f"deploy-{stamp}.log"
    progress(
        f"configure: ansible-playbook {PLAYBOOK}{' --check' if check else ''}"
        f"{f' --limit {group_name(site)}' if site else ''} (log: {log})"
    )
    result = run_playbook(
        inventory / "hosts.yml",
        PLAYBOOK,
        progress,
        limit=group_name(site) if site else None,
        check=check,
        log=log,
        verbose=verbose,
    )
    snapshot = None
    if result.ok and not check:
        snapshot = Path(fed.snapshot_path())
        applied = load_snapshot(snapshot)
        want = desired(fed)
        if site:
            applied = {h: e for h, e in applied.items() if e.get("site") != site}
            applied.update({h: e for h, e in want.items() if e["site"] == site})
        else:
            applied = want
        write_snapshot(fed.federation.name, applied, snapshot)
    return DeployResult(result, inventory, snapshot, check)
