"""``escape-fed keys``: the lab token issuer's signing keys, rotated across the federation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from escape_fed.cli.common import (
    emit_json,
    federation_argument,
    federation_option,
    info,
    load,
    output_option,
    table,
)
from escape_fed.ops import keys as ops


def _show(keys: list[dict[str, Any]]) -> None:
    rows = [
        (k["kid"], k["alg"], k["state"], time.strftime("%Y-%m-%d %H:%M", time.gmtime(k["created"])))
        for k in keys
    ]
    click.echo(table(rows, ["kid", "alg", "state", "created (UTC)"]))


@click.group()
def keys() -> None:
    """The lab token issuer's signing keys: list, rotate, retire (no restart anywhere)."""


@keys.command("list")
@federation_argument
@output_option
def list_(file: Path, output: str) -> None:
    """The issuer's keys: which one signs, which are only published."""
    found = ops.list_keys(load(file))
    if output == "json":
        emit_json(found)
    else:
        _show(found)


@keys.command()
@federation_argument
@output_option
def rotate(file: Path, output: str) -> None:
    """Publish a new key, make every relying party fetch it, then sign with it.

    The previous key stays published, so tokens it signed work until they expire; retire it
    afterwards with `escape-fed keys retire KID`."""
    result = ops.rotate(load(file), str(file), info)
    if output == "json":
        emit_json(result)
        return
    info(f"rotated in {result['seconds']} s: now signing with {result['active']}")
    _show(result["keys"])


class _KidCommand(click.Command):
    """A command whose KID may begin with '-': when click reads it as an option, say how to
    give it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            exc.message += (
                f" (a key id that begins with '-' goes after --: {ctx.command_path} "
                "[OPTIONS] -- KID)"
            )
            raise


@keys.command(cls=_KidCommand)
@click.argument("kid")
@federation_option()
@output_option
def retire(kid: str, file: Path, output: str) -> None:
    """Unpublish KID and make every relying party forget it: its tokens are refused at once.

    Give KID after -- (options before it): key ids may begin with '-'.

    \b
    escape-fed keys retire -f FED.yaml -- -EXRczZYp1OXVDdl
    """
    result = ops.retire(load(file), str(file), kid, info)
    if output == "json":
        emit_json(result)
        return
    info(f"retired {kid} in {result['seconds']} s")
    _show(result["keys"])
