"""HTCondor roles on the lab federation in global-pool mode: converge, idempotence, verify.

One lab for the whole module (own state dir, prefix and supernet); every role check reuses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LAB_FEDERATION
from tests.roles._checks import (  # noqa: F401  (shared verify steps, collected here)
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
    test_second_run_changes_nothing,
)
from tests.roles._labrun import Lab, PlaybookRun, lab_fixture, run_job, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]

STATE_DIR = Path("/var/lib/escape-fed/test-roles-global")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from lab_fixture(
        tmp_path_factory.mktemp("global"), LAB_FEDERATION, STATE_DIR, "erg", "10.82.0.0/16"
    )


@pytest.fixture(scope="module")
def converged(lab: Lab) -> PlaybookRun:
    syntax = run_playbook(lab.inventory, "playbooks/site.yml", "--syntax-check")
    assert syntax.rc == 0, syntax.output
    return run_playbook(lab.inventory, "playbooks/site.yml")


@pytest.fixture(scope="module")
def view_collector() -> str:
    return "cm"


def test_access_point_job_from_site_a_runs_at_site_b(lab: Lab, converged: PlaybookRun) -> None:
    out = run_job(lab, "ap-a", "site-b")
    assert "site=site-b" in out and "host=wn-b1.site-b.escape.lab" in out, out
    assert "cache=root://cache-b.site-b.escape.lab:1094" in out, out
    assert "user=nobody" in out, out


def test_access_point_holds_one_token_and_flocks_nowhere(lab: Lab, converged: PlaybookRun) -> None:
    for name in lab.group("htcondor_access_point"):
        host = lab.host(name)
        assert host.file("/etc/condor/tokens.d").listdir() == ["cm.central.escape.lab"]
        assert host.run("condor_config_val FLOCK_TO").rc != 0  # not defined
        assert host.user("escape").exists
