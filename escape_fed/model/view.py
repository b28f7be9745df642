"""Derived facts of a validated federation: expanded hosts, FQDNs, lab addresses, services.

Everything here is computed from the model (never stored twice), so renderers, the lab and the
operations agree on names and addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from escape_fed.model.schema import (
    CLOUD_BACKENDS,
    Backend,
    Capacity,
    Federation,
    Host,
    HostTls,
    Mode,
    Role,
)

LAB_FIRST_HOST = 10  # lab host addresses start at .10 of the site subnet; .1 is the router


@dataclass(frozen=True)
class HostView:
    """One concrete host (cloud ``count`` expanded)."""

    name: str
    site: str
    backend: Backend
    fqdn: str
    address: str | None  # None: assigned later (cloud VMs, pods)
    roles: tuple[Role, ...]
    capacity: Capacity | None
    ssh_user: str
    ssh_port: int
    flavor: str | None
    tls: HostTls | None = None

    def has(self, role: Role) -> bool:
        return role in self.roles


def host_names(name: str, host: Host) -> list[str]:
    """Inventory names of a host entry: itself, or NAME-1..NAME-N for ``count`` > 1."""
    if host.count == 1:
        return [name]
    return [f"{name}-{i}" for i in range(1, host.count + 1)]


def lab_subnets(fed: Federation) -> dict[str, ipaddress.IPv4Network]:
    """Subnet of every lab site: given, or the (i+1)-th /24 of the lab supernet in file order.

    The first /24 of the supernet is the control network (router and control machine).
    """
    supernet = ipaddress.IPv4Network(fed.lab.supernet)
    blocks = list(supernet.subnets(new_prefix=24)) if supernet.prefixlen <= 24 else [supernet]
    out: dict[str, ipaddress.IPv4Network] = {}
    index = 0
    for name, site in fed.sites.items():
        if site.backend is not Backend.LAB:
            continue
        index += 1
        if site.network.subnet:
            out[name] = ipaddress.IPv4Network(site.network.subnet)
        elif index < len(blocks):
            out[name] = blocks[index]
    return out


def _hosts(fed: Federation) -> tuple[HostView, ...]:
    subnets = lab_subnets(fed)
    out: list[HostView] = []
    for site_name, site in fed.sites.items():
        offset = LAB_FIRST_HOST
        for name, host in site.hosts.items():
            for inv_name in host_names(name, host):
                address = host.address
                if site.backend is Backend.LAB and address is None and site_name in subnets:
                    address = str(subnets[site_name].network_address + offset)
                offset += 1
                if site.backend in CLOUD_BACKENDS and host.count > 1:
                    address = None
                out.append(
                    HostView(
                        name=inv_name,
                        site=site_name,
                        backend=site.backend,
                        fqdn=host.fqdn
                        if host.fqdn and host.count == 1
                        else f"{inv_name}.{site_name}.{fed.federation.domain}",
                        address=address,
                        roles=host.roles,
                        capacity=host.capacity,
                        ssh_user=host.ssh_user,
                        ssh_port=host.ssh_port,
                        flavor=host.flavor,
                        tls=host.tls,
                    )
                )
    return tuple(out)


@dataclass(frozen=True)
class _Index:
    hosts: tuple[HostView, ...]
    by_site: dict[str, tuple[HostView, ...]]
    by_role: dict[tuple[Role, str | None], tuple[HostView, ...]]


def _build_index(fed: Federation) -> _Index:
    all_hosts = _hosts(fed)
    by_site: dict[str, list[HostView]] = {name: [] for name in fed.sites}
    by_role: dict[tuple[Role, str | None], list[HostView]] = {}
    for h in all_hosts:
        by_site[h.site].append(h)
        for role in h.roles:
            by_role.setdefault((role, None), []).append(h)
            by_role.setdefault((role, h.site), []).append(h)
    return _Index(
        all_hosts,
        {k: tuple(v) for k, v in by_site.items()},
        {k: tuple(v) for k, v in by_role.items()},
    )


_CACHE: dict[int, tuple[Federation, _Index]] = {}


def _index(fed: Federation) -> _Index:
    """Hosts of a model, indexed by site and role (computed once per model object)."""
    hit = _CACHE.get(id(fed))
    if hit is not None and hit[0] is fed:
        return hit[1]
    result = _build_index(fed)
    if len(_CACHE) >= 8:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(fed)] = (fed, result)  # the strong reference keeps id(fed) from being reused
    return result


def hosts(fed: Federation) -> tuple[HostView, ...]:
    """Every concrete host of the federation, in file order."""
    return _index(fed).hosts


def site_hosts(fed: Federation, site: str) -> tuple[HostView, ...]:
    return _index(fed).by_site.get(site, ())


def hosts_with(fed: Federation, role: Role, site: str | None = None) -> tuple[HostView, ...]:
    return _index(fed).by_role.get((role, site), ())


def federation_central_manager(fed: Federation) -> HostView | None:
    """The federation's central manager (global-pool) or federation collector (flock)."""
    found = hosts_with(fed, Role.CENTRAL_MANAGER, fed.federation.central_site)
    return found[0] if found else None


def pool_central_manager(fed: Federation, site: str) -> HostView | None:
    """The central manager the site's HTCondor daemons report to."""
    if fed.federation.mode is Mode.GLOBAL_POOL:
        return federation_central_manager(fed)
    own = hosts_with(fed, Role.CENTRAL_MANAGER, site)
    return own[0] if own else None


def cache_url(fed: Federation, site: str, scheme: str = "root") -> str | None:
    """URL of the site's cache (root:// or https://), or None if it has none."""
    caches = hosts_with(fed, Role.CACHE, site)
    cache_cfg = fed.sites[site].cache
    if not caches or cache_cfg is None:
        return None
    port = cache_cfg.root_port if scheme == "root" else cache_cfg.https_port
    return f"{scheme}://{caches[0].fqdn}:{port}"


def site_capacity(fed: Federation, site: str) -> dict[str, int]:
    """Declared capacity of a site: execute nodes, cpus, memory, gpus, disk."""
    total = {"nodes": 0, "cpus": 0, "memory_mb": 0, "gpus": 0, "disk_gb": 0}
    for h in hosts_with(fed, Role.EXECUTE, site):
        if h.capacity is None:
            continue
        total["nodes"] += 1
        total["cpus"] += h.capacity.cpus
        total["memory_mb"] += h.capacity.memory_mb
        total["gpus"] += h.capacity.gpus
        total["disk_gb"] += h.capacity.disk_gb
    return total


def datasets_at(fed: Federation, site: str) -> list[str]:
    """Names of the datasets the site's storage holds."""
    storage = fed.sites[site].storage
    if storage is None:
        return []
    return [name for name, ds in fed.datasets.items() if storage.rse in ds.rses]


def group_name(site: str) -> str:
    """Ansible group of a site: ``site-a`` -> ``site_a``."""
    return site.replace("-", "_")
