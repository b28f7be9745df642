"""escape-fed federation status: the federated HTCondor pool as JSON, for the ingress.

A small WSGI application (Flask; gunicorn runs ``federation_status:create_app()`` on 127.0.0.1
only) deployed by the Ansible role ``federation_status`` on the federation's monitoring host. It
queries the federation's collector(s) with the HTCondor Python bindings (``htcondor2``),
authenticating with READ-only IDTOKENS that the central managers issued to this host, and
answers ``GET /status`` with the shape of ``escape-fed status --output json`` (pool facts,
per-site counts) plus every slot, the pools and a timestamp. What the federation declares
(sites, execute nodes and their capacity, access points) comes from the JSON file the role
renders from the inventory (``ESCAPE_FED_STATUS_CONFIG``); what runs comes from the collectors.

The counting is escape-fed's own: ``status_core`` is the module ``escape-fed status`` runs
(``escape_fed/ops/status_core.py``), installed beside this file by the role.
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
from status_core import COLLECTOR_ATTRS, SCHEDD_ATTRS, STARTD_ATTRS, summarize

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
    result = summarize(cfg, collector, startds, schedds, collectors, slots=True)
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
