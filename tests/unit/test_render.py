"""Rendering: a valid Ansible inventory, byte-identical to the golden files, no secrets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from escape_fed.errors import BadInput
from escape_fed.model import load_federation
from escape_fed.render.inventory import MARKER, inventory_files, write_inventory
from tests.conftest import GOLDEN, LAB_FEDERATION, ROOT, SAMPLES

ANSIBLE_INVENTORY = shutil.which("ansible-inventory") or str(
    Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "ansible-inventory"
)
GOLDEN_CASES = [("lab", LAB_FEDERATION), *((p.stem, p) for p in SAMPLES)]


@pytest.mark.parametrize(("name", "source"), GOLDEN_CASES, ids=[c[0] for c in GOLDEN_CASES])
def test_render_matches_golden_files(name: str, source: Path) -> None:
    files = inventory_files(load_federation(source), source.name)
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        shutil.rmtree(golden, ignore_errors=True)
        for rel, text in files.items():
            (golden / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden / rel).write_text(text)
    expected = {str(p.relative_to(golden)): p.read_text() for p in golden.rglob("*.yml")}
    assert sorted(files) == sorted(expected), "file list differs (UPDATE_GOLDEN=1 to refresh)"
    for rel, text in files.items():
        assert text == expected[rel], f"{rel} differs from tests/golden/{name}/{rel}"


def test_render_is_deterministic(tmp_path: Path) -> None:
    fed_a = load_federation(LAB_FEDERATION)
    fed_b = load_federation(LAB_FEDERATION)
    write_inventory(fed_a, tmp_path / "a", "federation.yaml")
    write_inventory(fed_b, tmp_path / "b", "federation.yaml")
    a = {
        p.relative_to(tmp_path / "a"): p.read_bytes()
        for p in (tmp_path / "a").rglob("*")
        if p.is_file()
    }
    b = {
        p.relative_to(tmp_path / "b"): p.read_bytes()
        for p in (tmp_path / "b").rglob("*")
        if p.is_file()
    }
    assert a == b and len(a) > 10


@pytest.mark.parametrize(("name", "source"), GOLDEN_CASES, ids=[c[0] for c in GOLDEN_CASES])
def test_ansible_inventory_reads_the_rendered_tree(tmp_path: Path, name: str, source: Path) -> None:
    fed = load_federation(source)
    write_inventory(fed, tmp_path / "inv", source.name)
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(tmp_path / "ah"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "at"),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
    }
    proc = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", str(tmp_path / "inv" / "hosts.yml"), "--list"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Unable to parse" not in proc.stderr, proc.stderr
    inv = json.loads(proc.stdout)
    hostvars = inv["_meta"]["hostvars"]
    from escape_fed.model.view import hosts

    assert set(hostvars) == {h.name for h in hosts(fed)}
    for h in hosts(fed):
        hv = hostvars[h.name]
        assert hv["escape_fed_host"]["site"] == h.site
        assert hv["escape_fed_site"]["name"] == h.site  # site group_vars reach the host
        assert hv["escape_fed_federation"]["name"] == fed.federation.name
        if h.address:
            assert hv["ansible_host"] == h.address
    if name == "lab":
        assert set(inv["htcondor_execute"]["hosts"]) == {"wn-a1", "wn-a2", "wn-b1"}
        assert set(inv["site_a"]["hosts"]) == {"ap-a", "wn-a1", "wn-a2", "cache-a", "origin-a"}
        assert set(inv["xcache"]["hosts"]) == {"cache-a", "cache-b"}
        ssh_args = hostvars["cm"]["ansible_ssh_common_args"]
        assert "StrictHostKeyChecking=yes" in ssh_args  # host keys stay checked


def test_no_secret_in_the_inventory(tmp_path: Path) -> None:
    fed = load_federation(LAB_FEDERATION)
    write_inventory(fed, tmp_path / "inv")
    text = "\n".join(p.read_text() for p in (tmp_path / "inv").rglob("*.yml"))
    for needle in ("BEGIN", "PRIVATE KEY", "password", "secret:", "token:"):
        assert needle not in text
    # Only the path where deploys keep secrets, which lies outside the inventory tree.
    assert f"escape_fed_secrets_dir: /var/lib/escape-fed/secrets/{fed.federation.name}" in text


def test_render_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "inv"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(BadInput, match="not written by escape-fed render"):
        write_inventory(load_federation(LAB_FEDERATION), out)
    assert (out / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_render_refuses_the_secrets_directory(tmp_path: Path) -> None:
    fed = load_federation(LAB_FEDERATION)
    fed = fed.model_copy(
        update={
            "security": fed.security.model_copy(update={"secrets_dir": str(tmp_path / "secrets")})
        }
    )
    with pytest.raises(BadInput, match="secrets directory"):
        write_inventory(fed, tmp_path / "secrets" / "inv")
    assert not (tmp_path / "secrets").exists()


def test_rerender_replaces_the_tree_atomically(tmp_path: Path) -> None:
    fed = load_federation(LAB_FEDERATION)
    out = tmp_path / "inv"
    write_inventory(fed, out)
    (out / "host_vars" / "stale-host.yml").write_text("old: true\n")
    write_inventory(fed, out)
    assert (out / MARKER).exists()
    assert not (out / "host_vars" / "stale-host.yml").exists()  # hosts removed from the model go
    assert [p.name for p in tmp_path.iterdir()] == ["inv"]  # no staging dirs left behind
