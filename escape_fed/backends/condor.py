"""Query HTCondor collectors from the control machine with HTCondor's Python bindings.

The control machine authenticates with IDTOKENS from the federation's secrets directory
(``<secrets_dir>/<federation>/tokens.d``, READ-only tokens the central managers issued to it),
with encryption and integrity required, exactly like a pool member.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from escape_fed.errors import OperationFailed

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
    "ESCAPE_RSES",
    "ESCAPE_CACHE",
    "ChildCpus",
]
SCHEDD_ATTRS = [
    "Name",
    "Machine",
    "TotalRunningJobs",
    "TotalIdleJobs",
    "TotalHeldJobs",
    "ESCAPE_SITE",
]
COLLECTOR_ATTRS = ["Name", "Machine", "CondorVersion"]


@dataclass(frozen=True)
class PoolAds:
    collector: str
    startds: list[dict[str, Any]]
    schedds: list[dict[str, Any]]
    collectors: list[dict[str, Any]]


def _client_config(token_dir: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix="escape-fed-condor-", suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write(
            "SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS\n"
            "SEC_CLIENT_AUTHENTICATION = REQUIRED\n"
            "SEC_CLIENT_ENCRYPTION = REQUIRED\n"
            "SEC_CLIENT_INTEGRITY = REQUIRED\n"
            f"SEC_TOKEN_DIRECTORY = {token_dir}\n"
            "TOOL_TIMEOUT_MULTIPLIER = 1\n"
        )
    return Path(name)


def query_pool(address: str, token_dir: Path, timeout: int = 20) -> PoolAds:
    """Startd, schedd and collector ads of the collector at ``address`` (HOST[:PORT])."""
    if not token_dir.is_dir() or not any(token_dir.iterdir()):
        raise OperationFailed(
            f"no token to read the pool with in {token_dir}: deploy the "
            "federation first (the central managers issue them)"
        )
    config = _client_config(token_dir)
    old = os.environ.get("CONDOR_CONFIG")
    os.environ["CONDOR_CONFIG"] = str(config)
    try:
        import htcondor2 as htcondor  # type: ignore[import-untyped]  # no type information

        htcondor.reload_config()
        htcondor.param["QUERY_TIMEOUT"] = str(timeout)
        collector = htcondor.Collector(address if ":" in address else f"{address}:9618")
        try:
            startds = collector.query(htcondor.AdTypes.Startd, projection=STARTD_ATTRS)
            schedds = collector.query(htcondor.AdTypes.Schedd, projection=SCHEDD_ATTRS)
            collectors = collector.query(htcondor.AdTypes.Collector, projection=COLLECTOR_ATTRS)
        except htcondor.HTCondorException as exc:
            raise OperationFailed(f"collector {address}: query failed: {exc}") from None
    finally:
        if old is None:
            os.environ.pop("CONDOR_CONFIG", None)
        else:
            os.environ["CONDOR_CONFIG"] = old
        config.unlink(missing_ok=True)

    def plain(ads: Any) -> list[dict[str, Any]]:
        return [
            {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in ad.items()}
            for ad in ads
        ]

    return PoolAds(address, plain(startds), plain(schedds), plain(collectors))
