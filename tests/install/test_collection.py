"""The escape.fed collection as a site admin gets it: built with ansible-galaxy from this
repository, installed into a collections path of their own, used by its full role names from a
playbook that lives nowhere near the repository."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from escape_fed import collection
from escape_fed.backends.ansible import executable
from tests.conftest import ROOT
from tests.install.conftest import clean_env

pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def collections_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection built by `make collection`'s code, installed with ansible-galaxy."""
    base = tmp_path_factory.mktemp("collection")
    assert ROOT not in base.parents, base
    tarball = collection.build(base / "dist")
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
    names = {m.name for m in members}
    assert "roles/htcondor_common/tasks/main.yml" in names, sorted(names)[:20]
    assert "playbooks/site.yml" in names
    assert not [m.name for m in members if m.issym() or m.islnk()], "links in the tarball"
    assert not [n for n in names if "/molecule/" in n], "test scenarios in the tarball"
    path = base / "collections"
    proc = subprocess.run(
        [executable("ansible-galaxy"), "collection", "install", str(tarball), "-p", str(path)],
        capture_output=True,
        text=True,
        cwd=base,
        env=_env(base, path),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (path / "ansible_collections" / "escape" / "fed" / "roles" / "tls_ca").is_dir()
    return path


def test_the_status_service_ships_escape_feds_own_status_module(collections_path: Path) -> None:
    """One code path: the role installs escape_fed/ops/status_core.py itself (a link in the
    repository, a file in the collection), and the service imports it instead of counting."""
    files = collections_path / "ansible_collections/escape/fed/roles/federation_status/files"
    package_module = ROOT / "escape_fed" / "ops" / "status_core.py"
    assert (files / "status_core.py").read_bytes() == package_module.read_bytes()
    link = ROOT / "roles" / "federation_status" / "files" / "status_core.py"
    assert link.is_symlink() and link.resolve() == package_module
    service = (files / "federation_status.py").read_text()
    assert "from status_core import" in service
    assert "def summarize" not in service and "def _site_record" not in service


def _env(base: Path, collections: Path) -> dict[str, str]:
    """Ansible with no config file, no roles path and only the temporary collections path."""
    empty = base / "no-roles"
    empty.mkdir(exist_ok=True)
    config = base / "ansible.cfg"
    config.write_text("[defaults]\n")
    return clean_env(
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_HOME=str(base / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(base / "ansible-tmp"),
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_ROLES_PATH=str(empty),
        ANSIBLE_NOCOLOR="1",
    )


def _syntax_check(tmp_path: Path, collections: Path, role: str) -> subprocess.CompletedProcess[str]:
    book = tmp_path / "play.yml"
    book.write_text(f"- hosts: localhost\n  roles:\n    - {role}\n")
    return subprocess.run(
        [executable("ansible-playbook"), "--syntax-check", str(book)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path, collections),
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("role", ["escape.fed.htcondor_common", "escape.fed.htcondor_execute"])
def test_a_three_line_playbook_outside_the_repo_uses_the_installed_collection(
    tmp_path: Path, collections_path: Path, role: str
) -> None:
    assert ROOT not in tmp_path.parents
    proc = _syntax_check(tmp_path, collections_path, role)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_role_the_collection_does_not_have_fails_the_same_check(
    tmp_path: Path, collections_path: Path
) -> None:
    """Positive control: the syntax check does resolve role names (and not only parse YAML)."""
    proc = _syntax_check(tmp_path, collections_path, "escape.fed.no_such_role")
    assert proc.returncode != 0
    assert "no_such_role" in proc.stdout + proc.stderr


def test_the_short_name_is_not_found_without_the_repository(
    tmp_path: Path, collections_path: Path
) -> None:
    """The installed collection is what answers: the repository's roles/ is not on any path."""
    proc = _syntax_check(tmp_path, collections_path, "htcondor_common")
    assert proc.returncode != 0, proc.stdout
