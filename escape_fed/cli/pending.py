"""Commands whose place in the CLI is fixed but whose engine is not built yet.

Each says so and exits 1: escape-fed never pretends an operation happened.
"""

from __future__ import annotations

from pathlib import Path

import click

from escape_fed.cli.common import federation_argument, load, output_option
from escape_fed.errors import NotBuiltYet


def _not_built(what: str) -> NotBuiltYet:
    return NotBuiltYet(
        f"{what} is not built yet: it comes with the HTCondor federation work "
        "(roles and playbooks). Use 'escape-fed plan' to see what it will do."
    )


@click.command()
@federation_argument
@click.option("--site", help="deploy only this site")
@click.option("--check", is_flag=True, help="Ansible check mode: report, change nothing")
def deploy(file: Path, site: str | None, check: bool) -> None:
    """Provision and configure every host of FILE (not built yet)."""
    load(file)
    raise _not_built("deploy")


@click.command()
@federation_argument
@output_option
def status(file: Path, output: str) -> None:
    """The federated pool seen through its collectors (not built yet)."""
    load(file)
    raise _not_built("status")


@click.command()
@federation_argument
@output_option
def smoke(file: Path, output: str) -> None:
    """Submit a short job pinned to every site and report each result (not built yet)."""
    load(file)
    raise _not_built("smoke")
