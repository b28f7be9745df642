"""htcondor_execute: a startd with the model's capacity and place, one token, no signing key."""

from __future__ import annotations

from typing import Any

import pytest

from tests.roles import _hostchecks as hc

testinfra_hosts = ["htcondor_execute"]


def test_startd_runs(host: Any) -> None:
    hc.assert_condor_running(host)
    daemons = hc.config_list(host, "DAEMON_LIST")
    assert "STARTD" in daemons, daemons
    assert not {"COLLECTOR", "NEGOTIATOR", "SCHEDD"} & set(daemons), daemons
    hc.assert_daemons_alive(host, "Master", "Startd")


def test_security_stays_required(host: Any) -> None:
    hc.assert_security_required(host)
    hc.assert_no_wildcard_allow(host)
    hc.assert_key_and_token_dirs_root_only(host)


def test_never_holds_a_signing_key_and_holds_one_token(host: Any) -> None:
    hc.assert_holds_no_signing_key(host)
    cm = host.ansible.get_variables()["escape_fed_site"]["pool_central_manager"]
    assert hc.tokens(host) == [cm]


def test_slots_have_the_capacity_of_the_model(host: Any) -> None:
    capacity = host.ansible.get_variables()["escape_fed_host"]["capacity"]
    assert hc.config_val(host, "NUM_CPUS") == str(capacity["cpus"])
    assert hc.config_val(host, "MEMORY") == str(capacity["memory_mb"])


def test_startd_advertises_its_site_and_cache(host: Any) -> None:
    site = host.ansible.get_variables()["escape_fed_site"]
    attrs = hc.config_list(host, "STARTD_ATTRS")
    assert {"ESCAPE_SITE", "ESCAPE_CACHE", "ESCAPE_RSES"} <= set(attrs), attrs
    assert hc.config_val(host, "ESCAPE_SITE") == f'"{site["name"]}"'
    assert hc.config_val(host, "ESCAPE_CACHE") == f'"{site["cache"]["root_url"]}"'


def test_lab_nodes_run_without_per_job_cgroups(host: Any) -> None:
    if host.ansible.get_variables()["escape_fed_site"]["backend"] != "lab":
        pytest.skip("cgroups stay on outside the lab")
    # an empty value reads as undefined: no per-job cgroups (the lab's controllers are read-only)
    assert (hc.config_val(host, "BASE_CGROUP") or "") == ""


def test_collector_has_the_node_with_its_capacity_and_place(
    host: Any, pytestconfig: pytest.Config
) -> None:
    hv = host.ansible.get_variables()
    fqdn, site = hv["escape_fed_host"]["fqdn"], hv["escape_fed_site"]
    cm = hc.inventory_host(
        host, site["pool_central_manager"], pytestconfig.option.ansible_inventory
    )
    ads = hc.wait_for_ads(cm, "", f'Name == "slot1@{fqdn}"', 1)
    assert len(ads) == 1, ads
    ad = ads[0]
    assert ad["Cpus"] == hv["escape_fed_host"]["capacity"]["cpus"], ad
    assert ad["Memory"] == hv["escape_fed_host"]["capacity"]["memory_mb"], ad
    assert ad["ESCAPE_SITE"] == site["name"], ad
    assert ad["ESCAPE_CACHE"] == site["cache"]["root_url"], ad
    assert ad["ESCAPE_RSES"] == site["storage"]["rse"], ad


def test_group_accounts_run_as_themselves_and_everyone_else_as_nobody(host: Any) -> None:
    groups = host.ansible.get_variables()["escape_fed_iam"]["groups"]
    accounts = sorted({g["account"] for g in groups.values()})
    for account in accounts:
        assert host.user(account).exists, account
    assert hc.config_val(host, "TRUST_UID_DOMAIN") == "True"
    assert (
        hc.config_val(host, "UID_DOMAIN")
        == (host.ansible.get_variables()["escape_fed_federation"]["domain"])
    )
    policy = hc.config_val(host, "STARTER_ALLOW_RUNAS_OWNER")
    for owner in [*accounts, "escape", "root"]:
        got = host.run(
            f"classad_eval 'Owner = \"{owner}\"' '{policy.replace('TARGET.', 'MY.')}' -quiet"
        )
        assert got.rc == 0, got.stderr
        verdict = got.stdout.strip().splitlines()[-1]
        assert verdict == ("true" if owner in accounts else "false"), (owner, got.stdout)
