"""htcondor_access_point: a schedd for local users, known to its pool by its own token."""

from __future__ import annotations

from typing import Any

import pytest

from tests.roles import _hostchecks as hc

testinfra_hosts = ["htcondor_access_point"]


def facts(host: Any) -> tuple[str, str, bool]:
    """(this host's fqdn, its pool's central manager, whether it is that central manager)."""
    hv = host.ansible.get_variables()
    fqdn = hv["escape_fed_host"]["fqdn"]
    cm = hv["escape_fed_site"]["pool_central_manager"]
    return fqdn, cm, fqdn in hc.pool_central_managers(host)


def test_schedd_runs(host: Any) -> None:
    hc.assert_condor_running(host)
    daemons = hc.config_list(host, "DAEMON_LIST")
    assert "SCHEDD" in daemons and "STARTD" not in daemons, daemons
    hc.assert_daemons_alive(host, "Master", "Schedd")


def test_security_stays_required(host: Any) -> None:
    hc.assert_security_required(host)
    hc.assert_no_wildcard_allow(host)
    hc.assert_key_and_token_dirs_root_only(host)


def test_holds_its_pool_token_and_no_signing_key(host: Any) -> None:
    _, cm, is_cm = facts(host)
    if is_cm:  # flock: this access point is its own pool's central manager
        hc.assert_holds_the_pool_key(host)
        return
    hc.assert_holds_no_signing_key(host)
    assert cm in hc.tokens(host), hc.tokens(host)


def test_global_pool_flocks_nowhere(host: Any) -> None:
    if host.ansible.get_variables()["escape_fed_federation"]["mode"] != "global-pool":
        pytest.skip("flock mode: tests/roles/test_htcondor_flock.py")
    _, cm, _ = facts(host)
    assert hc.tokens(host) == [cm]
    assert hc.config_val(host, "FLOCK_TO") is None


def test_local_users_exist_and_may_query_the_schedd(host: Any) -> None:
    for user in ("escape",):
        assert host.user(user).exists and host.user(user).shell == "/bin/bash"
        got = host.run(f"su {user} -c 'condor_q -totals'")
        assert got.rc == 0, got.stdout + got.stderr


def test_schedd_is_advertised_to_its_collector(host: Any, pytestconfig: pytest.Config) -> None:
    fqdn, cm_fqdn, _ = facts(host)
    cm = hc.inventory_host(host, cm_fqdn, pytestconfig.option.ansible_inventory)
    ads = hc.wait_for_ads(cm, "-schedd", f'Machine == "{fqdn}"', 1)
    assert len(ads) == 1, ads
