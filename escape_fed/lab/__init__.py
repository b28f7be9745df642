"""The lab: real Linux hosts (systemd-nspawn, one network namespace each) on one machine.

Public API::

    build_image(spec, progress=None, *, force=False) -> Path
    up(spec, progress=None) -> LabState
    down(spec_or_state_dir, progress=None, prefix=None) -> None
    status(state_dir) -> list[dict]
    stop_host(state_dir, name, progress=None) / start_host(state_dir, name, progress=None)
    ssh_command(state_dir, host, cmd) -> list[str]
    ansible_vars(state_dir, host) -> dict[str, str]
"""

from escape_fed.lab.image import build_image, cached_image, find_mirror
from escape_fed.lab.runtime import (
    LabState,
    ansible_vars,
    down,
    lab_leftovers,
    load_state,
    ssh_command,
    start_host,
    status,
    stop_host,
    up,
)
from escape_fed.lab.spec import LabHost, LabSite, LabSpec

__all__ = [
    "LabHost",
    "LabSite",
    "LabSpec",
    "LabState",
    "ansible_vars",
    "build_image",
    "cached_image",
    "down",
    "find_mirror",
    "lab_leftovers",
    "load_state",
    "ssh_command",
    "start_host",
    "status",
    "stop_host",
    "up",
]
