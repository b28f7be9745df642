"""status: collector ads summarised per site against the model (the shape of --output json).

The ads here are what HTCondor's collector returns for a partitionable-slot pool; the same code
runs against the real lab collector in tests/e2e.
"""

from __future__ import annotations

from escape_fed.backends.condor import PoolAds
from escape_fed.model import load_federation
from escape_fed.ops.smoke import submit_description
from escape_fed.ops.status import collector_address, summarize
from tests.conftest import LAB_FEDERATION


def pslot(machine: str, site: str, cpus: int, mem: int) -> dict[str, object]:
    return {
        "Name": f"slot1@{machine}",
        "Machine": machine,
        "SlotType": "Partitionable",
        "State": "Unclaimed",
        "Cpus": cpus,
        "Memory": mem,
        "TotalSlotCpus": cpus,
        "TotalSlotMemory": mem,
        "TotalSlotGPUs": 0,
        "ESCAPE_SITE": site,
    }


def test_summary_counts_nodes_slots_and_busy_per_site() -> None:
    fed = load_federation(LAB_FEDERATION)
    ads = PoolAds(
        collector="10.77.1.10:9618",
        startds=[
            pslot("wn-a1.site-a.escape.lab", "site-a", 1, 1024),  # one core claimed below
            {
                "Name": "slot1_1@wn-a1.site-a.escape.lab",
                "Machine": "wn-a1.site-a.escape.lab",
                "SlotType": "Dynamic",
                "State": "Claimed",
                "Cpus": 1,
                "Memory": 64,
                "ESCAPE_SITE": "site-a",
            },
            pslot("wn-a2.site-a.escape.lab", "site-a", 1, 1024),
        ],
        schedds=[
            {
                "Name": "ap-a.site-a.escape.lab",
                "Machine": "ap-a.site-a.escape.lab",
                "TotalRunningJobs": 1,
                "TotalIdleJobs": 2,
                "TotalHeldJobs": 0,
            }
        ],
        collectors=[{"Machine": "cm.central.escape.lab"}],
    )
    data = summarize(fed, ads)
    a, b = data["sites"]["site-a"], data["sites"]["site-b"]
    assert (a["nodes"], a["slots"], a["cpus"], a["memory_mb"], a["busy"]) == (2, 3, 2, 2048, 1)
    assert a["missing"] == [] and a["jobs_running"] == 1 and a["jobs_idle"] == 2
    assert a["access_points"] == {"ap-a.site-a.escape.lab": {"running": 1, "idle": 2, "held": 0}}
    assert b["nodes"] == 0 and b["missing"] == ["wn-b1.site-b.escape.lab"]
    assert data["pool"]["nodes"] == 2 and data["pool"]["slots"] == 3
    assert "central" not in data["sites"]  # no execute nodes, no access point


def test_collector_is_reached_at_the_central_managers_address() -> None:
    assert collector_address(load_federation(LAB_FEDERATION)) == "10.77.1.10:9618"


def test_smoke_jobs_are_pinned_to_their_site() -> None:
    text = submit_description("site-b", "smoke-site-b")
    assert 'requirements = (TARGET.ESCAPE_SITE == "site-b")' in text
    assert "request_cpus = 1" in text and text.rstrip().endswith("queue")
