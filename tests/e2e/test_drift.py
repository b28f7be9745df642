"""`deploy --full` on the shared global-pool lab: every host checked against what the last
converge left there, one command per host; nothing to do when nothing drifted, and the drift
named and repaired when something did (a configuration file edited on one host, a host key's
mode widened on another, a service stopped on a third).

Runs last on the lab but for the tests that take it down (marker `destructive`): it converges
the lab again and leaves it as deployed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from escape_fed.model.view import hosts
from escape_fed.ops.deploy import state_dir
from escape_fed.ops.drift import RECORD_NAME
from tests.e2e.conftest import TokenLab
from tests.labfed import cli

pytestmark = [pytest.mark.lab, pytest.mark.destructive(order=1), pytest.mark.timeout(1500)]


def _deploy(lab: TokenLab, *flags: str) -> dict[str, Any]:
    proc = cli("deploy", str(lab.file), *flags, "--output", "json", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def _on(lab: TokenLab, host: str, command: str) -> str:
    return lab.ssh(host, command).stdout


def _record(lab: TokenLab) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((state_dir(lab.fed) / RECORD_NAME).read_text())
    record: dict[str, Any] = data["hosts"]
    return record


def test_deploy_full_with_nothing_drifted_verifies_every_host_and_runs_no_role(
    token_lab: TokenLab,
) -> None:
    record_file = state_dir(token_lab.fed) / RECORD_NAME
    assert record_file.stat().st_mode & 0o777 == 0o600
    out = _deploy(token_lab, "--full")
    assert out["ok"] and out["skipped"] and out["verified"], out["drift"]
    assert out["drift"] == {} and out["changed"] == 0
    assert sorted(out["hosts"]) == sorted(h.name for h in hosts(token_lab.fed))
    # the record is about every host and holds what the roles manage (checksums, no content)
    record = _record(token_lab)
    assert sorted(record) == sorted(out["hosts"])
    assert any(p.startswith("/etc/condor/config.d/") for p in record["wn-a1"]["files"])
    assert record["wn-a1"]["services"]["condor"] == {"active": True, "enabled": True}
    assert "BEGIN" not in record_file.read_text()  # no key or certificate text


def test_deploy_full_names_each_drift_and_repairs_it(token_lab: TokenLab) -> None:
    record = _record(token_lab)
    conf = next(
        p for p in record["wn-a1"]["files"] if p.startswith("/etc/condor/config.d/4")
    )  # the execute node's own configuration, written by its role
    key = next(
        p
        for p, rec in record["cache-a"]["files"].items()
        if p.startswith("/etc/escape-fed/tls/") and p.endswith(".key")
    )
    key_mode = record["cache-a"]["files"][key]["mode"]
    before = _on(token_lab, "wn-a1", f"sha1sum {conf}").split()[0]
    assert before == record["wn-a1"]["files"][conf]["checksum"]  # the record is the host's truth

    _on(token_lab, "wn-a1", f"echo 'START = False' >> {conf}")  # a hand edit
    _on(token_lab, "cache-a", f"chmod 0644 {key}")  # a private key made world-readable
    _on(token_lab, "origin-b", "systemctl stop xrootd@origin")  # a service stopped

    out = _deploy(token_lab, "--full")
    assert out["ok"] and not out["skipped"] and not out["verified"], out
    drift = out["drift"]
    assert f"{conf}: content differs from the converge" in drift["wn-a1"], drift
    assert f"{key}: mode 0644, recorded {key_mode}" in drift["cache-a"], drift
    assert any(d.startswith("service xrootd@origin: ") for d in drift["origin-b"]), drift
    assert set(drift) == {"wn-a1", "cache-a", "origin-b"}, drift  # nothing else reported
    assert out["changed"] >= 3, out["hosts"]  # every role ran and put each back

    assert _on(token_lab, "wn-a1", f"sha1sum {conf}").split()[0] == before
    assert _on(token_lab, "cache-a", f"stat -c %a {key}").strip() == key_mode.lstrip("0")
    assert _on(token_lab, "origin-b", "systemctl is-active xrootd@origin").strip() == "active"
    # ... and the next --full finds every host as that converge left it
    again = _deploy(token_lab, "--full")
    assert again["verified"] and again["skipped"] and again["changed"] == 0, again["drift"]
