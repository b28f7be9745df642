"""Run a command on a federation host over SSH, host keys checked, whatever its backend."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from escape_fed.errors import NotBuiltYet
from escape_fed.lab import runtime
from escape_fed.model.schema import Backend, Federation
from escape_fed.model.view import HostView


def command(fed: Federation, host: HostView, cmd: str) -> list[str]:
    """argv that runs ``cmd`` (one shell command line) on ``host``."""
    if host.backend is Backend.LAB:
        return runtime.ssh_command(Path(fed.lab.state_dir), host.name, [cmd])
    if host.backend is Backend.SSH:
        assert host.address is not None  # the model requires it for ssh hosts
        return [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-p",
            str(host.ssh_port),
            f"{host.ssh_user}@{host.address}",
            cmd,
        ]
    raise NotBuiltYet(f"{host.name}: reaching {host.backend.value} hosts is not built yet")


def run(
    fed: Federation, host: HostView, cmd: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(fed, host, cmd), capture_output=True, text=True, timeout=timeout, check=False
    )


def as_user(user: str, cmd: str) -> str:
    """A command line that runs ``cmd`` as a local user (through runuser, no password)."""
    return f"runuser -u {shlex.quote(user)} -- sh -c {shlex.quote(cmd)}"
