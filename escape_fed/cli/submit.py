"""``escape-fed submit``: run a job on a dataset with the capacity asked for."""

from __future__ import annotations

from pathlib import Path

import click

from escape_fed.cli.common import emit_json, info, load, output_option
from escape_fed.errors import BadInput, OperationFailed
from escape_fed.ops.submit import (
    JobRequest,
    TokenJob,
    check_token_file,
    plan_job,
    submit_with_token,
)
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
@click.option(
    "--user", help="submit as this local account of the access point, over SSH [default: escape]"
)
@click.option(
    "--token",
    type=click.Path(dir_okay=False, path_type=Path),
    help="submit with this IAM token (a file, mode 0600) over the network; the job runs as the "
    "account of the token's group",
)
@click.option("--access-point", help="submit at this access point (default: one at the site)")
@click.option(
    "--outdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("escape-fed-jobs"),
    show_default=True,
    help="with --token: the job's output, error and log files go here",
)
@click.option("--wait", is_flag=True, help="with --token: wait for the job to end, show its result")
@click.option(
    "--timeout",
    type=click.IntRange(1),
    default=600,
    show_default=True,
    help="with --wait: give up after this many seconds",
)
@click.option("--dry-run", is_flag=True, help="print the submit description, submit nothing")
@output_option
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
    user: str | None,
    token: Path | None,
    access_point: str | None,
    outdir: Path,
    wait: bool,
    timeout: int,
    dry_run: bool,
    output: str,
    command: tuple[str, ...],
) -> None:
    """Submit COMMAND (after --) as a job of FILE's federation: where DATASET is, with the
    capacity asked, reading through the local cache ($ESCAPE_CACHE/$ESCAPE_DATASET_PATH).

    \b
    escape-fed submit FED.yaml --dataset collisions-2026 --cpus 2 -- /usr/bin/env
    escape-fed submit FED.yaml --gpus 1 --dry-run -- ./train.sh   # refused: no site has GPUs
    escape-fed submit FED.yaml --every '*/30 * * * *' -- ./ingest.sh
    escape-fed submit FED.yaml --token astro.tok --wait -- /usr/bin/id -un

    Without --token the job is submitted over SSH as --user, a local account of the access
    point. With --token it goes over the network from here to the access point's schedd,
    authenticated by the token (SCITOKENS); the access point maps it to the account of the
    token's IAM group. An absolute COMMAND is then a program of the execute nodes, a relative
    one a file here, sent with the job. The job never gets the token: it gets its own, which
    the issuer exchanges for it (RFC 8693), read-only (storage.read on DATASET's path, or the
    token's storage.read scopes without --dataset), unable to submit, short-lived
    (BEARER_TOKEN_FILE in the job's environment, for reading through the caches). With --wait
    the job's output, error and log
    land in --outdir; without it they wait on the access point (HTCondor keeps a spooled job's
    files for 10 days).

    Prints the job id (CLUSTER.PROC) on stdout; with --wait, the job's result.
    """
    if token is not None and user is not None:
        raise BadInput(
            "--user and --token: give one (with a token the access point picks the account)"
        )
    if token is None and (wait or output == "json"):
        raise BadInput("--wait and --output json: only with --token")
    if token is not None:
        check_token_file(token)  # before anything else: a bad token file changes nothing
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
    if token is None:
        job, plan = submit_job(fed, req, user or "escape", access_point)
        info(f"submitted {job}: may run at {', '.join(plan.sites)}")
        click.echo(job)
        return
    result = submit_with_token(
        fed, req, token, access_point, outdir, float(timeout) if wait else None
    )
    info(
        f"submitted {result.job} at {result.access_point} as {result.owner} "
        f"(accounting group {result.accounting_group}): may run at {', '.join(result.sites)}"
    )
    if output == "json":
        emit_json(result.as_dict())
    elif not wait:
        click.echo(result.job)
    else:
        _show(result)
    if wait and not result.ok:
        raise OperationFailed(_failure(result, timeout))


def _show(r: TokenJob) -> None:
    click.echo(f"job:      {r.job} ({r.status})")
    click.echo(f"owner:    {r.owner} (accounting group {r.accounting_group})")
    click.echo(f"token:    job's own, {r.job_token_scope}")
    if r.finished:
        click.echo(f"ran on:   {r.ran_on}, exit code {r.exit_code}")
        click.echo(
            f"timing:   start {r.submit_to_start_s} s, done {r.submit_to_done_s} s after submit"
        )
        click.echo(f"output:   {r.outdir}")
        if r.stdout:
            click.echo(r.stdout, nl=not r.stdout.endswith("\n"))


def _failure(r: TokenJob, timeout: int) -> str:
    if r.hold_reason:
        return f"job {r.job} is held: {r.hold_reason}"
    if not r.finished:
        return f"job {r.job} did not finish within {timeout} s (still {r.status})"
    return f"job {r.job} ended with exit code {r.exit_code}"
