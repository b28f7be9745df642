"""HTCondor roles on the lab federation in flock mode: one pool per site, a view collector.

Runs on the shared flock lab (tests/conftest.py: `flock_lab`, deployed once by `escape-fed
deploy` for these checks and the flock e2e tests); the first deploy is the converge checked here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import DeployedLab
from tests.roles._checks import (  # noqa: F401  (shared verify steps, collected here)
    deploy,
    test_central_manager_holds_the_only_signing_keys,
    test_central_manager_issued_the_control_machine_a_read_token,
    test_common_condor_is_running_and_enabled,
    test_common_key_and_token_directories_are_root_only,
    test_common_no_allow_list_is_a_wildcard,
    test_common_security_is_required_everywhere,
    test_common_unknown_host_cannot_read_the_collector,
    test_converge_succeeds,
    test_execute_nodes_advertise_declared_capacity_and_place,
    test_execute_nodes_never_hold_a_key_and_have_one_token,
    test_limit_to_one_site_works,
)
from tests.roles._labrun import Lab, PlaybookRun, run_job, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def lab(flock_lab: DeployedLab) -> Lab:
    data = yaml.safe_load(flock_lab.file.read_text())
    inventory = Path(flock_lab.fed.control.state_dir) / flock_lab.fed.federation.name / "inventory"
    return Lab(flock_lab.file, flock_lab.state_dir, inventory, data)


@pytest.fixture(scope="module")
def converged(flock_lab: DeployedLab) -> PlaybookRun:
    """The first deploy of the shared flock lab, as the role checks read a converge."""
    first = flock_lab.first_deploy()
    recap = flock_lab.first_recap()
    return PlaybookRun(0 if first["ok"] else 1, float(first.get("seconds", 0)), "", recap)


@pytest.fixture(scope="module")
def view_collector() -> str:
    """The federation view collector sees every pool's machines (CONDOR_VIEW_HOST)."""
    return "cm"


def test_central_manager_view_collector_runs_no_negotiator(
    lab: Lab, converged: PlaybookRun
) -> None:
    cm = lab.host("cm")
    daemons = cm.check_output("condor_config_val DAEMON_LIST").replace(",", " ").split()
    assert "COLLECTOR" in daemons and "NEGOTIATOR" not in daemons
    assert lab.group("htcondor_execute")  # the pools have execute nodes, the view has none


def test_central_manager_pools_forward_to_the_view(lab: Lab, converged: PlaybookRun) -> None:
    for ap in ("ap-a", "ap-b"):
        host = lab.host(ap)
        assert host.check_output("condor_config_val CONDOR_VIEW_HOST") == "cm.central.escape.lab"
        assert "NEGOTIATOR" in host.check_output("condor_config_val DAEMON_LIST")


def test_access_point_flocks_to_the_other_pool_with_its_token(
    lab: Lab, converged: PlaybookRun
) -> None:
    pairs = {"ap-a": "ap-b.site-b.escape.lab", "ap-b": "ap-a.site-a.escape.lab"}
    for ap, other in pairs.items():
        host = lab.host(ap)
        assert host.check_output("condor_config_val FLOCK_TO") == other
        assert other in host.file("/etc/condor/tokens.d").listdir()
        # the other pool's central manager lists this access point in FLOCK_FROM
        frm = lab.host(other.split(".")[0]).check_output("condor_config_val FLOCK_FROM")
        assert host.check_output("hostname -f") in frm


def test_access_point_job_from_site_a_flocks_to_site_b(lab: Lab, converged: PlaybookRun) -> None:
    out = run_job(lab, "ap-a", "site-b")
    assert "site=site-b" in out and "host=wn-b1.site-b.escape.lab" in out, out
    assert "cache=root://cache-b.site-b.escape.lab:1094" in out, out


def test_access_point_job_from_site_b_flocks_to_site_a(lab: Lab, converged: PlaybookRun) -> None:
    out = run_job(lab, "ap-b", "site-a")
    assert "site=site-a" in out and ".site-a.escape.lab" in out, out


def test_each_pool_binds_its_own_nodes_and_their_tokens_expire(
    lab: Lab, converged: PlaybookRun
) -> None:
    """Each pool's central manager accepts ads of its own execute nodes only for their host and
    site; the view collector binds none (it only receives forwarded ads). Node tokens carry a
    lifetime (14 days) and only the startd's and master's authorizations."""
    pools = {"ap-a": {"wn-a1": "site-a", "wn-a2": "site-a"}, "ap-b": {"wn-b1": "site-b"}}
    for cm, nodes in pools.items():
        binding = lab.host(cm).check_output("condor_config_val COLLECTOR_REQUIREMENTS")
        for node, site in nodes.items():
            fqdn = f"{node}.{site}.escape.lab"
            assert f'Machine =?= "{fqdn}"' in binding and f'ESCAPE_SITE =?= "{site}"' in binding
        others = {n for c, ns in pools.items() if c != cm for n in ns}
        assert not any(f'"{n}.' in binding for n in others), binding
        assert lab.host(cm).check_output("condor_config_val NEGOTIATOR_SLOT_CONSTRAINT")
        for node in nodes:
            listed = lab.host(node).check_output("condor_token_list")
            claims = json.loads(listed.split("Payload: ")[1].split(" File:")[0])
            assert claims["exp"] - claims["iat"] == 14 * 24 * 3600, claims
            assert sorted(claims["scope"].split()) == [
                "condor:/ADVERTISE_MASTER",
                "condor:/ADVERTISE_STARTD",
                "condor:/READ",
            ], claims
    assert lab.host("cm").run("condor_config_val COLLECTOR_REQUIREMENTS").rc != 0


@pytest.mark.destructive(order=1)
def test_central_manager_new_key_reissues_exactly_its_tokens(
    lab: Lab, converged: PlaybookRun
) -> None:
    """Replacing ap-b's signing key invalidates the tokens it signed; a re-run reissues those."""
    lab.host("ap-b").run_expect([0], "rm /etc/condor/passwords.d/POOL")
    run = deploy(lab, "--full")
    assert run["ok"], run
    # ap-b's own pool (ap-b, wn-b1), the access point flocking to it (ap-a) and the monitoring
    # host, which holds a READ token from every pool's central manager (federation status).
    holders = {"ap-a", "ap-b", "wn-b1", *lab.group("monitoring")}
    changed = {h for h, s in run["hosts"].items() if s["changed"]}
    assert changed == holders, run["hosts"]
    # pool B works again: its startd is back in its collector, and flocking from A still runs
    ok = wait_for(
        lambda: "wn-b1" in lab.host("ap-b").run("condor_status -af Name").stdout, timeout=90
    )
    assert ok
    out = run_job(lab, "ap-a", "site-b")
    assert "site=site-b" in out, out
