"""escape-fed federation status: the federated HTCondor pool as JSON, for the ingress.

A small WSGI application (Flask; gunicorn runs ``federation_status:create_app()`` on 127.0.0.1
only) deployed by the Ansible role ``federation_status`` on the federation's monitoring host. It
queries the federation's collector(s) with the HTCondor Python bindings (``htcondor2``),
authenticating with READ-only IDTOKENS that the central managers issued to this host, and
answers ``GET /status`` with the shape of ``escape-fed status --output json`` (pool facts,
per-site counts) plus every slot, the pools and a timestamp. What the federation declares
(sites, execute nodes and their capacity, access points) comes from the JSON file the role
renders from the inventory (``ESCAPE_FED_STATUS_CONFIG``); what runs comes from the collectors.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response

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

CONFIG_PATH = Path(os.environ.get("ESCAPE_FED_STATUS_CONFIG", "/etc/escape-fed-status/config.json"))


class QueryFailed(Exception):
    """A collector did not answer."""


def load_config(path: Path = CONFIG_PATH) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _plain(ads: Any) -> list[dict[str, Any]]:
    return [
        {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in ad.items()}
        for ad in ads
    ]


def query(address: str, timeout: int) -> tuple[list[Any], list[Any], list[Any]]:
    """Startd, schedd and collector ads of the collector at ``address`` (HOST:PORT)."""
    import htcondor2 as htcondor  # type: ignore[import-not-found,import-untyped,unused-ignore]

    htcondor.param["QUERY_TIMEOUT"] = str(timeout)
    collector = htcondor.Collector(address)
    try:
        startds = collector.query(htcondor.AdTypes.Startd, projection=STARTD_ATTRS)
        schedds = collector.query(htcondor.AdTypes.Schedd, projection=SCHEDD_ATTRS)
        collectors = collector.query(htcondor.AdTypes.Collector, projection=COLLECTOR_ATTRS)
    except htcondor.HTCondorException as exc:
        raise QueryFailed(f"collector {address}: query failed: {exc}") from None
    return _plain(startds), _plain(schedds), _plain(collectors)


def _site_record(cfg_site: dict[str, Any] | None) -> dict[str, Any]:
    execute = (cfg_site or {}).get("execute", {})
    declared = {"nodes": 0, "cpus": 0, "memory_mb": 0, "gpus": 0, "disk_gb": 0}
    for capacity in execute.values():
        if capacity is None:
            continue
        declared["nodes"] += 1
        for key in ("cpus", "memory_mb", "gpus", "disk_gb"):
            declared[key] += int(capacity.get(key) or 0)
    return {
        "nodes": 0,
        "slots": 0,
        "cpus": 0,
        "memory_mb": 0,
        "gpus": 0,
        "busy": 0,
        "busy_cpus": 0,
        "missing": sorted(execute),
        "machines": [],
        "jobs_running": 0,
        "jobs_idle": 0,
        "jobs_held": 0,
        "access_points": {},
        "declared": declared,
        "slot_list": [],
    }


def summarize(
    cfg: dict[str, Any],
    collector: str,
    startds: list[dict[str, Any]],
    schedds: list[dict[str, Any]],
    collectors: list[dict[str, Any]],
) -> dict[str, Any]:
    """The shape of ``escape-fed status --output json``, plus each site's slots."""
    site_of: dict[str, str] = cfg.get("hosts", {})
    sites: dict[str, Any] = {}
    for name, cfg_site in cfg.get("sites", {}).items():
        if cfg_site.get("execute") or cfg_site.get("access_points"):
            sites[name] = _site_record(cfg_site)
    seen: set[str] = set()
    for ad in startds:
        machine = str(ad.get("Machine", ""))
        site = str(ad.get("ESCAPE_SITE") or "")
        if site not in sites:
            site = site_of.get(machine, "unknown")
            sites.setdefault(site, _site_record(None))
        s = sites[site]
        s["slots"] += 1
        partitionable_or_static = ad.get("SlotType") != "Dynamic"
        if partitionable_or_static:  # the node's capacity
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
        site = site_of.get(str(ad.get("Machine", "")), "unknown")
        s = sites.setdefault(site, _site_record(None))
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
        s["slot_list"].sort(key=lambda slot: slot["name"])
    return {
        "pool": {
            "federation": cfg.get("federation", ""),
            "mode": cfg.get("mode", ""),
            "collector": collector,
            "collectors": sorted(str(c.get("Machine") or c.get("Name")) for c in collectors),
            "nodes": sum(s["nodes"] for s in sites.values()),
            "slots": len(startds),
            "schedds": len(schedds),
        },
        "sites": sites,
    }


def federation_status(cfg: dict[str, Any]) -> dict[str, Any]:
    """Ask the collectors now: the federation collector, and in flock mode every pool's."""
    timeout = int(cfg.get("query_timeout_s", 10))
    collector = str(cfg["collector"])
    startds, schedds, collectors = query(collector, timeout)
    pools = []
    if cfg.get("mode") == "flock":
        # The federation collector gets machine and submitter ads (CONDOR_VIEW_HOST), not
        # schedd ads: those come from each pool's own collector.
        by_name: dict[str, dict[str, Any]] = {}
        for pool in cfg.get("pool_collectors", []):
            try:
                _, pool_schedds, _ = query(str(pool["collector"]), timeout)
            except QueryFailed as exc:
                pools.append({**pool, "ok": False, "detail": str(exc)})
                continue
            pools.append({**pool, "ok": True, "detail": ""})
            for ad in pool_schedds:
                by_name[str(ad.get("Name"))] = ad
        schedds = list(by_name.values())
    else:
        pools = [{**p, "ok": True, "detail": ""} for p in cfg.get("pool_collectors", [])]
    result = summarize(cfg, collector, startds, schedds, collectors)
    result["pools"] = pools
    now = time.time()
    result["generated_at"] = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
    result["generated_at_epoch"] = int(now)
    return result


class Cached:
    """The last answer, reused for ``ttl`` seconds so that bursts do not hammer the collector."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.lock = threading.Lock()
        self.at = 0.0
        self.value: dict[str, Any] | None = None

    def get(self, cfg: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if self.value is None or time.monotonic() - self.at >= self.ttl:
                self.value = federation_status(cfg)
                self.at = time.monotonic()
            return self.value


def create_app(cfg: dict[str, Any] | None = None) -> Flask:
    config = cfg if cfg is not None else load_config()
    cache = Cached(float(config.get("cache_s", 5)))
    app = Flask(__name__)

    @app.get("/status")
    def status() -> Response:
        try:
            body = cache.get(config)
        except QueryFailed as exc:
            return Response(
                json.dumps({"error": "collector_unavailable", "detail": str(exc)}) + "\n",
                status=503,
                mimetype="application/json",
            )
        return Response(
            json.dumps(body, sort_keys=True) + "\n",
            status=200,
            mimetype="application/json",
            headers={"Cache-Control": "no-store"},
        )

    return app
