"""``escape-fed lab``: the local lab of real hosts, a thin layer over :mod:`escape_fed.lab`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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
from escape_fed.lab import runtime
from escape_fed.lab.image import build_image, cached_image, image_dir, last_build_info
from escape_fed.lab.spec import LabSpec

F = TypeVar("F", bound=Callable[..., Any])


def _spec(file: Path) -> LabSpec:
    from escape_fed.lab.plan import lab_spec

    return lab_spec(load(file))


_file_option = federation_option(help="federation file whose lab to use")


def _render_status(rows: list[dict[str, object]], output: str) -> None:
    if output == "json":
        emit_json(rows)
        return
    if not rows:
        click.echo("no lab is up")
        return
    headers = ["host", "site", "fqdn", "address", "state", "pid", "memory_mib"]
    click.echo(table([[r[h] for h in headers] for r in rows], headers))


@click.group()
def lab() -> None:
    """The local lab: one real Linux host (systemd-nspawn, own network namespace) per node.

    Needs root. Hosts are reachable from this machine over SSH only; nothing leaves the machine.
    """


@lab.command()
@federation_argument
@output_option
def up(file: Path, output: str) -> None:
    """Build the image if needed and boot every lab host of FILE (a no-op if already up)."""
    spec = _spec(file)
    runtime.up(spec, info)
    info(f"ssh config: {spec.state_dir / 'ssh_config'}")
    _render_status(runtime.status(spec.state_dir), output)


@lab.command()
@federation_argument
def down(file: Path) -> None:
    """Stop every lab host and remove the lab's namespaces, links, mounts and cgroups."""
    spec = _spec(file)
    runtime.down(spec, info)
    info(f"lab {spec.name}: down")


@lab.command()
@federation_argument
@output_option
def status(file: Path, output: str) -> None:
    """Show each lab host: address, running or stopped, pid, memory (MiB)."""
    _render_status(runtime.status(_spec(file).state_dir), output)


@lab.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@_file_option
@click.argument("host")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ssh(ctx: click.Context, file: Path, host: str, cmd: tuple[str, ...]) -> None:
    """Open a shell on HOST, or run CMD there (exit code passed through)."""
    argv = runtime.ssh_command(_spec(file).state_dir, host, list(cmd))
    if not cmd:
        argv.insert(1, "-t")  # an interactive shell
    ctx.exit(subprocess.call(argv))


@lab.command()
@_file_option
@click.argument("host")
def stop(file: Path, host: str) -> None:
    """Stop one lab host (its disk and identity are kept)."""
    runtime.stop_host(_spec(file).state_dir, host, info)


@lab.command()
@_file_option
@click.argument("host")
def start(file: Path, host: str) -> None:
    """Start a stopped lab host again; returns once it answers SSH."""
    runtime.start_host(_spec(file).state_dir, host, info)


@lab.command()
@federation_argument
@click.option("--rebuild", is_flag=True, help="build again even if a cached image exists")
def image(file: Path, rebuild: bool) -> None:
    """Build (or find cached) the lab's Debian trixie image; print its rootfs path."""
    spec = _spec(file)
    was_cached = cached_image(spec) is not None and not rebuild
    rootfs = build_image(spec, info, force=rebuild)
    built = last_build_info(spec) or {}
    if was_cached and built.get("seconds") is not None:
        info(f"image: last built in {built['seconds']} s ({image_dir(spec)})")
    click.echo(str(rootfs))
