"""The README's main command (demo) on the lab federation itself, through the CLI, for real.

The federation file is the lab's own (inventories/lab/federation.yaml) with its state moved
aside (tests/labfed.py), so a developer's running lab is never touched. Needs root.
demo = lab up, Ansible reaches every host, deploy, every node joins, a smoke job per site.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from escape_fed.lab import lab_leftovers
from escape_fed.model import load_federation
from escape_fed.model.view import hosts
from tests.conftest import LAB_FEDERATION
from tests.labfed import cli, lab_copy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

PREFIX = "efe"
STATE_DIR = Path("/var/lib/escape-fed/test-demo/lab")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the lab tier needs root")
    path = lab_copy(LAB_FEDERATION, "demo", PREFIX, "10.78.0.0/16", tmp_path_factory.mktemp("fed"))
    cli("lab", "down", str(path))  # leftovers of a killed earlier run
    yield path
    cli("lab", "down", str(path))


@pytest.fixture(scope="module")
def demo(federation: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    home = tmp_path_factory.mktemp("home")
    proc = cli("demo", str(federation), "--output", "json", home=home)
    assert proc.returncode == 0, proc.stderr
    assert list(home.iterdir()) == [], "an Ansible run left files in $HOME"
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_demo_brings_up_and_reaches_every_host_of_the_lab_federation(
    federation: Path, demo: dict[str, object]
) -> None:
    fed = load_federation(federation)
    names = {h.name for h in hosts(fed)}
    assert demo["ok"] is True
    assert demo["reachable"] == dict.fromkeys(sorted(names), True)
    lab = demo["lab"]
    assert isinstance(lab, list)
    assert {row["host"] for row in lab} == names
    assert all(row["state"] == "running" for row in lab)


def test_every_host_answers_with_its_own_name_and_address(
    federation: Path, demo: dict[str, object]
) -> None:
    fed = load_federation(federation)
    for h in hosts(fed):
        proc = cli(
            "lab",
            "ssh",
            "-f",
            str(federation),
            h.name,
            "--",
            "hostname -f; ip -4 -o addr show eth0",
        )  # ssh runs it as one command line
        assert proc.returncode == 0, proc.stderr
        fqdn, addr = proc.stdout.splitlines()[:2]
        assert fqdn == h.fqdn
        assert f" {h.address}/24 " in addr


def test_hosts_resolve_each_other_by_name_across_sites(
    federation: Path, demo: dict[str, object]
) -> None:
    proc = cli(
        "lab",
        "ssh",
        "-f",
        str(federation),
        "ap-a",
        "--",
        "ping",
        "-c1",
        "-W2",
        "wn-b1.site-b.escape.lab",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "10.78.3.11" in proc.stdout


def test_lab_status_json(federation: Path, demo: dict[str, object]) -> None:
    proc = cli("lab", "status", str(federation), "--output", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["site"] for r in rows} == {"central", "site-a", "site-b"}
    assert all(isinstance(r["memory_mib"], (int, float)) for r in rows)


def test_lab_up_again_is_a_no_op(federation: Path, demo: dict[str, object]) -> None:
    before = {
        r["host"]: r["pid"]
        for r in json.loads(cli("lab", "status", str(federation), "-o", "json").stdout)
    }
    proc = cli("lab", "up", str(federation), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    after = {r["host"]: r["pid"] for r in json.loads(proc.stdout)}
    assert after == before


def test_down_twice_leaves_nothing(federation: Path, demo: dict[str, object]) -> None:
    assert cli("lab", "down", str(federation)).returncode == 0
    assert cli("lab", "down", str(federation)).returncode == 0
    left = lab_leftovers(PREFIX, STATE_DIR)
    assert all(not v for v in left.values()), left
    status = cli("lab", "status", str(federation), "-o", "json")
    assert status.returncode == 0
    assert all(r["state"] != "running" for r in json.loads(status.stdout))
