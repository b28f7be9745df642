"""Verify steps shared by both federation modes (imported by each lab test module).

Each module defines the fixtures `lab` (a booted lab with its inventory) and `converged`
(the first run of playbooks/site.yml on it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from tests.roles._labrun import Lab, PlaybookRun, run_playbook, wait_for

HTCONDOR_GROUPS = ("htcondor_central_manager", "htcondor_access_point", "htcondor_execute")


def htcondor_hosts(lab: Lab) -> list[str]:
    return sorted({h for g in HTCONDOR_GROUPS for h in lab.group(g)})


def test_converge_succeeds(converged: PlaybookRun) -> None:
    assert converged.rc == 0, converged.output[-6000:]
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in converged.recap.values())
    print(f"\nfirst converge: {converged.seconds:.1f} s")


def test_second_run_changes_nothing(lab: Lab, converged: PlaybookRun) -> None:
    again = run_playbook(lab.inventory, "playbooks/site.yml")
    assert again.rc == 0, again.output[-6000:]
    assert again.changed() == {}, again.output[-6000:]
    print(f"\nidempotent re-run: {again.seconds:.1f} s")


def test_limit_to_one_site_works(lab: Lab, converged: PlaybookRun) -> None:
    run = run_playbook(lab.inventory, "playbooks/site.yml", "--limit", "site_a")
    assert run.rc == 0, run.output[-6000:]
    assert set(run.recap) <= set(lab.group("site_a"))
    assert run.changed() == {}, run.output[-6000:]


# --- htcondor_common ---------------------------------------------------------------------


def test_common_condor_is_running_and_enabled(lab: Lab, converged: PlaybookRun) -> None:
    for name in htcondor_hosts(lab):
        service = lab.host(name).service("condor")
        assert service.is_running, name
        assert service.is_enabled, name


def test_common_security_is_required_everywhere(lab: Lab, converged: PlaybookRun) -> None:
    knobs = [
        "SEC_DEFAULT_AUTHENTICATION",
        "SEC_DEFAULT_ENCRYPTION",
        "SEC_DEFAULT_INTEGRITY",
        "SEC_READ_AUTHENTICATION",
        "SEC_READ_ENCRYPTION",
        "SEC_READ_INTEGRITY",
    ]
    for name in htcondor_hosts(lab):
        host = lab.host(name)
        values = host.check_output("condor_config_val " + " ".join(knobs)).split()
        assert [v.upper() for v in values] == ["REQUIRED"] * len(knobs), (name, values)
        methods = host.check_output("condor_config_val SEC_DEFAULT_AUTHENTICATION_METHODS")
        assert methods.replace(" ", "") == "FS,IDTOKENS", (name, methods)


def test_common_no_allow_list_is_a_wildcard(lab: Lab, converged: PlaybookRun) -> None:
    for name in htcondor_hosts(lab):
        host = lab.host(name)
        found = host.run(r"condor_config_val -dump | grep -E '^ALLOW_.* = \*'")
        assert found.rc == 1 and found.stdout == "", (name, found.stdout)
        # expanded values too: no entry of any ALLOW list is a bare '*'
        dump = host.check_output("condor_config_val -dump -expand | grep -E '^ALLOW_'")
        for line in dump.splitlines():
            key, _, value = line.partition(" = ")
            entries = value.replace(",", " ").split()
            assert "*" not in entries, (name, line)
            if key.startswith(("ALLOW_READ", "ALLOW_WRITE", "ALLOW_DAEMON", "ALLOW_ADVERTISE")):
                assert all("@" in e for e in entries), (name, line)


def test_common_key_and_token_directories_are_root_only(lab: Lab, converged: PlaybookRun) -> None:
    for name in htcondor_hosts(lab):
        host = lab.host(name)
        for d in ("/etc/condor/passwords.d", "/etc/condor/tokens.d"):
            f = host.file(d)
            assert f.is_directory and f.user == "root" and f.mode == 0o700, (name, d)
        for token in host.file("/etc/condor/tokens.d").listdir():
            f = host.file(f"/etc/condor/tokens.d/{token}")
            assert f.user == "root" and f.mode == 0o600, (name, token)


def test_common_unknown_host_cannot_read_the_collector(lab: Lab, converged: PlaybookRun) -> None:
    cm = lab.group("htcondor_central_manager")[0]
    fqdn = lab.hostvars(cm)["escape_fed_host"]["fqdn"]  # type: ignore[index]
    outsider = lab.host("gateway")  # has HTCondor's tools, no token
    denied = outsider.run(f"condor_status -pool {fqdn} -af Name")
    assert denied.rc != 0 or denied.stdout.strip() == "", denied.stdout


# --- htcondor_central_manager ------------------------------------------------------------


def test_central_manager_holds_the_only_signing_keys(lab: Lab, converged: PlaybookRun) -> None:
    cms = set(lab.group("htcondor_central_manager"))
    for name in htcondor_hosts(lab):
        host = lab.host(name)
        keys = host.file("/etc/condor/passwords.d").listdir()
        if name in cms:
            assert keys == ["POOL"], (name, keys)
            key = host.file("/etc/condor/passwords.d/POOL")
            assert key.user == "root" and key.mode == 0o600 and key.size >= 32
        else:
            assert keys == [], f"{name} holds a signing key: {keys}"


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
    pytest.importorskip("htcondor")
    script = textwrap.dedent(
        """
        import json, os, sys
        import htcondor
        ads = htcondor.Collector(sys.argv[1]).query(
            htcondor.AdTypes.Startd, constraint=sys.argv[2],
            projection=["Name", "Cpus", "Memory", "ESCAPE_SITE", "ESCAPE_CACHE", "ESCAPE_RSES"])
        print(json.dumps([{k: ad.get(k) for k in ad.keys()} for ad in ads]))
        """
    )
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as cfg:
        cfg.write(
            f"SEC_TOKEN_DIRECTORY = {lab.secrets_dir / 'tokens.d'}\n"
            "SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS\n"
            "SEC_CLIENT_AUTHENTICATION = REQUIRED\n"
            "SEC_CLIENT_ENCRYPTION = REQUIRED\n"
            "SEC_CLIENT_INTEGRITY = REQUIRED\n"
        )
        cfg.flush()
        proc = subprocess.run(
            [sys.executable, "-c", script, lab.address(cm), constraint],
            capture_output=True,
            text=True,
            env={**os.environ, "CONDOR_CONFIG": cfg.name},
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data: list[dict[str, object]] = json.loads(proc.stdout)
    return data


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
        assert host.file("/etc/condor/passwords.d").listdir() == []
        tokens = host.file("/etc/condor/tokens.d").listdir()
        assert len(tokens) == 1, (name, tokens)
        # lab: no per-job cgroups (read-only controllers); an empty value reads as undefined
        assert host.run("condor_config_val BASE_CGROUP").stdout.strip() == ""
