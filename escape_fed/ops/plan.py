"""What a deploy would create or change, per site and host, before anything happens.

The desired state is derived from the model as *components* per host (an HTCondor daemon set, a
cache, a VM to create...). A deploy records the snapshot it applied; ``plan`` compares the model
with that snapshot and says, per component: create, change (which settings), keep, or remove.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from escape_fed.errors import BadInput
from escape_fed.model.schema import CLOUD_BACKENDS, Backend, Federation, Mode, Role
from escape_fed.model.view import (
    HostView,
    cache_url,
    federation_central_manager,
    hosts,
    hosts_with,
    pool_central_manager,
)

Components = dict[str, dict[str, Any]]  # component name -> settings


@dataclass(frozen=True)
class Action:
    """One planned change on one host."""

    site: str
    host: str
    component: str
    action: str  # create | change | keep | remove
    summary: str
    changed: tuple[str, ...] = ()  # settings that differ, for "change"

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "host": self.host,
            "component": self.component,
            "action": self.action,
            "summary": self.summary,
            "changed": list(self.changed),
        }


@dataclass
class Plan:
    """Actions grouped for display; counts per action."""

    federation: str
    actions: list[Action] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "change": 0, "keep": 0, "remove": 0}
        for a in self.actions:
            out[a.action] += 1
        return out

    def warnings(self) -> list[str]:
        """Settings that weaken a secure default, one line each (also in the summaries)."""
        return sorted(
            {
                f"{a.site}/{a.host} {a.component}: {a.summary.split(WARNING, 1)[1]}"
                for a in self.actions
                if WARNING in a.summary
            }
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "federation": self.federation,
            "counts": self.counts(),
            "actions": [a.as_dict() for a in self.actions],
            "warnings": self.warnings(),
        }


WARNING = " WARNING: "
_NO_TLS = (
    "root:// without TLS allowed (storage.tls_required: false): clients without TLS, and the "
    "tokens in their URLs, travel in clear"
)


def _summary(component: str, s: dict[str, Any]) -> str:
    match component:
        case "host":
            return f"{s['provision']} host {s['fqdn']}" + (
                f" ({s['flavor']})" if s.get("flavor") else ""
            )
        case "htcondor-central-manager":
            return f"HTCondor collector + negotiator, pool {s['pool']} ({s['mode']})"
        case "htcondor-access-point":
            return f"HTCondor schedd, submits to {s['central_manager']}" + (
                f", flocks to {len(s['flock_to'])} pools" if s.get("flock_to") else ""
            )
        case "htcondor-execute":
            return (
                f"HTCondor startd: {s['cpus']} cpus, {s['memory_mb']} MB, {s['gpus']} gpus, "
                f"reports to {s['central_manager']}" + (" via CCB" if s["ccb"] else "")
            )
        case "xcache":
            return (
                f"XCache {s['url']} -> {s['origin']} ({s['disk_gb']} GB disk, {s['ram_gb']} GB RAM)"
                + ("" if s.get("tls_required", True) else WARNING + _NO_TLS)
            )
        case "xrootd-origin":
            return f"XRootD origin exporting {', '.join(s['paths'])} ({s['rse']})" + (
                "" if s.get("tls_required", True) else WARNING + _NO_TLS
            )
        case "ingress":
            return f"TLS reverse proxy validating tokens from {s['issuer']}"
        case "iam-issuer":
            return f"lab OIDC token issuer at {s['issuer']}"
        case "monitoring":
            return "metrics and federation dashboard"
        case "idtoken":
            return f"own IDTOKEN for {s['identity']}, issued by {s['issuer']}"
    return component


def desired(fed: Federation) -> dict[str, dict[str, Any]]:
    """Snapshot of what the model asks for: host -> {site, components}."""
    out: dict[str, dict[str, Any]] = {}
    # Pools that run jobs (the federation collector of flock mode only views them).
    flock_pools = sorted(
        {
            cm.fqdn
            for s in fed.sites
            if hosts_with(fed, Role.EXECUTE, s) and (cm := pool_central_manager(fed, s)) is not None
        }
    )
    fcm = federation_central_manager(fed)
    for h in hosts(fed):
        comps: Components = {}
        cm = pool_central_manager(fed, h.site)
        cm_fqdn = cm.fqdn if cm else ""
        comps["host"] = {"fqdn": h.fqdn, "provision": _provision(h), "flavor": h.flavor}
        if h.has(Role.CENTRAL_MANAGER):
            comps["htcondor-central-manager"] = {
                "pool": h.fqdn,
                "mode": fed.federation.mode.value,
                "view_host": fcm.fqdn
                if fed.federation.mode is Mode.FLOCK and fcm and fcm.name != h.name
                else None,
            }
        if h.has(Role.ACCESS_POINT):
            comps["htcondor-access-point"] = {
                "central_manager": cm_fqdn,
                "flock_to": [p for p in flock_pools if p != cm_fqdn]
                if fed.federation.mode is Mode.FLOCK
                else [],
            }
        if h.has(Role.EXECUTE) and h.capacity is not None:
            comps["htcondor-execute"] = {
                **h.capacity.model_dump(),
                "central_manager": cm_fqdn,
                "ccb": fed.sites[h.site].network.behind_nat,
                "cache": cache_url(fed, h.site),
            }
        if any(h.has(r) for r in (Role.ACCESS_POINT, Role.EXECUTE, Role.CENTRAL_MANAGER)):
            comps["idtoken"] = {
                "identity": f"{h.fqdn}@{fed.federation.trust_domain}",
                "issuer": cm_fqdn,
            }
        storage = fed.sites[h.site].storage
        site_cache = fed.sites[h.site].cache
        if h.has(Role.CACHE) and storage and site_cache:
            comps["xcache"] = {
                "url": cache_url(fed, h.site),
                "origin": storage.origin,
                **site_cache.model_dump(),
                "tls_required": storage.tls_required,
            }
        if h.has(Role.ORIGIN) and storage:
            comps["xrootd-origin"] = {
                "rse": storage.rse,
                "paths": list(storage.paths),
                "tls_required": storage.tls_required,
            }
        if h.has(Role.INGRESS):
            comps["ingress"] = {"issuer": fed.iam.issuer, "audience": fed.iam.audience}
        if h.has(Role.ISSUER):
            comps["iam-issuer"] = {"issuer": fed.iam.issuer, "groups": sorted(fed.iam.groups)}
        if h.has(Role.MONITORING):
            comps["monitoring"] = {}
        out[h.name] = {"site": h.site, "components": comps}
    return out


def _provision(h: HostView) -> str:
    if h.backend is Backend.LAB:
        return "lab"
    if h.backend in CLOUD_BACKENDS:
        return f"{h.backend.value}"
    return "existing"


def load_snapshot(path: Path) -> dict[str, dict[str, Any]]:
    """The snapshot a deploy recorded; an empty one if there was no deploy yet."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(
            f"{path}: not a deploy snapshot ({exc}): expected the JSON file a "
            "deploy writes; remove it to plan from scratch"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), dict):
        raise BadInput(f"{path}: hosts: missing: expected the JSON file a deploy writes")
    hosts_: dict[str, dict[str, Any]] = data["hosts"]
    return hosts_


