"""Run Ansible from the control machine: escape-fed's ansible.cfg, nothing left under $HOME.

Host keys stay checked: the inventory carries each backend's known_hosts (the lab records the
real key of every host it boots).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from escape_fed.errors import OperationFailed

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_CFG = REPO / "ansible.cfg"


def executable(name: str) -> str:
    """An Ansible program from the same environment as escape-fed, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise OperationFailed(
            f"{name} not found: install escape-fed with its dependencies "
            "('make venv') or put ansible-core on PATH"
        )
    return found


@contextmanager
def ansible_env() -> Iterator[dict[str, str]]:
    """Environment for one Ansible run: our config, private temp dirs removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="ef-ansible-"))  # short: SSH control paths are bounded
    try:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
            "ANSIBLE_HOME": str(work / "home"),
            "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_NOCOLOR": "1",
        }
        yield env
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class PingResult:
    host: str
    ok: bool
    message: str


def ping(inventory: Path, pattern: str = "all", timeout: int = 60) -> list[PingResult]:
    """``ansible PATTERN -m ping`` over SSH: one result per host of the inventory."""
    with ansible_env() as env:
        tree = Path(env["ANSIBLE_LOCAL_TEMP"]).parent / "tree"
        env.update(
            {
                "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                "ANSIBLE_CALLBACKS_ENABLED": "tree",
                "ANSIBLE_CALLBACK_TREE_DIR": str(tree),
            }
        )
        proc = subprocess.run(
            [
                executable("ansible"),
                "-i",
                str(inventory),
                pattern,
                "-m",
                "ansible.builtin.ping",
                "-o",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        listing = subprocess.run(
            [executable("ansible-inventory"), "-i", str(inventory), "--list"],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if listing.returncode != 0:
            raise OperationFailed(
                f"{inventory}: ansible-inventory failed: {listing.stderr.strip()}"
            )
        names = sorted(json.loads(listing.stdout).get("_meta", {}).get("hostvars", {}))
        results = []
        for name in names:
            path = tree / name
            if not path.exists():
                results.append(PingResult(name, False, proc.stderr.strip()[-300:] or "no result"))
                continue
            data = json.loads(path.read_text())
            ok = data.get("ping") == "pong" and not data.get("failed")
            msg = "pong" if ok else str(data.get("msg", "failed")).strip()
            results.append(PingResult(name, ok, msg))
        return results
