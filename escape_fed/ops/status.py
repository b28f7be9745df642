"""status: the federated pool seen through its collector, against what the model declares."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from escape_fed.backends import remote
from escape_fed.backends.condor import PoolAds, query_pool
from escape_fed.errors import EscapeFedError, OperationFailed
from escape_fed.model.schema import Federation, Mode, Role
from escape_fed.model.view import (
    HostView,
    cache_url,
    federation_central_manager,
    hosts,
    hosts_with,
    pool_central_manager,
    site_capacity,
)
from escape_fed.ops.deploy import secrets_dir


def collector_address(fed: Federation) -> str:
    """Where the control machine reaches the federation's collector."""
    cm = federation_central_manager(fed)
    if cm is None:  # the model guarantees one
        raise OperationFailed("the federation has no central manager")
    return f"{cm.address or cm.fqdn}:9618"


def _site_record(missing: list[str]) -> dict[str, Any]:
    """A site's counts before any ad is seen; ``missing`` starts as every declared node."""
    return {
        "nodes": 0,
        "slots": 0,
        "cpus": 0,
        "memory_mb": 0,
        "gpus": 0,
        "busy": 0,
        "busy_cpus": 0,
        "missing": missing,
        "machines": [],
        "jobs_running": 0,
        "jobs_idle": 0,
        "jobs_held": 0,
        "access_points": {},
    }


def pool_collectors(fed: Federation) -> list[str]:
    """Addresses of the collectors of the pools that run jobs (one per site in flock mode)."""
    out: list[str] = []
    for name in fed.sites:
        cm = pool_central_manager(fed, name)
        if cm is not None and hosts_with(fed, Role.EXECUTE, name):
            address = f"{cm.address or cm.fqdn}:9618"
            if address not in out:
                out.append(address)
    return out


def summarize(fed: Federation, ads: PoolAds) -> dict[str, Any]:
    """The JSON shape of ``status``: pool facts and per-site counts."""
    by_fqdn = {h.fqdn: h for h in hosts(fed)}
    sites: dict[str, Any] = {}
    for name in fed.sites:
        declared = [h.fqdn for h in hosts_with(fed, Role.EXECUTE, name)]
        if not declared and not hosts_with(fed, Role.ACCESS_POINT, name):
            continue
        sites[name] = _site_record(sorted(declared))
        sites[name]["declared"] = site_capacity(fed, name)
    seen: set[str] = set()
    for ad in ads.startds:
        site = str(ad.get("ESCAPE_SITE") or "")
        if site not in sites:
            host = by_fqdn.get(str(ad.get("Machine", "")))
            site = host.site if host else "unknown"
            sites.setdefault(site, _site_record([]))
        s = sites[site]
        s["slots"] += 1
        machine = str(ad.get("Machine", ""))
        if ad.get("SlotType") != "Dynamic":  # partitionable or static: the node's capacity
            if machine not in seen:
                seen.add(machine)
                s["nodes"] += 1
                s["machines"].append(machine)
                if machine in s.get("missing", []):
                    s["missing"].remove(machine)
            s["cpus"] += int(ad.get("TotalSlotCpus") or ad.get("Cpus") or 0)
            s["memory_mb"] += int(ad.get("TotalSlotMemory") or ad.get("Memory") or 0)
            s["gpus"] += int(ad.get("TotalSlotGPUs") or ad.get("GPUs") or 0)
        if ad.get("State") == "Claimed":
            s["busy"] += 1
            s["busy_cpus"] += int(ad.get("Cpus") or 0)
    for ad in ads.schedds:
        host = by_fqdn.get(str(ad.get("Machine", "")))
        site = host.site if host else "unknown"
        s = sites.setdefault(site, _site_record([]))
        counts = {
            "running": int(ad.get("TotalRunningJobs") or 0),
            "idle": int(ad.get("TotalIdleJobs") or 0),
            "held": int(ad.get("TotalHeldJobs") or 0),
        }
        s["access_points"][str(ad.get("Name"))] = counts
        for key, value in counts.items():
            s[f"jobs_{key}"] += value
    return {
        "pool": {
            "federation": fed.federation.name,
            "mode": fed.federation.mode.value,
            "collector": ads.collector,
            "collectors": sorted(str(c.get("Machine") or c.get("Name")) for c in ads.collectors),
            "nodes": sum(s.get("nodes", 0) for s in sites.values()),
            "slots": len(ads.startds),
            "schedds": len(ads.schedds),
        },
        "sites": sites,
    }


# Asks the cache itself (not through it to the origin), with short client timeouts: a dead
# host otherwise keeps the XRootD client waiting for minutes.
CACHE_HEALTH = (
    "XRD_CONNECTIONWINDOW=2 XRD_CONNECTIONRETRY=1 xrdfs {fqdn}:{port} query config version"
)


def cache_health(fed: Federation) -> dict[str, dict[str, Any]]:
    """Each site's cache, asked over root:// from the cache host: up, and its XRootD version."""
    checks = []
    for name, site in fed.sites.items():
        for cache in hosts_with(fed, Role.CACHE, name):
            port = site.cache.root_port if site.cache else 1094
            checks.append((name, cache, CACHE_HEALTH.format(fqdn=cache.fqdn, port=port)))

    def one(item: tuple[str, HostView, str]) -> tuple[str, dict[str, Any]]:
        site, cache, cmd = item
        try:
            proc = remote.run(fed, cache, cmd, timeout=30)
        except (OSError, subprocess.TimeoutExpired, EscapeFedError) as exc:
            return site, {
                "host": cache.name,
                "url": cache_url(fed, site),
                "ok": False,
                "detail": str(exc),
            }
        out = (proc.stdout or proc.stderr).strip().splitlines()
        return site, {
            "host": cache.name,
            "url": cache_url(fed, site),
            "ok": proc.returncode == 0,
            "detail": out[-1] if out else "",
        }

    if not checks:
        return {}
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        return dict(pool.map(one, checks))


def status(
    fed: Federation, wait: float = 0.0, progress: Any = None, caches: bool = True
) -> dict[str, Any]:
    """Query the federation's collector; with ``wait``, until every declared node shows up.

    With ``caches``, each site's cache is asked too (``sites.SITE.cache``).
    """
    deadline = time.monotonic() + wait
    token_dir = Path(secrets_dir(fed)) / "tokens.d"
    while True:
        ads = query_pool(collector_address(fed), token_dir)
        if fed.federation.mode is Mode.FLOCK:
            # The federation collector gets machine and submitter ads (CONDOR_VIEW_HOST), not
            # schedd ads: those come from each pool's own collector.
            schedds: dict[str, dict[str, Any]] = {}
            for pool in pool_collectors(fed):
                for ad in query_pool(pool, token_dir).schedds:
                    schedds[str(ad.get("Name"))] = ad
            ads = PoolAds(ads.collector, ads.startds, list(schedds.values()), ads.collectors)
        result = summarize(fed, ads)
        missing = [m for s in result["sites"].values() for m in s.get("missing", [])]
        if not missing or time.monotonic() >= deadline:
            if caches:
                for site, health in cache_health(fed).items():
                    result["sites"].setdefault(site, _site_record([]))["cache"] = health
            return result
        if progress:
            progress(f"status: waiting for {len(missing)} execute nodes to join the pool")
        time.sleep(3)
