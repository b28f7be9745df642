"""escape-fed installed with ``pip install .`` (no extras) into a fresh virtualenv, run from a
directory outside the checkout: render, plan and the playbooks' syntax come from the package."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from escape_fed.model.view import hosts
from tests.conftest import LAB_FEDERATION, ROOT, DeployedLab
from tests.install.conftest import Installed

pytestmark = pytest.mark.install


def _lab_copy(installed: Installed, tmp_path: Path) -> Path:
    """The lab federation with its control state and secrets under tmp_path."""
    data = yaml.safe_load(LAB_FEDERATION.read_text())
    data["control"] = {"state_dir": str(tmp_path / "state")}
    data["security"] = {**data.get("security", {}), "secrets_dir": str(tmp_path / "secrets")}
    path = installed.workdir / f"{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_installed_package_carries_ansible_and_its_collection(installed: Installed) -> None:
    site = Path(installed.python("import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    assert site.is_relative_to(installed.venv)
    where = json.loads(
        installed.python(
            "import json; from escape_fed import collection as c;"
            "from escape_fed.backends import ansible as a;"
            "print(json.dumps({'collection': str(c.collection_dir()), 'cfg': str(a.ANSIBLE_CFG),"
            "'playbooks': str(a.PLAYBOOKS), 'path': str(a.COLLECTIONS_PATH),"
            "'galaxy': a.executable('ansible-galaxy')}))"
        )
    )
    for key in ("collection", "cfg", "playbooks", "path"):
        assert Path(where[key]).is_relative_to(site), (key, where[key])
        assert not Path(where[key]).resolve().is_relative_to(ROOT), (key, where[key])
    assert Path(where["galaxy"]).parent == installed.bin  # ansible-core: a runtime dependency
    roles = Path(where["collection"]) / "roles"
    assert (roles / "htcondor_common" / "tasks" / "main.yml").is_file()
    assert not (roles / "htcondor_common").is_symlink()  # real files, not links to a checkout
    assert not list(roles.glob("*/molecule"))
    assert (Path(where["playbooks"]) / "site.yml").is_file()
    shipped = roles / "federation_status" / "files" / "status_core.py"  # to the gateway
    assert shipped.read_bytes() == (site / "escape_fed" / "ops" / "status_core.py").read_bytes()
    listed = installed.run("ansible-galaxy", "collection", "list", "-p", where["path"])
    assert "escape.fed" in listed.stdout, listed.stdout + listed.stderr


def test_render_and_plan_work_outside_the_checkout(installed: Installed, tmp_path: Path) -> None:
    fed = _lab_copy(installed, tmp_path)
    out = tmp_path / "inventory"
    render = installed.run("escape-fed", "render", str(fed), "--out", str(out))
    assert render.returncode == 0, render.stderr
    assert (out / "hosts.yml").is_file() and (out / "group_vars" / "all.yml").is_file()
    plan = installed.run("escape-fed", "plan", str(fed), "--output", "json")
    assert plan.returncode == 0, plan.stderr
    counts = json.loads(plan.stdout)["counts"]
    assert counts["create"] > 0 and counts["remove"] == 0, counts


def test_without_a_file_the_packaged_lab_federation_is_used(installed: Installed) -> None:
    proc = installed.run("escape-fed", "validate")
    assert proc.returncode == 0, proc.stderr
    assert "site-packages/escape_fed/inventories/lab/federation.yaml" in proc.stdout + proc.stderr


def test_the_packaged_playbooks_resolve_every_role_from_the_installed_collection(
    installed: Installed, tmp_path: Path
) -> None:
    """What deploy runs (site.yml in the package, escape-fed's Ansible environment) passes
    ansible-playbook's syntax check: every escape.fed.* role is found without the checkout."""
    fed = _lab_copy(installed, tmp_path)
    out = tmp_path / "inventory"
    assert installed.run("escape-fed", "render", str(fed), "--out", str(out)).returncode == 0
    code = (
        "import subprocess, sys\n"
        "from escape_fed.backends.ansible import PLAYBOOKS, ansible_env, executable\n"
        "with ansible_env() as env:\n"
        "    sys.exit(subprocess.run([executable('ansible-playbook'), '-i', sys.argv[1],\n"
        "        str(PLAYBOOKS / 'site.yml'), '--syntax-check'], env=env).returncode)\n"
    )
    proc = installed.run("python", "-c", code, str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.lab
def test_the_installed_tool_deploys_the_shared_lab_from_its_own_collection(
    installed: Installed, shared_lab: DeployedLab
) -> None:
    """`escape-fed deploy --converge` by the installed package, outside the checkout, on the lab
    the checkout deployed: every role runs from the installed collection and changes nothing."""
    proc = installed.run(
        "escape-fed", "deploy", str(shared_lab.file), "--converge", "--output", "json", timeout=1500
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["ok"] and not result["skipped"], result
    assert sorted(result["hosts"]) == sorted(h.name for h in hosts(shared_lab.fed)), result
    assert result["changed"] == 0, {h: s for h, s in result["hosts"].items() if s["changed"]}
    print(f"\ninstalled deploy --converge: {result['seconds']} s", file=sys.stderr)
    # ... and recorded what it applied: nothing is left to create or change.
    plan = installed.run("escape-fed", "plan", str(shared_lab.file), "--output", "json")
    assert plan.returncode == 0, plan.stderr[-3000:]
    counts = json.loads(plan.stdout)["counts"]
    assert counts["create"] == counts["change"] == 0, counts
