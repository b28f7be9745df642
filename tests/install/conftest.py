"""The install tier: escape-fed as a user installs it, from outside the checkout.

``installed`` is one fresh virtualenv for the session (the lab test that uses it runs after
the others) with ``pip install ROOT`` (no extras: only
the runtime dependencies). Every command runs in a temp directory outside the checkout, with
no ANSIBLE_* or PYTHON* variables of the test run, so nothing can come from the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without Ansible, Python path or virtualenv settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANSIBLE_", "PYTHON", "PYTEST_")) and k != "VIRTUAL_ENV"
    }
    env.update(extra)
    return env


@dataclass
class Installed:
    """A virtualenv with escape-fed installed from the checkout, and a work dir outside it."""

    venv: Path
    workdir: Path
    seconds: float

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def run(
        self, *argv: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A program of the venv (escape-fed, python, ansible-*), run in the work dir."""
        return subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            cwd=self.workdir,
            env=env or clean_env(PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"),
            timeout=timeout,
            check=False,
        )

    def python(self, code: str) -> str:
        proc = self.run("python", "-c", code)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """``python -m venv`` + ``pip install ROOT`` (no extras), once."""
    base = tmp_path_factory.mktemp("installed")
    assert ROOT not in base.parents, base
    venv, workdir = base / "venv", base / "work"
    workdir.mkdir()
    # setuptools builds in the source tree (build/lib) and keeps what an earlier build left
    # there, files since deleted included: build in a fresh directory instead.
    extra = base / "setup-extra.cfg"
    extra.write_text(f"[build]\nbuild_base = {base / 'build'}\n")
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=clean_env(DIST_EXTRA_CONFIG=str(extra)),
        timeout=900,
        check=False,
    )
    assert pip.returncode == 0, f"pip install {ROOT} failed:\n{pip.stdout}{pip.stderr[-4000:]}"
    seconds = time.monotonic() - start
    print(f"\nfresh venv with escape-fed installed: {seconds:.0f} s", file=sys.stderr)
    yield Installed(venv, workdir, seconds)
