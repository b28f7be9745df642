"""Small system helpers shared by the lab modules: commands, mounts, safe removal."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from escape_fed.errors import OperationFailed

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress callback that says nothing."""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 600,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; on failure raise one error quoting its stderr."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            env=env,
            check=False,
        )
    except FileNotFoundError as exc:
        raise OperationFailed(f"command not found: {argv[0]} (is it installed?)") from exc
    except subprocess.TimeoutExpired as exc:
        raise OperationFailed(f"`{' '.join(argv)}` did not finish within {timeout} s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise OperationFailed(
            f"`{' '.join(argv)}` failed with exit code {proc.returncode}:\n  " + "\n  ".join(detail)
        )
    return proc


def require_root(what: str) -> None:
    """Raise a clear error unless running as root."""
    if os.geteuid() != 0:
        raise OperationFailed(
            f"{what} needs root (network namespaces, mounts, cgroups): run it as root"
        )


def require_tools(tools: dict[str, str]) -> None:
    """``tools`` maps a command to the Debian package that ships it."""
    missing = {cmd: pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None}
    if missing:
        cmds = ", ".join(sorted(missing))
        pkgs = " ".join(sorted(set(missing.values())))
        raise OperationFailed(
            f"missing command(s) {cmds}: install them with `apt-get install {pkgs}`"
        )


def _unescape_mount(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first."""
    prefix = str(root.resolve()) if root.exists() else str(root)
    found: list[Path] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) < 5:
            continue
        point = _unescape_mount(parts[4])
        if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(root: Path) -> None:
    """Unmount everything at or below ``root`` (deepest first, lazily if busy)."""
    for _ in range(3):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            if run(["umount", str(point)], check=False).returncode != 0:
                run(["umount", "-l", str(point)], check=False)
    left = mounts_under(root)
    if left:
        raise OperationFailed(
            f"could not unmount {', '.join(map(str, left))}: find what uses them "
            f"(`fuser -vm {left[0]}`) and run the command again"
        )


def safe_rmtree(path: Path) -> None:
    """Remove a tree, but never through a mount point (e.g. a bind-mounted /dev)."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_all_under(path)
    if mounts_under(path):  # pragma: no cover - unmount_all_under raises first
        raise OperationFailed(f"refusing to remove {path}: something is still mounted below it")
    shutil.rmtree(path)
