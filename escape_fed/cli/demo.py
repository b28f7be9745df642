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
    """Bring up the lab federation of FILE and show it (needs root).

    Boots every lab host, renders the Ansible inventory and reaches each host with Ansible
    over SSH, host keys checked. The lab stays up: 'escape-fed lab down' stops it.
    """
    result = run_demo(load(file), file.name, info)
    if output == "json":
        emit_json(
            {
                "ok": result.ok,
                "inventory": str(result.inventory / "hosts.yml"),
                "reachable": {r.host: r.ok for r in result.reachable},
                "lab": result.lab,
                "facilities": result.facilities,
            }
        )
    else:
        by_host = {r.host: r for r in result.reachable}
        rows = [
            (
                h["host"],
                h["site"],
                h["address"],
                h["state"],
                h["memory_mib"],
                by_host[str(h["host"])].message if str(h["host"]) in by_host else "-",
            )
            for h in result.lab
        ]
        click.echo(table(rows, ["HOST", "SITE", "ADDRESS", "STATE", "MEMORY_MIB", "ANSIBLE"]))
        click.echo("")
        fac = result.facilities["sites"]
        click.echo(
            table(
                [
                    (n, s["nodes"], s["cpus"], s["memory_mb"], s["gpus"], s["rse"], s["cache"])
                    for n, s in fac.items()
                ],
                ["SITE", "NODES", "CPUS", "MEMORY_MB", "GPUS", "RSE", "CACHE"],
            )
        )
        info(
            f"inventory: {result.inventory / 'hosts.yml'}; the lab stays up: "
            "'escape-fed lab ssh HOST' to log in, 'escape-fed lab down' to stop it"
        )
    if not result.ok:
        failed = [r.host for r in result.reachable if not r.ok] or ["(no host answered)"]
        raise OperationFailed(f"demo: not every host was reachable: {', '.join(failed)}")