def save_snapshot(fed: Federation, path: Path) -> None:
    """Record that the whole model was applied."""
    write_snapshot(fed.federation.name, desired(fed), path)


def write_snapshot(federation: str, hosts_: dict[str, dict[str, Any]], path: Path) -> None:
    """Write a snapshot atomically (called by a successful deploy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"federation": federation, "hosts": hosts_}, indent=1, sort_keys=True),
        encoding="utf-8",
    )
    tmp.replace(path)


def plan(
    fed: Federation, previous: dict[str, dict[str, Any]] | None = None, site: str | None = None
) -> Plan:
    """Compare the model with ``previous`` (a recorded snapshot) and list the actions."""
    if site is not None and site not in fed.sites:
        raise BadInput(f"--site {site}: no such site: expected one of {', '.join(fed.sites)}")
    previous = previous or {}
    want = desired(fed)
    result = Plan(federation=fed.federation.name)
    for host, entry in want.items():
        if site and entry["site"] != site:
            continue
        before: Components = previous.get(host, {}).get("components", {})
        for comp, settings in entry["components"].items():
            summary = _summary(comp, settings)
            if comp not in before:
                result.actions.append(Action(entry["site"], host, comp, "create", summary))
            elif before[comp] != settings:
                changed = tuple(
                    sorted(
                        k
                        for k in set(settings) | set(before[comp])
                        if settings.get(k) != before[comp].get(k)
                    )
                )
                result.actions.append(Action(entry["site"], host, comp, "change", summary, changed))
            else:
                result.actions.append(Action(entry["site"], host, comp, "keep", summary))
        for comp in before:
            if comp not in entry["components"]:
                result.actions.append(
                    Action(entry["site"], host, comp, "remove", f"withdraw {comp}")
                )
    for host, entry in previous.items():
        if host not in want and (not site or entry.get("site") == site):
            for comp in entry.get("components", {}):
                result.actions.append(
                    Action(
                        str(entry.get("site", "?")),
                        host,
                        comp,
                        "remove",
                        f"withdraw {comp} (host left the federation)",
                    )
                )
    return result
