"""Commands over the model alone: validate, render, plan, facilities."""

from __future__ import annotations

from pathlib import Path

import click

from escape_fed.cli.common import emit_json, federation_argument, info, load, output_option, table
from escape_fed.ops.facilities import facilities as facilities_of
from escape_fed.ops.plan import load_snapshot
from escape_fed.ops.plan import plan as plan_of
from escape_fed.render.inventory import write_inventory


@click.command()
@federation_argument
@output_option
def validate(file: Path, output: str) -> None:
    """Check a federation file; print every problem (exit 2) or a summary (exit 0)."""
    fed = load(file)
    summary = {
        "file": str(file),
        "valid": True,
        "federation": fed.federation.name,
        "mode": fed.federation.mode.value,
        "sites": len(fed.sites),
        "hosts": sum(len(s.hosts) for s in fed.sites.values()),
    }
    if output == "json":
        emit_json(summary)
    else:
        click.echo(
            f"{file}: valid: federation {fed.federation.name!r}, mode "
            f"{summary['mode']}, {summary['sites']} sites, {summary['hosts']} hosts"
        )


@click.command()
@federation_argument
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="inventory directory to write (replaced atomically)",
)
def render(file: Path, out: Path) -> None:
    """Write the Ansible inventory (hosts.yml, group_vars/, host_vars/) for FILE."""
    fed = load(file)
    files = write_inventory(fed, out, source=file.name)
    info(f"wrote {len(files)} files to {out}")
    click.echo(str(out / "hosts.yml"))


@click.command()
@federation_argument
@click.option("--site", help="only this site")
@click.option(
    "--snapshot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="compare with this deploy snapshot (default: the federation's own)",
)
@output_option
def plan(file: Path, site: str | None, snapshot: Path | None, output: str) -> None:
    """Show per site and host what a deploy would create, change or remove."""
    fed = load(file)
    snap = snapshot or Path(fed.snapshot_path())
    result = plan_of(fed, load_snapshot(snap), site)
    if output == "json":
        emit_json(result.as_dict())
        return
    marks = {"create": "+", "change": "~", "keep": "=", "remove": "-"}
    current = None
    for a in result.actions:
        if a.site != current:
            current = a.site
            click.echo(f"site {a.site}")
        changed = f"  [changes: {', '.join(a.changed)}]" if a.changed else ""
        click.echo(f"  {marks[a.action]} {a.host:<12} {a.component:<26} {a.summary}{changed}")
    c = result.counts()
    click.echo(
        f"plan: {c['create']} to create, {c['change']} to change, {c['remove']} to "
        f"remove, {c['keep']} unchanged (compared with {snap})"
    )


@click.command()
@federation_argument
@output_option
def facilities(file: Path, output: str) -> None:
    """What each site offers: cores, memory, GPUs, storage, cache, datasets, access points."""
    data = facilities_of(load(file))
    if output == "json":
        emit_json(data)
        return
    rows = [
        (
            name,
            s["backend"],
            s["nodes"],
            s["cpus"],
            s["memory_mb"],
            s["gpus"],
            s["rse"],
            s["cache"],
            ",".join(s["datasets"]) or None,
        )
        for name, s in data["sites"].items()
    ]
    click.echo(
        table(
            rows,
            ["SITE", "BACKEND", "NODES", "CPUS", "MEMORY_MB", "GPUS", "RSE", "CACHE", "DATASETS"],
        )
    )
