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


@keys.command()
@click.argument("kid")
@federation_option()
@output_option
def retire(kid: str, file: Path, output: str) -> None:
    """Unpublish KID and make every relying party forget it: its tokens are refused at once."""
    result = ops.retire(load(file), str(file), kid, info)
    if output == "json":
        emit_json(result)
        return
    info(f"retired {kid} in {result['seconds']} s")
    _show(result["keys"])
