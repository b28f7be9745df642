"""``escape-fed submit``: run a job on a dataset with the capacity asked for."""

from __future__ import annotations

from pathlib import Path

import click

from escape_fed.cli.common import info, load
from escape_fed.ops.submit import JobRequest, plan_job
from escape_fed.ops.submit import submit as submit_job


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataset", help="run where this dataset is, reading it through the local cache")
@click.option("--cpus", type=click.IntRange(1), default=1, show_default=True)
@click.option(
    "--memory", "memory_mb", type=click.IntRange(1), default=512, show_default=True, help="MB"
)
@click.option("--gpus", type=click.IntRange(0), default=0, show_default=True)
@click.option("--site", help="run at this site only")
@click.option("--every", metavar="CRON", help="repeat on a schedule, e.g. '*/10 * * * *'")
@click.option("--max-runs", type=click.IntRange(1), help="with --every: stop after N runs")
@click.option("--user", default="escape", show_default=True, help="account on the access point")
@click.option("--access-point", help="submit at this access point (default: one at the site)")
@click.option("--dry-run", is_flag=True, help="print the submit description, submit nothing")
@click.argument("command", nargs=-1, required=True)
def submit(
    file: Path,
    dataset: str | None,
    cpus: int,
    memory_mb: int,
    gpus: int,
    site: str | None,
    every: str | None,
    max_runs: int | None,
    user: str,
    access_point: str | None,
    dry_run: bool,
    command: tuple[str, ...],
) -> None:
    """Submit COMMAND (after --) as a job of FILE's federation: where DATASET is, with the
    capacity asked, reading through the local cache ($ESCAPE_CACHE/$ESCAPE_DATASET_PATH).

    \b
    escape-fed submit FED.yaml --dataset collisions-2026 --cpus 2 -- /usr/bin/env
    escape-fed submit FED.yaml --gpus 1 --dry-run -- ./train.sh   # refused: no site has GPUs
    escape-fed submit FED.yaml --every '*/30 * * * *' -- ./ingest.sh

    Prints the job id (CLUSTER.PROC) on stdout.
    """
    fed = load(file)
    req = JobRequest(
        executable=command[0],
        arguments=list(command[1:]),
        dataset=dataset,
        cpus=cpus,
        memory_mb=memory_mb,
        gpus=gpus,
        site=site,
        every=every,
        max_runs=max_runs,
    )
    if dry_run:
        plan = plan_job(fed, req)
        info(f"would run at: {', '.join(plan.sites)}")
        click.echo(plan.description, nl=False)
        return
    job, plan = submit_job(fed, req, user, access_point)
    info(f"submitted {job}: may run at {', '.join(plan.sites)}")
    click.echo(job)
