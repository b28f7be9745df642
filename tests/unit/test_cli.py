"""The CLI: exit codes, stdout for data and stderr for messages, --output json, stubs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import BROKEN, LAB_FEDERATION, SAMPLES
from tests.labfed import cli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return cli(*args, timeout=120)


def test_help_documents_exit_codes_and_commands() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for text in ("Exit codes", "0  ok", "1  a check", "2  bad input"):
        assert text in proc.stdout
    for command in (
        "validate",
        "render",
        "plan",
        "deploy",
        "status",
        "facilities",
        "smoke",
        "lab",
        "demo",
    ):
        assert f"  {command} " in proc.stdout, command


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("escape-fed, version ")


def test_validate_defaults_to_the_lab_federation() -> None:
    proc = run("validate")
    assert proc.returncode == 0, proc.stderr
    assert "inventories/lab/federation.yaml: valid" in proc.stdout


def test_validate_json_goes_to_stdout_only() -> None:
    proc = run("validate", str(LAB_FEDERATION), "--output", "json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["valid"] is True and data["sites"] == 3 and data["hosts"] == 11
    assert proc.stderr == ""


def test_quiet_and_verbose(tmp_path: Path) -> None:
    loud = run("-v", "render", str(LAB_FEDERATION), "--out", str(tmp_path / "a"))
    assert "valid federation 'escape-lab'" in loud.stderr and "wrote" in loud.stderr
    quiet = run("-q", "render", str(LAB_FEDERATION), "--out", str(tmp_path / "b"))
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.strip() == str(tmp_path / "b" / "hosts.yml")


def test_bad_flag_is_exit_2() -> None:
    assert run("validate", "--output", "xml").returncode == 2
    assert run("no-such-command").returncode == 2


def test_render_bad_input_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "inv"
    proc = run("render", str(BROKEN / "bad-mode.yaml"), "--out", str(out))
    assert proc.returncode == 2
    assert not out.exists()


def test_deploy_of_a_cloud_site_says_it_is_not_built_and_changes_nothing(tmp_path: Path) -> None:
    proc = run("deploy", str(SAMPLES[0]), "--site", "egi-cloud")
    assert proc.returncode == 1
    assert "egi-cloud" in proc.stderr and "cannot be deployed yet" in proc.stderr
    assert proc.stdout == ""


def test_deploy_of_an_unknown_site_is_bad_input() -> None:
    proc = run("deploy", str(LAB_FEDERATION), "--site", "site-z")
    assert proc.returncode == 2 and "--site site-z: no such site" in proc.stderr


def test_status_without_tokens_fails_clearly(tmp_path: Path) -> None:
    data = yaml.safe_load(LAB_FEDERATION.read_text())
    data["security"] = {"secrets_dir": str(tmp_path / "secrets")}
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = run("status", str(path))
    assert proc.returncode == 1
    assert "no token to read the pool" in proc.stderr and "deploy the federation" in proc.stderr


def test_smoke_refuses_an_unknown_access_point() -> None:
    proc = run("smoke", str(LAB_FEDERATION), "--access-point", "wn-a1")
    assert proc.returncode == 2 and "not an access point" in proc.stderr


@pytest.mark.parametrize("command", ["deploy", "status", "smoke", "plan", "facilities"])
def test_every_command_validates_its_file_first(command: str) -> None:
    proc = run(command, str(BROKEN / "bad-mode.yaml"))
    assert proc.returncode == 2
    assert "federation.mode" in proc.stderr


def test_facilities_text_and_json() -> None:
    text = run("facilities", str(LAB_FEDERATION))
    assert text.returncode == 0
    assert text.stdout.splitlines()[0].split()[:6] == [
        "SITE",
        "BACKEND",
        "NODES",
        "CPUS",
        "MEMORY_MB",
        "GPUS",
    ]
    data = json.loads(run("facilities", str(SAMPLES[0]), "-o", "json").stdout)
    cnaf = data["sites"]["infn-cnaf"]
    assert (cnaf["nodes"], cnaf["cpus"], cnaf["gpus"]) == (2, 128, 4)
    assert data["sites"]["desy"]["datasets"] == ["lsst-dp1", "cta-prod5"]
    assert "central" not in data["sites"]  # central services offer no batch capacity


def test_plan_text_and_json(tmp_path: Path) -> None:
    snap = tmp_path / "none.json"
    text = run("plan", str(LAB_FEDERATION), "--snapshot", str(snap))
    assert text.returncode == 0, text.stderr
    assert "site site-a" in text.stdout
    assert "+ wn-a1" in text.stdout and "HTCondor startd: 2 cpus, 2048 MB" in text.stdout
    data = json.loads(
        run("plan", str(LAB_FEDERATION), "--snapshot", str(snap), "-o", "json").stdout
    )
    assert data["counts"]["create"] == len(data["actions"]) > 0
    only_b = json.loads(
        run(
            "plan", str(LAB_FEDERATION), "--snapshot", str(snap), "--site", "site-b", "-o", "json"
        ).stdout
    )
    assert {a["site"] for a in only_b["actions"]} == {"site-b"}
    bad = run("plan", str(LAB_FEDERATION), "--snapshot", str(snap), "--site", "site-z")
    assert bad.returncode == 2 and "--site site-z: no such site" in bad.stderr
