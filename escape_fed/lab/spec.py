"""What the lab builds: a plain description derived from the federation model.

The lab runtime (image, network, hosts) only ever sees a :class:`LabSpec`; it never reads the
federation file itself. :func:`escape_fed.lab.plan.lab_spec` turns a validated
:class:`~escape_fed.model.Federation` into one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LabSite:
    """One lab site: one bridge, one /24 subnet, the router holds ``gateway``."""

    name: str  # site name from the model, e.g. "site-a"
    subnet: str  # CIDR, e.g. "10.77.1.0/24"
    gateway: str  # router address on that subnet, e.g. "10.77.1.1"
    bridge: str  # bridge device name (<= 15 chars), e.g. "ef-br1"


@dataclass(frozen=True)
class LabHost:
    """One lab host: a systemd-nspawn machine in its own network namespace."""

    name: str  # inventory name, unique in the federation, e.g. "wn-a1"
    site: str  # LabSite.name
    fqdn: str  # e.g. "wn-a1.site-a.escape.lab"
    address: str  # e.g. "10.77.1.11"
    netns: str  # network namespace name, e.g. "ef-wn-a1"
    memory_mb: int | None = None  # optional memory cap for the host's cgroup


@dataclass(frozen=True)
class LabSpec:
    """Everything the lab needs to go up, and to be found again to go down."""

    name: str  # lab name (the federation name); prefixes nothing, names the state
    state_dir: Path  # e.g. /var/lib/escape-fed/lab: images, hosts, keys, lab.json
    sites: tuple[LabSite, ...]
    hosts: tuple[LabHost, ...]
    wan_mbit: int = 100  # bandwidth of each site's WAN link through the router
    control_address: str = "10.77.0.254"  # the root namespace's address on the control bridge
    control_subnet: str = "10.77.0.0/24"  # control bridge; the router is .1 there
    image_packages: tuple[str, ...] = field(default_factory=tuple)  # extra packages in the image
    prefix: str = "ef"  # every kernel object the lab makes starts with this (cleanup by name)
    image_cache: Path | None = None  # where images are cached; None: state_dir / "images"
