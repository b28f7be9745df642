"""Commands that operate a deployed federation: status, smoke."""

from __future__ import annotations

from pathlib import Path

import click

from escape_fed.cli.common import emit_json, federation_argument, info, load, output_option, table
from escape_fed.errors import OperationFailed
from escape_fed.ops.smoke import smoke as run_smoke
from escape_fed.ops.status import status as pool_status


def _cache_cell(cache: dict[str, object] | None) -> str | None:
    if not cache:
        return None
    return f"{cache['host']} {'up' if cache['ok'] else 'DOWN'} {cache['detail']}".strip()


@click.command()
@federation_argument
@click.option("--no-caches", is_flag=True, help="do not ask the sites' caches")
@click.option(
    "--wait",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="wait up to SECONDS for every declared execute node to join",
)
@output_option
def status(file: Path, no_caches: bool, wait: float, output: str) -> None:
    """The federated pool seen through its collector: per site nodes, slots, cpus, memory,
    GPUs, busy slots, and jobs per access point (HTCondor's Python bindings)."""
    data = pool_status(load(file), wait=wait, progress=info, caches=not no_caches)
    if output == "json":
        emit_json(data)
        return
    pool = data["pool"]
    click.echo(
        f"pool {pool['federation']} ({pool['mode']}), collector {pool['collector']}: "
        f"{pool['nodes']} nodes, {pool['slots']} slots, {pool['schedds']} access points"
    )
    rows = [
        (
            name,
            s.get("nodes", 0),
            s.get("slots", 0),
            s.get("cpus", 0),
            s.get("memory_mb", 0),
            s.get("gpus", 0),
            s.get("busy", 0),
            s.get("jobs_running", 0),
            s.get("jobs_idle", 0),
            _cache_cell(s.get("cache")),
            ",".join(s.get("missing", [])) or None,
        )
        for name, s in data["sites"].items()
    ]
    click.echo(
        table(
            rows,
            [
                "SITE",
                "NODES",
                "SLOTS",
                "CPUS",
                "MEMORY_MB",
                "GPUS",
                "BUSY",
                "RUNNING",
                "IDLE",
                "CACHE",
                "MISSING",
            ],
        )
    )


@click.command()
@federation_argument
@click.option("--user", default="escape", show_default=True, help="local account to submit as")
@click.option("--access-point", help="submit every job from this access point")
@click.option("--site", "sites", multiple=True, help="only these sites (repeatable)")
@click.option(
    "--timeout", type=int, default=180, show_default=True, help="seconds each job may take"
)
@output_option
def smoke(
    file: Path,
    user: str,
    access_point: str | None,
    sites: tuple[str, ...],
    timeout: int,
    output: str,
) -> None:
    """Submit a short job pinned to every site and report each result; exit 1 if any fails."""
    fed = load(file)
    info(f"smoke: one job per site, submitted as {user!r} on the access points")
    results = run_smoke(
        fed, user=user, access_point=access_point, sites=list(sites) or None, timeout=timeout
    )
    if output == "json":
        emit_json([r.as_dict() for r in results])
    else:
        click.echo(
            table(
                [
                    (
                        r.site,
                        r.access_point,
                        r.job,
                        r.ran_on,
                        r.submit_to_start_s,
                        r.submit_to_done_s,
                        "ok" if r.ok else "FAILED",
                        r.message,
                    )
                    for r in results
                ],
                ["SITE", "ACCESS_POINT", "JOB", "RAN_ON", "START_S", "DONE_S", "RESULT", "MESSAGE"],
            )
        )
    failed = [r.site for r in results if not r.ok]
    if failed:
        raise OperationFailed(f"smoke failed at {', '.join(failed)}")
