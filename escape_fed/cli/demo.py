"""``escape-fed demo``: the main job on the embedded lab federation."""

from __future__ import annotations

from pathlib import Path

import click

from escape_fed.cli.common import emit_json, federation_argument, info, load, output_option, table
from escape_fed.errors import OperationFailed
from escape_fed.ops.demo import demo as run_demo


@click.command()
@federation_argument
@output_option
def demo(file: Path, output: str) -> None:
    """Bring up the lab federation of FILE, deploy it and prove it works (needs root).

    Boots every lab host, reaches each with Ansible (host keys checked), deploys the HTCondor
    federation, waits for every execute node to join, runs a smoke job pinned to every site and
    shows the pool. The lab stays up: 'escape-fed lab down' stops it.
    """
    result = run_demo(load(file), file.name, info)
    pb = result.deployed.playbook if result.deployed else None
    if output == "json":
        emit_json(
            {
                "ok": result.ok,
                "reachable": {r.host: r.ok for r in result.reachable},
                "deploy": {
                    "ok": pb.ok,
                    "seconds": round(pb.seconds, 1),
                    "changed": pb.changed,
                    "hosts": {h: s.__dict__ for h, s in sorted(pb.hosts.items())},
                }
                if pb
                else None,
                "status": result.status,
                "smoke": [s.as_dict() for s in result.smoke],
                "lab": result.lab,
            }
        )
    else:
        if result.status:
            pool = result.status["pool"]
            click.echo(
                f"pool {pool['federation']} ({pool['mode']}): {pool['nodes']} execute "
                f"nodes, {pool['slots']} slots, {pool['schedds']} access points"
            )
            click.echo(
                table(
                    [
                        (
                            n,
                            s.get("nodes", 0),
                            s.get("cpus", 0),
                            s.get("memory_mb", 0),
                            s.get("gpus", 0),
                        )
                        for n, s in result.status["sites"].items()
                    ],
                    ["SITE", "NODES", "CPUS", "MEMORY_MB", "GPUS"],
                )
            )
            click.echo("")
        if result.smoke:
            click.echo(
                table(
                    [
                        (
                            s.site,
                            s.access_point,
                            s.ran_on,
                            s.submit_to_start_s,
                            "ok" if s.ok else "FAILED",
                            s.message,
                        )
                        for s in result.smoke
                    ],
                    ["SITE", "SUBMITTED_AT", "RAN_ON", "START_S", "SMOKE", "MESSAGE"],
                )
            )
        info(
            "the lab stays up: 'escape-fed lab ssh ap-a' to log in and submit, "
            "'escape-fed status' to watch, 'escape-fed lab down' to stop it"
        )
    if not result.ok:
        if result.reachable and not all(r.ok for r in result.reachable):
            bad = [r.host for r in result.reachable if not r.ok]
            raise OperationFailed(f"demo: hosts not reachable: {', '.join(bad)}")
        if pb is not None and not pb.ok:
            raise OperationFailed(f"demo: deploy failed; log: {pb.log}")
        raise OperationFailed(
            "demo: the smoke test failed at " + ", ".join(s.site for s in result.smoke if not s.ok)
        )
