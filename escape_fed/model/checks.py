"""Rules that span several fields of a federation. Each returns every problem it finds."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from escape_fed.model.loader import Problem
from escape_fed.model.schema import (
    CLOUD_BACKENDS,
    ROLE_GROUPS,
    Backend,
    Federation,
    Mode,
    Role,
    path_within,
)
from escape_fed.model.view import group_name, hosts, hosts_with, lab_subnets

Check = Callable[[Federation], Iterator[Problem]]
_CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    _CHECKS.append(fn)
    return fn


def check_federation(fed: Federation) -> list[Problem]:
    """Run every cross-field rule; all problems, sorted by path."""
    problems = [p for fn in _CHECKS for p in fn(fed)]
    return sorted(set(problems))


@check
def _central_services(fed: Federation) -> Iterator[Problem]:
    central = fed.federation.central_site
    if central not in fed.sites:
        yield Problem(
            "federation.central_site",
            f"site {central!r} is not defined: expected one of {', '.join(fed.sites)}",
        )
        return
    cms = hosts_with(fed, Role.CENTRAL_MANAGER)
    central_cms = [h for h in cms if h.site == central]
    if len(central_cms) != 1:
        yield Problem(
            f"sites.{central}.hosts",
            f"the central site needs exactly one host with role 'central_manager' "
            f"(found {len(central_cms)})",
        )
    if fed.federation.mode is Mode.GLOBAL_POOL:
        for h in cms:
            if h.site != central:
                yield Problem(
                    f"sites.{h.site}.hosts.{h.name}.roles",
                    "mode 'global-pool' has one central manager, in the central site "
                    f"{central!r}: remove 'central_manager' here or use mode 'flock'",
                )
    else:
        for name in fed.sites:
            if name == central:
                continue
            site_cms = [h for h in cms if h.site == name]
            if hosts_with(fed, Role.EXECUTE, name) and len(site_cms) != 1:
                yield Problem(
                    f"sites.{name}.hosts",
                    "mode 'flock': every site with execute nodes runs its own pool and "
                    f"needs exactly one 'central_manager' host (found {len(site_cms)})",
                )
    if not hosts_with(fed, Role.ACCESS_POINT):
        yield Problem("sites", "no host has role 'access_point': users need one to submit jobs")
    if not hosts_with(fed, Role.EXECUTE):
        yield Problem("sites", "no host has role 'execute': the federation would run no jobs")
    for role in (Role.ISSUER, Role.INGRESS, Role.MONITORING):
        found = hosts_with(fed, role)
        if len(found) > 1:
            yield Problem(
                f"sites.{found[1].site}.hosts.{found[1].name}.roles",
                f"role {role.value!r} is already on host {found[0].name!r}: "
                "expected at most one per federation",
            )


@check
def _unique_hosts(fed: Federation) -> Iterator[Problem]:
    seen_name: dict[str, str] = {}
    seen_fqdn: dict[str, str] = {}
    seen_addr: dict[str, str] = {}
    for h in hosts(fed):
        path = f"sites.{h.site}.hosts.{h.name}"
        if h.name in seen_name and seen_name[h.name] != h.site:
            yield Problem(
                path,
                f"host {h.name!r} is already used by site {seen_name[h.name]!r}: "
                "a host belongs to one site; host names are unique",
            )
        seen_name.setdefault(h.name, h.site)
        if h.fqdn in seen_fqdn and seen_fqdn[h.fqdn] != h.name:
            yield Problem(
                f"{path}.fqdn",
                f"{h.fqdn!r} is already the name of host "
                f"{seen_fqdn[h.fqdn]!r}: expected a unique FQDN",
            )
        seen_fqdn.setdefault(h.fqdn, h.name)
        if h.address:
            if h.address in seen_addr and seen_addr[h.address] != h.name:
                yield Problem(
                    f"{path}.address",
                    f"{h.address!r} is already the address of host "
                    f"{seen_addr[h.address]!r}: expected one host "
                    "per address",
                )
            seen_addr.setdefault(h.address, h.name)


@check
def _site_names(fed: Federation) -> Iterator[Problem]:
    reserved = set(ROLE_GROUPS.values()) | {"all", "ungrouped", "central_services"}
    for name in fed.sites:
        if group_name(name) in reserved:
            yield Problem(
                f"sites.{name}",
                f"site name {name!r} clashes with the inventory group "
                f"{group_name(name)!r}: choose another name",
            )


@check
def _hosts_per_site(fed: Federation) -> Iterator[Problem]:
    for sname, site in fed.sites.items():
        for hname, host in site.hosts.items():
            path = f"sites.{sname}.hosts.{hname}"
            if Role.EXECUTE in host.roles and host.capacity is None:
                yield Problem(
                    f"{path}.capacity",
                    "execute hosts must declare their capacity: "
                    "expected cpus, memory_mb (gpus, disk_gb)",
                )
            if Role.EXECUTE not in host.roles and host.capacity is not None:
                yield Problem(
                    f"{path}.capacity",
                    "capacity applies to execute hosts only: add role 'execute' or remove capacity",
                )
            if len(set(host.roles)) != len(host.roles):
                yield Problem(f"{path}.roles", "a role is listed twice: expected each role once")
            if site.backend is Backend.SSH and not host.address:
                yield Problem(
                    f"{path}.address",
                    "ssh hosts need the address the control machine "
                    "reaches them at (IP or DNS name)",
                )
            if host.count > 1 and site.backend not in CLOUD_BACKENDS:
                yield Problem(
                    f"{path}.count",
                    f"count > 1 needs a cloud or kubernetes backend "
                    f"(this site's backend is {site.backend.value!r})",
                )
            if host.count > 1 and host.address:
                yield Problem(
                    f"{path}.address",
                    "an address cannot be shared by count > 1 instances: remove it",
                )
            if host.flavor and site.backend not in CLOUD_BACKENDS:
                yield Problem(f"{path}.flavor", "flavor applies to cloud sites only")
            if site.backend in CLOUD_BACKENDS and not host.flavor:
                yield Problem(
                    f"{path}.flavor",
                    f"{site.backend.value} hosts need a flavor (instance type or pod size name)",
                )
        caches = [h for h, v in site.hosts.items() if Role.CACHE in v.roles]
        if len(caches) > 1:
            yield Problem(
                f"sites.{sname}.hosts.{caches[1]}.roles",
                f"site already has a cache on {caches[0]!r}: expected at most one",
            )


@check
def _data(fed: Federation) -> Iterator[Problem]:
    rses: dict[str, str] = {}
    for sname, site in fed.sites.items():
        roles = {r for h in site.hosts.values() for r in h.roles}
        for role in (Role.CACHE, Role.ORIGIN):
            if role in roles and site.storage is None:
                yield Problem(
                    f"sites.{sname}.storage",
                    f"the site has {'a' if role is Role.CACHE else 'an'} {role.value} host but "
                    "no storage: expected storage with rse, origin and paths",
                )
        if site.cache is not None and Role.CACHE not in roles:
            yield Problem(
                f"sites.{sname}.cache",
                "cache settings given but no host has role 'cache': add the role to a host",
            )
        if site.cache is not None and site.cache.low_watermark >= site.cache.high_watermark:
            yield Problem(f"sites.{sname}.cache.low_watermark", "must be lower than high_watermark")
        if site.storage is not None:
            if site.storage.rse in rses:
                yield Problem(
                    f"sites.{sname}.storage.rse",
                    f"RSE {site.storage.rse!r} is already the storage of site "
                    f"{rses[site.storage.rse]!r}: expected a unique RSE name",
                )
            rses.setdefault(site.storage.rse, sname)
            origins = hosts_with(fed, Role.ORIGIN, sname)
            origin_host = urlsplit(site.storage.origin).hostname
            if origins and origin_host not in {origins[0].fqdn, origins[0].address}:
                yield Problem(
                    f"sites.{sname}.storage.origin",
                    f"points at {origin_host!r}, but the site's origin host is "
                    f"{origins[0].fqdn!r}: expected the URL to name it",
                )
    for dname, ds in fed.datasets.items():
        for i, rse in enumerate(ds.rses):
            if rse not in rses:
                known = ", ".join(sorted(rses)) or "none defined"
                yield Problem(
                    f"datasets.{dname}.rses[{i}]",
                    f"unknown RSE {rse!r}: expected a site's storage.rse ({known})",
                )


@check
def _datasets_outside_embargoes(fed: Federation) -> Iterator[Problem]:
    """A dataset is readable by every group: its path may not be, hold or lie in an embargo.

    The issuer grants each dataset's path to every group, so a dataset at (or above) a group's
    embargoed path would hand that group's data to all the others."""
    for dname, ds in fed.datasets.items():
        for gname, group in fed.iam.groups.items():
            for embargo in group.paths:
                if ds.path == embargo:
                    how = "is"
                elif path_within(embargo, ds.path):
                    how = "contains"
                elif path_within(ds.path, embargo):
                    how = "lies under"
                else:
                    continue
                yield Problem(
                    f"datasets.{dname}.path",
                    f"{ds.path!r} {how} {embargo!r}, the embargoed path of group {gname!r}: "
                    "expected a dataset path outside every group's embargoed paths "
                    "(datasets are readable by all groups)",
                )


