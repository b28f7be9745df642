"""The pool summary behind ``escape-fed status`` and the gateway's status service: one code path.

Collector ads in, per-site counts out, against what the federation declares. Standard library
only, and importable on its own: the ``federation_status`` role installs this very file on the
gateway (``roles/federation_status/files/status_core.py`` is a link to it, so the escape.fed
collection and the installed package carry it), where ``federation_status.py`` imports it.

``declared`` is the federation as the service's ``config.json`` states it (``escape-fed status``
builds the same from the model, :func:`escape_fed.ops.status.declared`)::

    {"federation": NAME, "mode": "global-pool" | "flock",
     "hosts": {FQDN: SITE, ...},
     "sites": {SITE: {"execute": {FQDN: {"cpus": .., "memory_mb": .., "gpus": .., "disk_gb": ..}
                                         | None, ...},
                      "access_points": [FQDN, ...]}, ...}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The ad attributes summarize() reads: a query's projection needs at least these.
STARTD_ATTRS = [
    "Name",
    "Machine",
    "SlotType",
    "State",
    "Activity",
    "Cpus",
    "Memory",
    "GPUs",
    "TotalSlotCpus",
    "TotalSlotMemory",
    "TotalSlotGPUs",
    "ESCAPE_SITE",
]
SCHEDD_ATTRS = ["Name", "Machine", "TotalRunningJobs", "TotalIdleJobs", "TotalHeldJobs"]
COLLECTOR_ATTRS = ["Name", "Machine", "CondorVersion"]

Ad = Mapping[str, Any]


def declared_capacity(execute: Mapping[str, Mapping[str, Any] | None]) -> dict[str, int]:
    """A site's declared capacity: its execute nodes with a capacity, and their sums."""
    total = {"nodes": 0, "cpus": 0, "memory_mb": 0, "gpus": 0, "disk_gb": 0}
    for capacity in execute.values():
        if capacity is None:
            continue
        total["nodes"] += 1
        for key in ("cpus", "memory_mb", "gpus", "disk_gb"):
            total[key] += int(capacity.get(key) or 0)
    return total


def site_record(
    execute: Mapping[str, Mapping[str, Any] | None] | None = None, slots: bool = False
) -> dict[str, Any]:
    """A site's counts before any ad is seen; every declared execute node starts missing."""
    record: dict[str, Any] = {
        "nodes": 0,
        "slots": 0,
        "cpus": 0,
        "memory_mb": 0,
        "gpus": 0,
        "busy": 0,
        "busy_cpus": 0,
        "missing": sorted(execute or {}),
        "machines": [],
        "jobs_running": 0,
        "jobs_idle": 0,
        "jobs_held": 0,
        "access_points": {},
    }
    if execute is not None:
        record["declared"] = declared_capacity(execute)
    if slots:
        record["slot_list"] = []
    return record


def summarize(
    declared: Mapping[str, Any],
    collector: str,
    startds: Sequence[Ad],
    schedds: Sequence[Ad],
    collectors: Sequence[Ad],
    slots: bool = False,
) -> dict[str, Any]:
    """The JSON shape of ``escape-fed status``: pool facts and per-site counts.

    With ``slots``, each site also lists its slots (``slot_list``: the status service's view).
    """
    site_of: Mapping[str, str] = declared.get("hosts", {})
    sites: dict[str, Any] = {}
    for name, site in declared.get("sites", {}).items():
        if site.get("execute") or site.get("access_points"):
            sites[name] = site_record(site.get("execute") or {}, slots)
    seen: set[str] = set()
    for ad in startds:
        machine = str(ad.get("Machine", ""))
        name = str(ad.get("ESCAPE_SITE") or "")
        if name not in sites:
            name = site_of.get(machine, "unknown")
            sites.setdefault(name, site_record(None, slots))
        s = sites[name]
        s["slots"] += 1
        if ad.get("SlotType") != "Dynamic":  # partitionable or static: the node's capacity
            if machine not in seen:
                seen.add(machine)
                s["nodes"] += 1
                s["machines"].append(machine)
                if machine in s["missing"]:
                    s["missing"].remove(machine)
            s["cpus"] += int(ad.get("TotalSlotCpus") or ad.get("Cpus") or 0)
            s["memory_mb"] += int(ad.get("TotalSlotMemory") or ad.get("Memory") or 0)
            s["gpus"] += int(ad.get("TotalSlotGPUs") or ad.get("GPUs") or 0)
        if ad.get("State") == "Claimed":
            s["busy"] += 1
            s["busy_cpus"] += int(ad.get("Cpus") or 0)
        if slots:
            s["slot_list"].append(
                {
                    "name": str(ad.get("Name", "")),
                    "machine": machine,
                    "type": str(ad.get("SlotType") or "Static"),
                    "cpus": int(ad.get("Cpus") or 0),
                    "memory_mb": int(ad.get("Memory") or 0),
                    "gpus": int(ad.get("GPUs") or 0),
                    "state": str(ad.get("State") or ""),
                    "activity": str(ad.get("Activity") or ""),
                }
            )
    for ad in schedds:
        name = site_of.get(str(ad.get("Machine", "")), "unknown")
        s = sites.setdefault(name, site_record(None, slots))
        counts = {
            "running": int(ad.get("TotalRunningJobs") or 0),
            "idle": int(ad.get("TotalIdleJobs") or 0),
            "held": int(ad.get("TotalHeldJobs") or 0),
        }
        s["access_points"][str(ad.get("Name"))] = counts
        for key, value in counts.items():
            s[f"jobs_{key}"] += value
    for s in sites.values():
        s["machines"].sort()
        if slots:
            s["slot_list"].sort(key=lambda slot: slot["name"])
    return {
        "pool": {
            "federation": declared.get("federation", ""),
            "mode": declared.get("mode", ""),
            "collector": collector,
            "collectors": sorted(str(c.get("Machine") or c.get("Name")) for c in collectors),
            "nodes": sum(s["nodes"] for s in sites.values()),
            "slots": len(startds),
            "schedds": len(schedds),
        },
        "sites": sites,
    }
