"""plan: what a deploy would create, change or remove, compared with what was applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from escape_fed.errors import BadInput
from escape_fed.model import load_federation, parse_federation
from escape_fed.ops.plan import desired, load_snapshot, plan, save_snapshot
from tests.conftest import LAB_FEDERATION, SAMPLES


def test_first_plan_creates_everything() -> None:
    fed = load_federation(LAB_FEDERATION)
    p = plan(fed, load_snapshot(Path("/nonexistent/applied.json")))
    counts = p.counts()
    assert counts["create"] == len(p.actions) and counts["keep"] == 0
    comps = {(a.host, a.component) for a in p.actions}
    assert ("cm", "htcondor-central-manager") in comps
    assert ("wn-b1", "htcondor-execute") in comps
    assert ("cache-a", "xcache") in comps and ("origin-b", "xrootd-origin") in comps
    # Execute nodes get their own token; none gets a pool signing key.
    assert ("wn-a1", "idtoken") in comps


def test_plan_after_deploy_keeps_everything(tmp_path: Path) -> None:
    fed = load_federation(LAB_FEDERATION)
    snap = tmp_path / "applied.json"
    save_snapshot(fed, snap)
    p = plan(fed, load_snapshot(snap))
    assert p.counts() == {"create": 0, "change": 0, "keep": len(p.actions), "remove": 0}


def test_plan_shows_changes_and_removals(tmp_path: Path) -> None:
    data = yaml.safe_load(LAB_FEDERATION.read_text())
    snap = tmp_path / "applied.json"
    save_snapshot(parse_federation(data), snap)
    data["sites"]["site-a"]["hosts"]["wn-a1"]["capacity"]["cpus"] = 4
    del data["sites"]["site-a"]["hosts"]["wn-a2"]
    data["sites"]["site-b"]["hosts"]["wn-b2"] = {
        "roles": ["execute"],
        "capacity": {"cpus": 1, "memory_mb": 512},
    }
    p = plan(parse_federation(data), load_snapshot(snap))
    by = {(a.host, a.component): a for a in p.actions}
    change = by[("wn-a1", "htcondor-execute")]
    assert change.action == "change" and change.changed == ("cpus",)
    assert by[("wn-a2", "htcondor-execute")].action == "remove"
    assert by[("wn-b2", "htcondor-execute")].action == "create"
    assert by[("cm", "htcondor-central-manager")].action == "keep"


def test_flock_access_points_flock_to_pools_that_run_jobs() -> None:
    fed = load_federation(SAMPLES[0])
    ap = desired(fed)["cnaf-ap"]["components"]["htcondor-access-point"]
    assert ap["flock_to"] == sorted(
        ["desy-cm.desy.escape.example.org", "egi-cm.egi-cloud.escape.example.org"]
    )
    cm = desired(fed)["cnaf-cm"]["components"]["htcondor-central-manager"]
    assert cm["view_host"] == "collector.escape.example.org"  # one view of every pool


def test_a_broken_snapshot_is_bad_input(tmp_path: Path) -> None:
    snap = tmp_path / "applied.json"
    snap.write_text("{not json")
    with pytest.raises(BadInput, match="not a deploy snapshot"):
        load_snapshot(snap)
    snap.write_text(json.dumps({"federation": "x"}))
    with pytest.raises(BadInput, match="hosts: missing"):
        load_snapshot(snap)


def test_root_without_tls_is_a_plan_warning(tmp_path: Path) -> None:
    """TLS on root:// is the default; a site that turns it off sees it in every plan."""
    data = yaml.safe_load(LAB_FEDERATION.read_text())
    snap = tmp_path / "applied.json"
    save_snapshot(parse_federation(data), snap)
    secure = plan(parse_federation(data), load_snapshot(snap))
    assert secure.warnings() == [] and secure.as_dict()["warnings"] == []
    assert desired(parse_federation(data))["origin-a"]["components"]["xrootd-origin"][
        "tls_required"
    ]
    data["sites"]["site-a"]["storage"]["tls_required"] = False
    p = plan(parse_federation(data), load_snapshot(snap))
    by = {(a.host, a.component): a for a in p.actions}
    for host, comp in (("origin-a", "xrootd-origin"), ("cache-a", "xcache")):
        assert by[(host, comp)].action == "change" and by[(host, comp)].changed == ("tls_required",)
        assert "WARNING: root:// without TLS allowed (storage.tls_required: false)" in (
            by[(host, comp)].summary
        )
    assert [w.split(":")[0] for w in p.warnings()] == [
        "site-a/cache-a xcache",
        "site-a/origin-a xrootd-origin",
    ]
    assert by[("origin-b", "xrootd-origin")].action == "keep"  # site-b keeps TLS required
