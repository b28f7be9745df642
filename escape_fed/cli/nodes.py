"""``escape-fed revoke-node``: one execute node's HTCondor token revoked, a new one given."""

from __future__ import annotations

import time
from pathlib import Path

import click

from escape_fed.cli.common import emit_json, federation_option, info, load, output_option
from escape_fed.errors import BadInput
from escape_fed.ops.nodes import revoke_node as revoke


@click.command("revoke-node")
@click.argument("host")
@federation_option()
@output_option
def revoke_node(host: str, file: Path, output: str) -> None:
    """Revoke execute node HOST's HTCondor token (a lost or copied token) at its central
    manager, without touching any other node, and give HOST a new token so it stays in the pool.

    Every token of HOST's identity issued up to now is refused from the central manager's
    next authentication on (HTCondor's SEC_TOKEN_REVOCATION_EXPR); the revocation survives
    deploys. HOST is the node's name or fqdn; an unknown host exits 2.
    """
    fed = load(file)
    try:
        result = revoke(fed, host)
    except BadInput as exc:  # name the file and the argument
        raise BadInput(f"{file}: HOST {exc.message}") from None
    if output == "json":
        emit_json(result)
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(result["revoked_issued_up_to"]))
    info(
        f"{result['host']}: tokens of {result['identity']} issued up to {when} UTC are refused "
        f"by {result['central_manager']}"
    )
    if result["reissued"]:
        info(f"{result['host']}: new token installed ({result['seconds']} s)")
    else:
        info(result.get("note", f"{result['host']}: no new token"))
