"""``escape-fed token``: fetch a token for an IAM group from the federation's issuer (lab, dev)."""

from __future__ import annotations

from pathlib import Path

import click

from escape_fed.cli.common import emit_json, federation_option, load, output_option
from escape_fed.ops.tokens import fetch_token


@click.command()
@click.argument("out", metavar="FILE", type=click.Path(path_type=Path))
@federation_option("federation")
@click.option("--group", "-g", required=True, help="IAM group, e.g. /escape/astro")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="SCOPE",
    help="ask for this scope only (repeatable; default: every scope the group is granted)",
)
@click.option("--audience", help="ask for this audience (default: the federation's, iam.audience)")
@click.option(
    "--force", is_flag=True, help="replace FILE even if it is not a token file escape-fed wrote"
)
@output_option
def token(
    out: Path,
    federation: Path,
    group: str,
    scopes: tuple[str, ...],
    audience: str | None,
    force: bool,
    output: str,
) -> None:
    """Fetch an access token for GROUP from the federation's issuer and write it to FILE
    (mode 0600). The token itself is never printed: only a summary (group, scopes, expiry).
    An existing FILE is replaced only if it is a token file escape-fed wrote (one JWT line,
    mode 0600), or with --force: anything else (a federation file given by habit) is refused.

    Uses the group's lab client, whose secret the lab issuer's deployment made on this
    machine; with a real INDIGO IAM, get tokens from IAM instead (e.g. oidc-agent).

    \b
    escape-fed token /tmp/astro.tok --group /escape/astro
    escape-fed token /tmp/t -f FED.yaml -g /escape/hep --scope storage.read:/escape/hep/embargoed
    """
    fed = load(federation)
    summary = fetch_token(fed, group, out, scopes, audience, force)
    if output == "json":
        emit_json(summary.as_dict())
        return
    click.echo(f"token for {summary.group} (client {summary.client_id}) written to {summary.file}")
    click.echo(f"issuer:   {summary.issuer}")
    click.echo(f"audience: {summary.audience}")
    click.echo(f"expires:  {summary.expires_at} (in {summary.expires_in} s)")
    click.echo(f"scopes:   {' '.join(summary.scopes)}")
