"""``escape-fed deploy``: provision and configure a federation (or one site)."""

from __future__ import annotations

from pathlib import Path

import click

from escape_fed.cli.common import (
    emit_json,
    federation_argument,
    info,
    load,
    output_option,
    settings,
    table,
)
from escape_fed.errors import OperationFailed
from escape_fed.ops.deploy import deploy as run_deploy


@click.command()
@federation_argument
@click.option("--site", help="deploy only this site (its hosts and what they need)")
@click.option("--check", is_flag=True, help="Ansible check mode: report what would change")
@click.option(
    "--full",
    is_flag=True,
    help="when nothing changed since the last deploy, also check every file, directory, "
    "account and service the roles manage on every host; run every role if any differs",
)
@click.option(
    "--converge",
    is_flag=True,
    help="run every role on every host, whatever the checks would say",
)
@output_option
def deploy(
    file: Path, site: str | None, check: bool, full: bool, converge: bool, output: str
) -> None:
    """Provision the hosts of FILE and configure them with the roles; exit 1 on failure.

    Lab sites are booted first (a no-op when up). A successful run records what was applied,
    so 'escape-fed plan' shows the difference next time.
    """
    fed = load(file)
    result = run_deploy(
        fed,
        file.name,
        info,
        site=site,
        check=check,
        verbose=settings().verbose > 0,
        full=full,
        converge=converge,
    )
    verified = result.verified
    pb = result.playbook
    if output == "json":
        emit_json(
            {
                "ok": pb.ok,
                "check": check,
                "skipped": result.skipped,
                "verified": verified is not None and verified.clean,
                "drift": verified.drift if verified is not None else {},
                "seconds": round(pb.seconds, 1),
                "changed": pb.changed,
                "hosts": {h: s.__dict__ for h, s in sorted(pb.hosts.items())},
                "errors": pb.errors,
                "log": str(pb.log),
                "inventory": str(result.inventory),
            }
        )
    else:
        rows = [
            (h, s.ok, s.changed, s.failures, s.unreachable) for h, s in sorted(pb.hosts.items())
        ]
        click.echo(table(rows, ["HOST", "OK", "CHANGED", "FAILED", "UNREACHABLE"]))
        verb = "would change" if check else "changed"
        if result.skipped and verified is not None:
            what = (
                "nothing changed since the last deploy, every host is as the last converge "
                "left it and healthy: roles skipped (--converge runs them)"
            )
        elif result.skipped:
            what = (
                "nothing changed since the last deploy and every host is healthy: roles "
                "skipped (--full also checks every managed file; --converge runs every role)"
            )
        else:
            what = f"{pb.changed} tasks {verb}"
        info(
            f"deploy {'(check) ' if check else ''}{'ok' if pb.ok else 'FAILED'}: "
            f"{len(pb.hosts)} hosts, {what}, {pb.seconds:.1f} s; log: {pb.log}"
        )
    if not pb.ok:
        failed = sorted({str(e["host"]) for e in pb.errors}) or ["(see the log)"]
        raise OperationFailed(f"deploy failed on {', '.join(failed)}; log: {pb.log}")
