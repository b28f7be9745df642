"""htcondor_central_manager: the pool's collector and negotiator, the only signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import testinfra  # type: ignore[import-untyped]

from tests.roles import _hostchecks as hc

testinfra_hosts = ["htcondor_central_manager"]


def hostvars_of(host: Any, name: str) -> dict[str, Any]:
    """Inventory variables of another host of the same inventory."""
    hostvars: dict[str, Any] = host.backend.ansible_runner.get_variables(name)
    return hostvars


def runs_pool(host: Any) -> bool:
    hv = host.ansible.get_variables()
    pool_cms = [p["central_manager"] for p in hv["escape_fed_pools"]]
    return bool(hv["escape_fed_host"]["fqdn"] in pool_cms)


def test_collector_and_negotiator_run(host: Any) -> None:
    hc.assert_condor_running(host)
    daemons = hc.config_list(host, "DAEMON_LIST")
    assert "COLLECTOR" in daemons, daemons
    if runs_pool(host):
        assert "NEGOTIATOR" in daemons, daemons
        hc.assert_daemons_alive(host, "Master", "Collector", "Negotiator")
    else:  # flock: the federation view collector matches no jobs
        assert "NEGOTIATOR" not in daemons, daemons
        hc.assert_daemons_alive(host, "Master", "Collector")
    assert "SCHEDD" not in daemons and "STARTD" not in daemons, daemons


def test_collector_answers_local_root(host: Any) -> None:
    fqdn = host.ansible.get_variables()["escape_fed_host"]["fqdn"]
    names = host.check_output("condor_status -collector -af Name")
    assert fqdn in names, names


def test_security_stays_required(host: Any) -> None:
    hc.assert_security_required(host)
    hc.assert_no_wildcard_allow(host)


def test_holds_the_pool_signing_key_root_only(host: Any) -> None:
    hc.assert_holds_the_pool_key(host)
    hc.assert_key_and_token_dirs_root_only(host)


def test_advertise_lists_name_the_pool_members(host: Any) -> None:
    """Execute nodes may advertise startds, access points schedds: by token identity."""
    hv = host.ansible.get_variables()
    domain = hv["escape_fed_federation"]["trust_domain"]
    startd = hc.config_val(host, "ALLOW_ADVERTISE_STARTD -expand") or ""
    schedd = hc.config_val(host, "ALLOW_ADVERTISE_SCHEDD -expand") or ""
    fqdn = hv["escape_fed_host"]["fqdn"]
    checked = 0
    for name, member in hv["escape_fed_pool_hosts"].items():
        hostvars = hostvars_of(host, name)
        if hostvars.get("escape_fed_site", {}).get("pool_central_manager") != fqdn:
            continue  # flock: a member of another pool
        if name in hv["groups"].get("htcondor_execute", []):
            assert f"{member['fqdn']}@{domain}" in startd, (name, startd)
            checked += 1
        if name in hv["groups"].get("htcondor_access_point", []):
            assert f"{member['fqdn']}@{domain}" in schedd, (name, schedd)
            checked += 1
    assert checked > 0, "no execute node or access point reports to this central manager"


def test_control_machine_reads_the_collector_with_its_token(host: Any) -> None:
    """escape-fed's control machine holds a READ token (0600, dir 0700) that this collector
    accepts: its Python bindings read the collector's own ad with it."""
    hv = host.ansible.get_variables()
    local = testinfra.get_host("local://")
    tokens = Path(hv["escape_fed_secrets_dir"]) / "tokens.d"
    d = local.file(str(tokens))
    assert d.is_directory and d.mode == 0o700, tokens
    token = local.file(str(tokens / hv["escape_fed_host"]["fqdn"]))
    assert token.is_file and token.mode == 0o600, token.path
    ads = hc.control_query(tokens, hv["ansible_host"], "Collector")
    assert len(ads) == 1 and str(ads[0]["Name"]).endswith("@" + hv["escape_fed_host"]["fqdn"]), ads


def test_a_host_without_token_cannot_read_the_collector(
    host: Any, pytestconfig: pytest.Config
) -> None:
    """The gateway has HTCondor's tools and no token: the collector tells it nothing."""
    outsider = testinfra.get_host(
        "ansible://gateway", ansible_inventory=pytestconfig.option.ansible_inventory
    )
    fqdn = host.ansible.get_variables()["escape_fed_host"]["fqdn"]
    denied = outsider.run(f"condor_status -pool {fqdn} -af Name")
    assert denied.rc != 0 or denied.stdout.strip() == "", denied.stdout