@check
def _iam(fed: Federation) -> Iterator[Problem]:
    accounts: dict[str, str] = {}
    for gname, group in fed.iam.groups.items():
        path = f"iam.groups.{gname}"
        if not gname or any(c.isspace() for c in gname):
            yield Problem(path, "IAM group names have no spaces: expected e.g. '/escape/atlas'")
        if group.account in accounts:
            yield Problem(
                f"{path}.account",
                f"account {group.account!r} already belongs to group "
                f"{accounts[group.account]!r}: groups need their own "
                "account (tenant separation)",
            )
        accounts.setdefault(group.account, gname)
    issuers = hosts_with(fed, Role.ISSUER)
    if issuers:
        issuer_host = urlsplit(fed.iam.issuer).hostname
        if issuer_host not in {issuers[0].fqdn, issuers[0].address}:
            yield Problem(
                "iam.issuer",
                f"names {issuer_host!r}, but the federation's issuer host "
                f"is {issuers[0].fqdn!r}: expected the URL to name it",
            )


def _pem_problem(path: str, marker: str, what: str) -> str | None:
    """Why the PEM file at ``path`` cannot serve as ``what`` (None: it can)."""
    file = Path(path)
    try:
        text = file.read_text(errors="replace")
    except FileNotFoundError:
        return f"{path} does not exist: expected {what} on the control machine"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror}): expected {what}"
    if f"-----BEGIN {marker}" not in text and not (
        marker == "PRIVATE KEY" and "PRIVATE KEY-----" in text
    ):
        return f"{path} holds no PEM {marker.lower()}: expected {what}"
    if marker == "PRIVATE KEY" and file.stat().st_mode & 0o077:
        return f"{path} is readable by others (mode {file.stat().st_mode & 0o777:o}): expected 0600"
    return None


