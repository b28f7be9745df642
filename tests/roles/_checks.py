"""Verify steps of the pytest lab driver, over every HTCondor host of a lab.

Imported by test_htcondor_flock.py (global-pool mode is covered by the molecule scenarios,
test_molecule.py). A module importing these defines the fixtures `lab` (a booted lab with its
inventory) and `converged` (the first run of playbooks/site.yml on it). The per-host checks
live in _hostchecks.py, shared with the molecule scenarios' testinfra tests.
"""

from __future__ import annotations

import json
from typing import Any

from tests.labfed import cli
from tests.roles import _hostchecks as hc
from tests.roles._labrun import Lab, PlaybookRun, wait_for

HTCONDOR_GROUPS = ("htcondor_central_manager", "htcondor_access_point", "htcondor_execute")


def htcondor_hosts(lab: Lab) -> list[str]:
    return sorted({h for g in HTCONDOR_GROUPS for h in lab.group(g)})


def test_converge_succeeds(converged: PlaybookRun) -> None:
    assert converged.rc == 0, converged.output[-6000:]
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in converged.recap.values())
    assert converged.changed(), "the first converge changed nothing: it was not a first run"
    print(f"\nfirst converge: {converged.seconds:.1f} s")


# A second run changing nothing is test_federation.py's test_a_second_deploy_changes_nothing
# (`deploy --converge`, every role) on the same shared lab.


def test_limit_to_one_site_works(lab: Lab, converged: PlaybookRun) -> None:
    proc = deploy(lab, "--site", "site-a")
    assert proc["ok"], proc
    assert set(proc["hosts"]) <= set(lab.group("site_a")), proc["hosts"]
    assert set(lab.group("site_a")) <= set(proc["hosts"])  # every host of the site, no other
    assert proc["changed"] == 0, proc["hosts"]


# --- htcondor_common ---------------------------------------------------------------------


def test_common_condor_is_running_and_enabled(lab: Lab, converged: PlaybookRun) -> None:
    for name in htcondor_hosts(lab):
        hc.assert_condor_running(lab.host(name))


def test_common_security_is_required_everywhere(lab: Lab, converged: PlaybookRun) -> None:
    for name in htcondor_hosts(lab):
        hc.assert_security_required(lab.host(name))


def test_common_no_allow_list_is_a_wildcard(lab: Lab, converged: PlaybookRun) -> None:
    for name in htcondor_hosts(lab):
        hc.assert_no_wildcard_allow(lab.host(name))


def test_common_key_and_token_directories_are_root_only(lab: Lab, converged: PlaybookRun) -> None:
    for name in htcondor_hosts(lab):
        hc.assert_key_and_token_dirs_root_only(lab.host(name))


def test_common_unknown_host_cannot_read_the_collector(lab: Lab, converged: PlaybookRun) -> None:
    cm = lab.group("htcondor_central_manager")[0]
    fqdn = lab.hostvars(cm)["escape_fed_host"]["fqdn"]  # type: ignore[index]
    outsider = lab.host("gateway")  # has HTCondor's tools, no token of this pool
    denied = outsider.run(f"condor_status -pool {fqdn} -any -af Name")
    assert denied.rc != 0, denied.stdout
    assert denied.stdout.strip() == "", denied.stdout
    assert "AUTHENTICATE" in denied.stderr or "authenticat" in denied.stderr.lower(), denied.stderr
    # Positive twin: the same query from a host of the pool, holding its token, is answered.
    member = lab.group("htcondor_access_point")[0]
    allowed = lab.host(member).run(f"condor_status -pool {fqdn} -any -af Name")
    assert allowed.rc == 0 and allowed.stdout.strip(), allowed.stderr


# --- htcondor_central_manager ------------------------------------------------------------


def test_central_manager_holds_the_only_signing_keys(lab: Lab, converged: PlaybookRun) -> None:
    cms = set(lab.group("htcondor_central_manager"))
    for name in htcondor_hosts(lab):
        if name in cms:
            hc.assert_holds_the_pool_key(lab.host(name))
        else:
            hc.assert_holds_no_signing_key(lab.host(name))


def test_central_manager_issued_the_control_machine_a_read_token(
    lab: Lab, converged: PlaybookRun
) -> None:
    tokens = lab.secrets_dir / "tokens.d"
    assert tokens.is_dir() and (tokens.stat().st_mode & 0o777) == 0o700
    pools = {
        lab.hostvars(h)["escape_fed_host"]["fqdn"]  # type: ignore[index]
        for h in lab.group("htcondor_central_manager")
    }
    assert {p.name for p in tokens.iterdir()} == pools
    for p in tokens.iterdir():
        assert (p.stat().st_mode & 0o777) == 0o600, p


def collector_query(lab: Lab, cm: str, constraint: str = "true") -> list[dict[str, object]]:
    """Query a collector from the control machine with the Python bindings and its READ token."""
    return hc.control_query(lab.secrets_dir / "tokens.d", lab.address(cm), "Startd", constraint)


# --- htcondor_execute --------------------------------------------------------------------


def test_execute_nodes_advertise_declared_capacity_and_place(
    lab: Lab, converged: PlaybookRun, view_collector: str
) -> None:
    def ads() -> dict[str, dict[str, object]]:
        return {str(a["Name"]): a for a in collector_query(lab, view_collector)}

    expected = lab.group("htcondor_execute")

    def complete() -> dict[str, dict[str, object]]:
        found = ads()
        return found if len(found) == len(expected) else {}

    got = wait_for(complete, timeout=90)
    assert len(got) == len(expected), got
    for name in expected:
        hv = lab.hostvars(name)["escape_fed_host"]  # type: ignore[index]
        site = hv["site"]
        sv = lab.site(str(site))
        ad = got[f"slot1@{hv['fqdn']}"]
        assert ad["Cpus"] == hv["capacity"]["cpus"]
        assert ad["Memory"] == hv["capacity"]["memory_mb"]
        assert ad["ESCAPE_SITE"] == site
        assert ad["ESCAPE_CACHE"] == sv["cache"]["root_url"]
        assert ad["ESCAPE_RSES"] == sv["storage"]["rse"]


def test_execute_nodes_never_hold_a_key_and_have_one_token(
    lab: Lab, converged: PlaybookRun
) -> None:
    for name in lab.group("htcondor_execute"):
        host = lab.host(name)
        hc.assert_holds_no_signing_key(host)
        tokens = hc.tokens(host)
        assert len(tokens) == 1, (name, tokens)
        # lab: no per-job cgroups (read-only controllers); an empty value reads as undefined
        assert host.run("condor_config_val BASE_CGROUP").stdout.strip() == ""


def deploy(lab: Lab, *args: str) -> dict[str, Any]:
    """`escape-fed deploy FED ARGS --output json` on the lab, as a site admin runs it."""
    proc = cli("deploy", str(lab.federation), *args, "--output", "json", timeout=1200)
    assert proc.stdout, proc.stderr[-4000:]
    data: dict[str, Any] = json.loads(proc.stdout)
    return data
