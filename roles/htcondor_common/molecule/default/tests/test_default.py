"""htcondor_common on every HTCondor host: condor runs closed, before any role adds to it.

Valid in any later state too: role plays only add daemons, identities, keys and tokens.
"""

from __future__ import annotations

from typing import Any

from tests.roles import _hostchecks as hc

testinfra_hosts = ["htcondor"]


def test_condor_is_active_and_enabled(host: Any) -> None:
    hc.assert_condor_running(host)
    hc.assert_daemons_alive(host, "Master")


def test_every_connection_is_authenticated_encrypted_and_checked(host: Any) -> None:
    hc.assert_security_required(host)


def test_no_allow_list_is_a_wildcard(host: Any) -> None:
    hc.assert_no_wildcard_allow(host)


def test_tokens_are_fetched_or_requested_never(host: Any) -> None:
    assert hc.config_val(host, "SEC_ENABLE_TOKEN_REQUEST").lower() == "false"  # type: ignore[union-attr]
    assert hc.config_val(host, "SEC_ENABLE_TOKEN_FETCH").lower() == "false"  # type: ignore[union-attr]


def test_pool_is_the_one_the_model_names(host: Any) -> None:
    hv = host.ansible.get_variables()
    fed = hv["escape_fed_federation"]
    assert hc.config_val(host, "CONDOR_HOST") == hv["escape_fed_site"]["pool_central_manager"]
    assert hc.config_val(host, "UID_DOMAIN") in (
        fed["domain"],
        hc.config_val(host, "FULL_HOSTNAME"),
    )
    if fed["mode"] == "global-pool":
        assert hc.config_val(host, "TRUST_DOMAIN") == fed["trust_domain"]


def test_key_and_token_directories_are_root_only(host: Any) -> None:
    hc.assert_key_and_token_dirs_root_only(host)


def test_only_central_managers_may_hold_a_signing_key(host: Any) -> None:
    if "htcondor_central_manager" not in host.ansible.get_variables()["group_names"]:
        hc.assert_holds_no_signing_key(host)
