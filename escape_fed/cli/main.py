"""The ``escape-fed`` command: a thin click layer over the escape_fed library."""

from __future__ import annotations

from importlib.metadata import version

import click

from escape_fed.cli.common import EscapeFedGroup, Settings
from escape_fed.cli.demo import demo
from escape_fed.cli.deploy import deploy
from escape_fed.cli.keys import keys
from escape_fed.cli.lab import lab
from escape_fed.cli.model_cmds import facilities, plan, render, validate
from escape_fed.cli.nodes import revoke_node
from escape_fed.cli.operate import smoke, status
from escape_fed.cli.submit import submit
from escape_fed.cli.token_cmd import token
from escape_fed.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

HELP = f"""Stand up islands of compute next to data-lake storage and join them into one
federated HTCondor pool, from one federation file.

FILE defaults to ./inventories/lab/federation.yaml when it exists, else to the local lab
federation installed with the package.
Data goes to stdout, messages to stderr; commands that read state take --output json.

\b
Exit codes:
  {EXIT_OK}  ok
  {EXIT_FAILED}  a check or an operation failed (or the command is not built yet)
  {EXIT_BAD_INPUT}  bad input: a federation file, a flag or an argument is wrong; nothing changed
"""


@click.group(
    cls=EscapeFedGroup, help=HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(version("escape-fed"), "--version", prog_name="escape-fed")
@click.option("-v", "--verbose", count=True, help="more messages on stderr (repeatable)")
@click.option("-q", "--quiet", is_flag=True, help="only errors on stderr")
@click.option("--debug", is_flag=True, hidden=True, help="show tracebacks")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    ctx.obj = Settings(verbose=verbose, quiet=quiet, debug=debug)


for command in (validate, render, plan, facilities, deploy, status, smoke, submit, lab, demo):
    main.add_command(command)
main.add_command(token)
main.add_command(keys)
main.add_command(revoke_node)
