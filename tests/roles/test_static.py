"""Fast checks of the Ansible roles and playbooks (no lab): lint, syntax, specs, conventions."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from escape_fed.backends.ansible import ansible_env, executable
from escape_fed.model import load_federation
from escape_fed.render.inventory import write_inventory
from tests.conftest import LAB_FEDERATION, ROOT

ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
PLAYBOOKS = sorted(f"playbooks/{p.name}" for p in (ROOT / "playbooks").glob("*.yml"))


def test_ansible_lint_production_profile_passes() -> None:
    lint = shutil.which("ansible-lint") or executable("ansible-lint")
    with ansible_env() as env:
        proc = subprocess.run(
            [lint, "--offline", "roles/", "playbooks/"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=300,
            check=False,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "Profile 'production' was required, and it passed" in out, out[-2000:]


@pytest.mark.parametrize("source", ["federation.yaml", "federation-flock.yaml"])
@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbooks_pass_syntax_check_on_a_rendered_inventory(
    tmp_path: Path, source: str, playbook: str
) -> None:
    fed = load_federation(LAB_FEDERATION.parent / source)
    write_inventory(fed, tmp_path / "inventory", source)
    with ansible_env() as env:
        proc = subprocess.run(
            [
                executable("ansible-playbook"),
                "-i",
                str(tmp_path / "inventory"),
                playbook,
                "--syntax-check",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_match_defaults(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    documented: set[str] = set()
    for entry, spec in specs.items():
        options = spec.get("options", {})
        for name, option in options.items():
            assert option.get("description"), f"{role.name}:{entry}:{name} has no description"
            if not option.get("required"):
                assert name in defaults, f"{role.name}:{entry}:{name} is not in defaults"
        documented |= set(options)
    assert set(defaults) <= documented, set(defaults) - documented
    assert all(name.startswith(role.name + "_") for name in defaults), role.name


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_commented(role: Path) -> None:
    """Each default, or each run of related defaults written together, has a comment above it."""
    lines = (role / "defaults" / "main.yml").read_text().splitlines()
    keys = 0
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+:", line):
            keys += 1
            above = lines[i - 1] if i else ""
            covered = above.startswith("#") or re.match(r"^[a-z_]+:", above)
            assert covered, f"{role.name}: {line} has no comment above it"
    assert keys, f"{role.name}: defaults/main.yml has no variables"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_layout(role: Path) -> None:
    assert (role / "tasks" / "preflight.yml").exists()
    main = yaml.safe_load((role / "tasks" / "main.yml").read_text())
    assert main[0]["ansible.builtin.import_tasks"] == "preflight.yml", "preflight must come first"
    # Every template says it is managed, in its format's comment syntax; a format with none
    # (JSON, XRootD keytabs) starts with a Jinja comment saying so instead.
    for template in (role / "templates").rglob("*.j2"):
        first = template.read_text().splitlines()[0]
        assert first.startswith("{{ ansible_managed | comment") or first.startswith("{#"), template


def _tasks(path: Path) -> list[dict[str, object]]:
    data = yaml.safe_load(path.read_text()) or []
    return [t for t in data if isinstance(t, dict)]


def test_tasks_touching_tokens_or_keys_are_no_log() -> None:
    """A task that reads, creates or copies a token or a signing key never logs its values."""
    secret = re.compile(r"token_new|token_current|token_ok|head -c .*/dev/urandom|key_path")
    for path in (ROOT / "roles").glob("*/tasks/*.yml"):
        for task in _tasks(path):
            body = {k: v for k, v in task.items() if k not in ("name", "when", "tags")}
            if secret.search(yaml.safe_dump(body)):
                assert task.get("no_log") is True, f"{path.name}: {task.get('name')}"