@check
def _tls_files(fed: Federation) -> Iterator[Problem]:
    """Sites' own certificates and the CAs that signed them exist, and keys are private."""
    for i, ca in enumerate(fed.security.trusted_cas):
        why = _pem_problem(ca, "CERTIFICATE", "a PEM CA certificate")
        if why:
            yield Problem(f"security.trusted_cas.{i}", why)
    for site_name, site in fed.sites.items():
        for name, host in site.hosts.items():
            if host.tls is None:
                continue
            path = f"sites.{site_name}.hosts.{name}.tls"
            why = _pem_problem(host.tls.certificate, "CERTIFICATE", "a PEM certificate")
            if why:
                yield Problem(f"{path}.certificate", why)
            why = _pem_problem(host.tls.key, "PRIVATE KEY", "a PEM private key")
            if why:
                yield Problem(f"{path}.key", why)


@check
def _backends(fed: Federation) -> Iterator[Problem]:
    for sname, site in fed.sites.items():
        if site.backend in CLOUD_BACKENDS and site.cloud is None:
            yield Problem(
                f"sites.{sname}.cloud",
                f"{site.backend.value} sites need a cloud "
                "section (image, region/network/namespace)",
            )
        if site.backend not in CLOUD_BACKENDS and site.cloud is not None:
            yield Problem(
                f"sites.{sname}.cloud",
                f"cloud settings do not apply to backend {site.backend.value!r}: remove them",
            )
        if site.backend is Backend.KUBERNETES and site.cloud and not site.cloud.namespace:
            yield Problem(f"sites.{sname}.cloud.namespace", "kubernetes sites need a namespace")
        if site.backend is not Backend.LAB and site.network.subnet:
            yield Problem(
                f"sites.{sname}.network.subnet", "subnet is a lab setting: only for backend 'lab'"
            )


@check
def _lab(fed: Federation) -> Iterator[Problem]:
    lab_sites = [n for n, s in fed.sites.items() if s.backend is Backend.LAB]
    if not lab_sites:
        return
    supernet = ipaddress.IPv4Network(fed.lab.supernet)
    if supernet.prefixlen > 22:
        yield Problem("lab.supernet", "too small: expected /22 or larger (a /24 per site)")
        return
    subnets = lab_subnets(fed)
    control = next(supernet.subnets(new_prefix=24))
    seen: dict[ipaddress.IPv4Network, str] = {}
    for name in lab_sites:
        path = f"sites.{name}.network.subnet"
        net = subnets.get(name)
        if net is None:
            yield Problem(
                path, "no free /24 left in lab.supernet: give a subnet or a larger supernet"
            )
            continue
        if not net.subnet_of(supernet) or net.overlaps(control):
            yield Problem(
                path,
                f"{net} must lie inside lab.supernet {supernet} and not in its "
                f"first /24 ({control}, the control network)",
            )
        for other, oname in seen.items():
            if net.overlaps(other):
                yield Problem(path, f"{net} overlaps the subnet of site {oname!r}")
        seen[net] = name
        site = fed.sites[name]
        if len(site.hosts) > net.num_addresses - 12:
            yield Problem(path, f"{net} is too small for {len(site.hosts)} hosts")
        for hname, host in site.hosts.items():
            if host.address:
                try:
                    addr = ipaddress.IPv4Address(host.address)
                except ValueError:
                    yield Problem(
                        f"sites.{name}.hosts.{hname}.address",
                        f"{host.address!r}: lab hosts need an IPv4 address",
                    )
                    continue
                if addr not in net or int(addr) - int(net.network_address) < 2:
                    yield Problem(
                        f"sites.{name}.hosts.{hname}.address",
                        f"{addr} is not a host address of the site's subnet {net} "
                        "(.1 is the router)",
                    )
