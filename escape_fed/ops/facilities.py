"""What each site offers to scientists: capacity, storage, cache, datasets, batch entry."""

from __future__ import annotations

from typing import Any

from escape_fed.model.schema import Federation, Role
from escape_fed.model.view import cache_url, datasets_at, hosts_with, site_capacity


def facilities(fed: Federation) -> dict[str, Any]:
    """Declared facilities per site (from the model; ``status`` shows the live pool)."""
    sites: dict[str, Any] = {}
    for name, site in fed.sites.items():
        cap = site_capacity(fed, name)
        if not cap["nodes"] and site.storage is None:
            continue  # central services only: nothing to offer jobs
        sites[name] = {
            "backend": site.backend.value,
            "description": site.description,
            **cap,
            "rse": site.storage.rse if site.storage else None,
            "cache": cache_url(fed, name),
            "datasets": datasets_at(fed, name),
            "access_points": [h.fqdn for h in hosts_with(fed, Role.ACCESS_POINT, name)],
        }
    return {"federation": fed.federation.name, "mode": fed.federation.mode.value, "sites": sites}
