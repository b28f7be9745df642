"""Molecule tier: each HTCondor role's scenario on one isolated global-pool lab.

One lab (a copy of the lab federation with its own state dir, prefix `efm` and supernet) is
booted, its inventory rendered, and `molecule test -s default` (syntax, converge, idempotence,
verify; see .config/molecule/config.yml) runs in each role directory in dependency order:
htcondor_common on every HTCondor host, then the central manager (it holds the key and signs
every token), the access points, the execute nodes. A scenario whose predecessor failed is
skipped. Afterwards the converged lab also runs what no single role's scenario covers: a
`--limit site_a` run of playbooks/htcondor.yml (every play, one site) and a job from site A's
access point to site B. (Only the HTCondor plays converged here; site.yml's data plays have
their own tests.)
The lab is taken down before (leftovers of a killed run) and after, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from escape_fed.backends.ansible import COLLECTIONS_PATH
from tests.conftest import require_root
from tests.labfed import ROOT, cli, lab_copy
from tests.roles._labrun import Lab, run_job, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

# Dependency order: each scenario needs the ones before it converged on the same lab.
ROLES = ["htcondor_common", "htcondor_central_manager", "htcondor_access_point", "htcondor_execute"]
BIN = Path(sys.executable).parent


@dataclass
class MoleculeLab:
    lab: Lab
    env: dict[str, str]
    failed: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def mlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoleculeLab]:
    require_root()
    if not (BIN / "molecule").exists():
        pytest.fail(
            f"molecule is not installed beside {sys.executable}: pip install -e '.[dev]'",
            pytrace=False,
        )
    tmp = tmp_path_factory.mktemp("molecule")
    federation = lab_copy(
        ROOT / "inventories" / "lab" / "federation.yaml", "molecule", "efm", "10.87.0.0/16", tmp
    )
    data = yaml.safe_load(federation.read_text())
    # short: SSH control sockets live here (ansible's and testinfra's), paths are bounded
    work = Path(tempfile.mkdtemp(prefix="efm-"))
    cli("lab", "down", str(federation))  # leftovers of a killed earlier run
    try:
        up = cli("lab", "up", str(federation))
        assert up.returncode == 0, up.stdout + up.stderr
        inventory = tmp / "inventory"
        rendered = cli("render", str(federation), "--out", str(inventory))
        assert rendered.returncode == 0, rendered.stdout + rendered.stderr
        (work / "cp").mkdir(mode=0o700)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MOLECULE_", "ANSIBLE_")) and k != "PYTEST_ADDOPTS"
        }
        env.update(
            {
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # ansible-*, pytest
                "ESCAPE_FED_INVENTORY": str(inventory),
                # the scenarios name their roles escape.fed.*: the packaged collection
                "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_PATH),
                "ESCAPE_FED_SSH_CONTROL_DIR": str(work / "cp"),
                # molecule's own cache and each scenario's ephemeral dir: not under $HOME
                "ANSIBLE_HOME": str(work / "home"),
                "NO_COLOR": "1",
                "PY_COLORS": "0",
                "ANSIBLE_NOCOLOR": "1",
            }
        )
        lab = Lab(federation, Path(data["lab"]["state_dir"]), inventory, data)
        mlab = MoleculeLab(lab, env)
        yield mlab
        times = ", ".join(f"{r}: {s:.0f} s" for r, s in mlab.seconds.items())
        print(f"\nmolecule scenarios: {times}")
    finally:
        cli("lab", "down", str(federation))
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario_passes(mlab: MoleculeLab, role: str) -> None:
    if mlab.failed:
        pytest.fail(f"{role} needs {', '.join(mlab.failed)} converged, which failed")
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [str(BIN / "molecule"), "test", "-s", "default"],
            cwd=ROOT / "roles" / role,
            env=mlab.env,
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
    finally:
        mlab.seconds[role] = time.monotonic() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        mlab.failed.append(role)
    assert proc.returncode == 0, f"molecule test in roles/{role} failed:\n{out[-15000:]}"


# --- the whole federation, once every role's scenario converged it -----------------------


def needs_all_scenarios(mlab: MoleculeLab) -> None:
    missing = [r for r in ROLES if r not in mlab.seconds or r in mlab.failed]
    if missing:
        pytest.fail(f"needs every role scenario to have passed: {', '.join(missing)} did not")


def test_limit_to_one_site_touches_only_it_and_changes_nothing(mlab: MoleculeLab) -> None:
    needs_all_scenarios(mlab)
    run = run_playbook(mlab.lab.inventory, "playbooks/htcondor.yml", "--limit", "site_a")
    assert run.rc == 0, run.output[-6000:]
    assert set(run.recap) <= set(mlab.lab.group("site_a")), run.recap
    assert run.changed() == {}, run.output[-6000:]


def test_job_from_site_a_access_point_runs_at_site_b(mlab: MoleculeLab) -> None:
    needs_all_scenarios(mlab)
    out = run_job(mlab.lab, "ap-a", "site-b")
    assert "site=site-b" in out and "host=wn-b1.site-b.escape.lab" in out, out
    assert "cache=root://cache-b.site-b.escape.lab:1094" in out, out
    assert "user=nobody" in out, out
