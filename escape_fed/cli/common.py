"""Shared pieces of the click layer: errors handled in one place, output, the FILE argument."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from escape_fed.errors import EscapeFedError
from escape_fed.model import Federation, load_federation

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_FEDERATION = "inventories/lab/federation.yaml"


def default_federation() -> Path:
    """FILE when none is given: ./inventories/lab/federation.yaml (in a checkout, or a copy a
    user made), else the lab federation installed with the package."""
    here = Path(DEFAULT_FEDERATION)
    if here.exists():
        return here
    from escape_fed.collection import lab_federation

    return lab_federation()


class Settings:
    """Global options, stored in ``ctx.obj``."""

    def __init__(self, verbose: int = 0, quiet: bool = False, debug: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.debug = debug


def settings() -> Settings:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(Settings) if ctx else None
    return obj or Settings()


class EscapeFedGroup(click.Group):
    """Top-level group: turns :class:`EscapeFedError` into one message and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EscapeFedError as exc:
            if settings().debug:
                raise
            click.echo(
                f"error: {exc.message}" if "\n" not in exc.message else f"error:\n{exc.message}",
                err=True,
            )
            ctx.exit(exc.code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def info(message: str) -> None:
    """A progress or status message: stderr, silenced by --quiet."""
    if not settings().quiet:
        click.echo(message, err=True)


def detail(message: str) -> None:
    """A message shown only with --verbose."""
    if settings().verbose:
        click.echo(message, err=True)


def output_option(fn: F) -> F:
    """``--output text|json``, the same on every command that reads state."""
    return click.option(
        "--output",
        "-o",
        "output",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="text for people, json for programs (stdout)",
    )(fn)


def federation_argument(fn: F) -> F:
    """The FILE argument: a federation file, the lab federation by default."""
    return click.argument(
        "file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=default_federation,
        required=False,
    )(fn)


def federation_option(dest: str = "file", help: str = "federation file") -> Callable[[F], F]:
    """``-f/--file FILE``: the federation file, for commands whose argument is something else."""

    def decorate(fn: F) -> F:
        return click.option(
            "--file",
            "-f",
            dest,
            type=click.Path(dir_okay=False, path_type=Path),
            default=default_federation,
            show_default=DEFAULT_FEDERATION,
            help=help,
        )(fn)

    return decorate


def load(file: Path) -> Federation:
    """Load FILE; problems become one message (exit 2) through the group's handler."""
    fed = load_federation(file)
    detail(f"{file}: valid federation {fed.federation.name!r} ({len(fed.sites)} sites)")
    return fed


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)
