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
)
from escape_fed.ops import status_core
from escape_fed.ops.deploy import secrets_dir


def collector_address(fed: Federation) -> str:
    """Where the control machine reaches the federation's collector."""
    cm = federation_central_manager(fed)
    if cm is None:  # the model guarantees one
        raise OperationFailed("the federation has no central manager")
    return f"{cm.address or cm.fqdn}:9618"


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


def declared(fed: Federation) -> dict[str, Any]:
    """What the federation declares, in the shape the status service reads (its config.json)."""
    sites: dict[str, Any] = {}
    for name in fed.sites:
        sites[name] = {
            "execute": {
                h.fqdn: (h.capacity.model_dump() if h.capacity is not None else None)
                for h in hosts_with(fed, Role.EXECUTE, name)
            },
            "access_points": [h.fqdn for h in hosts_with(fed, Role.ACCESS_POINT, name)],
        }
    return {
        "federation": fed.federation.name,
        "mode": fed.federation.mode.value,
        "hosts": {h.fqdn: h.site for h in hosts(fed)},
        "sites": sites,
    }


def summarize(fed: Federation, ads: PoolAds) -> dict[str, Any]:
    """The JSON shape of ``status``: pool facts and per-site counts (status_core, shared with
    the gateway's status service)."""
    return status_core.summarize(
        declared(fed), ads.collector, ads.startds, ads.schedds, ads.collectors
    )


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
                    result["sites"].setdefault(site, status_core.site_record())["cache"] = health
            return result
        if progress:
            progress(f"status: waiting for {len(missing)} execute nodes to join the pool")
        time.sleep(3)
