"""htcondor_access_point: a schedd for local users, known to its pool by its own token."""

from __future__ import annotations

import json
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


def test_iam_group_accounts_exist_and_never_log_in(host: Any) -> None:
    groups = host.ansible.get_variables()["escape_fed_iam"]["groups"]
    assert groups, "the lab model has IAM groups"
    for group in groups.values():
        account = host.user(group["account"])
        assert account.exists and account.shell == "/usr/sbin/nologin", group


def test_schedd_accepts_scitokens_from_the_federation_issuer_only(host: Any) -> None:
    iam = host.ansible.get_variables()["escape_fed_iam"]
    for level in ("READ", "WRITE"):  # the schedd takes user tokens; no other daemon does
        methods = hc.config_list(host, f"-schedd SEC_{level}_AUTHENTICATION_METHODS")
        assert methods == ["FS", "IDTOKENS", "SCITOKENS"], (level, methods)
        for daemon in ("master", "collector", "startd"):
            other = hc.config_val(host, f"-{daemon} SEC_{level}_AUTHENTICATION_METHODS") or ""
            assert "SCITOKENS" not in other, (daemon, level, other)
    for level in ("DAEMON", "ADVERTISE_SCHEDD", "ADMINISTRATOR"):  # daemons: no user tokens
        got = hc.config_val(host, f"-schedd SEC_{level}_AUTHENTICATION_METHODS") or ""
        assert "SCITOKENS" not in got, (level, got)
    assert hc.config_val(host, "SCITOKENS_SERVER_AUDIENCE") == iam["audience"]
    mapfile = host.file(hc.config_val(host, "CERTIFICATE_MAPFILE"))
    lines = [ln for ln in mapfile.content_string.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("SCITOKENS /^https:"), lines
    assert lines[0].endswith(",/ PLUGIN:*"), lines


def test_schedd_shows_a_certificate_of_the_deployment_ca(host: Any) -> None:
    crt = hc.config_val(host, "AUTH_SSL_SERVER_CERTFILE")
    key = host.file(hc.config_val(host, "AUTH_SSL_SERVER_KEYFILE"))
    assert key.user == "root" and key.mode == 0o600
    fqdn = host.ansible.get_variables()["escape_fed_host"]["fqdn"]
    ca = "/etc/escape-fed/tls/ca.crt"
    check = host.run(f"openssl verify -CAfile {ca} -verify_hostname {fqdn} {crt}")
    assert check.rc == 0, check.stdout + check.stderr


ANY = "https://wlcg.cern.ch/jwt/v1/any"


def test_each_group_plugin_accepts_its_group_only(host: Any) -> None:
    """The mapping plugins as the schedd runs them: verified claims in BEARER_TOKEN_0_*."""
    iam = host.ansible.get_variables()["escape_fed_iam"]
    groups = iam["groups"]
    names = hc.config_list(host, "SEC_SCITOKENS_PLUGIN_NAMES")
    assert len(names) == len(groups)
    # the payload HTCondor passes on stdin: our audience, a lifetime within the issuer's
    good = json.dumps({"aud": iam["audience"], "iat": 1000, "exp": 1060})
    bad = {
        "any audience": json.dumps({"aud": ANY, "iat": 1000, "exp": 1060}),
        "too long": json.dumps(
            {"aud": iam["audience"], "iat": 1000, "exp": 1001 + int(iam["token_lifetime_s"])}
        ),
        "no exp": json.dumps({"aud": iam["audience"], "iat": 1000}),
    }
    for name, (group, spec) in zip(names, groups.items(), strict=True):
        command = hc.config_val(host, f"SEC_SCITOKENS_PLUGIN_{name}_COMMAND")
        mapping = hc.config_val(host, f"SEC_SCITOKENS_PLUGIN_{name}_MAPPING")
        assert mapping == f"{spec['account']}@{hc.config_val(host, 'UID_DOMAIN')}"
        for other in groups:
            env = f"BEARER_TOKEN_0_GROUP_0=/escape/none BEARER_TOKEN_0_GROUP_1={other}"
            got = host.run(f"echo '{good}' | env -i {env} {command}")
            assert got.rc == (0 if other == group else 1), (name, other, got.rc, got.stderr)
        assert host.run(f"echo '{good}' | env -i {command}").rc == 1  # no groups at all
        env = f"BEARER_TOKEN_0_GROUP_0={group}"
        for why, payload in bad.items():
            got = host.run(f"echo '{payload}' | env -i {env} {command}")
            assert got.rc == 1, (name, why, got.rc, got.stderr)


def test_a_timer_keeps_htcondors_issuer_keys_current(host: Any) -> None:
    timer = host.service("escape-fed-jwks-refresh.timer")
    assert timer.is_enabled and timer.is_running
    assert hc.config_val(host, "SEC_SCITOKENS_CACHE") == "/var/run/condor/cache"
    run = host.run("systemctl start escape-fed-jwks-refresh.service")
    assert run.rc == 0, run.stderr
    # After a run the cache (once a token filled it) holds exactly the published key ids.
    issuer = host.ansible.get_variables()["escape_fed_iam"]["issuer"]
    assert host.run("systemctl show -p ExecStart escape-fed-jwks-refresh.service").stdout.count(
        issuer
    ), issuer
