"""Every broken example exits 2 with the field path and what is expected, and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BROKEN

CASES = sorted(p for p in BROKEN.glob("*.yaml") if not p.name.startswith("_"))


def _expect(path: Path, key: str) -> str:
    for line in path.read_text().splitlines():
        if line.startswith(f"# expect-{key}: "):
            return line.split(": ", 1)[1]
    raise AssertionError(f"{path.name} has no '# expect-{key}:' line")


def test_there_are_at_least_15_distinct_mistakes() -> None:
    assert len(CASES) >= 15
    assert len({(_expect(p, "path"), _expect(p, "message")) for p in CASES}) == len(CASES)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_broken_example_exits_2_naming_the_field(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "escape_fed", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # messages go to stderr only
    assert "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0].removeprefix("error: ")
    assert first.startswith(f"{path}: "), proc.stderr
    assert _expect(path, "path") in proc.stderr
    assert _expect(path, "message") in proc.stderr


def test_base_of_the_broken_examples_is_valid() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "escape_fed", "validate", str(BROKEN / "_base.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


HARDENING = [
    "dataset-contains-embargo",
    "dataset-is-embargo",
    "dataset-under-embargo",
    "dataset-path-with-dollar",
    "storage-path-dotdot",
    "storage-path-with-newline",
    "storage-path-with-shell",
    "storage-path-with-space",
    "yaml-alias-bomb",
    "yaml-alias-self",
]


@pytest.mark.parametrize("name", HARDENING)
def test_a_refused_file_writes_nothing(name: str, tmp_path: Path) -> None:
    out = tmp_path / "inventory"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "escape_fed",
            "render",
            str(BROKEN / f"{name}.yaml"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {BROKEN / name}.yaml: ")
    assert not out.exists()
