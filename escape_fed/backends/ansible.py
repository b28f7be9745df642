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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from escape_fed import collection
from escape_fed.errors import OperationFailed

# All found through the installed package (a checkout's editable install links them back to the
# top-level folders): escape-fed deploys with its own escape.fed collection.
ANSIBLE_CFG = collection.ansible_cfg()
PLAYBOOKS = collection.playbooks_dir()
COLLECTIONS_PATH = collection.collections_dir()
PLUGINS = Path(__file__).resolve().parent / "ansible_plugins"


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
    """Environment for one Ansible run: our config and collection, private temp dirs removed
    afterwards. Roles are found only as ``escape.fed.*`` in the packaged collection."""
    work = Path(tempfile.mkdtemp(prefix="ef-ansible-"))  # short: SSH control paths are bounded
    try:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
            "ANSIBLE_HOME": str(work / "home"),
            "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_PATH),
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


@dataclass
class HostSummary:
    """Ansible's recap for one host."""

    ok: int = 0
    changed: int = 0
    failures: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.failures or self.unreachable)


@dataclass
class PlaybookResult:
    """What one ansible-playbook run did."""

    returncode: int
    seconds: float
    hosts: dict[str, HostSummary] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)  # failed/unreachable results
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not any(h.failed for h in self.hosts.values())

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())


Progress = Callable[[str], None]


def _follow(path: Path, stop: threading.Event, sink: Callable[[dict[str, Any]], None]) -> None:
    """Read JSON lines from ``path`` as they are written, until ``stop`` and end of file."""
    while not path.exists() and not stop.is_set():
        time.sleep(0.05)
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        buffer = ""
        while True:
            chunk = f.readline()
            if chunk:
                buffer += chunk
                if buffer.endswith("\n"):
                    sink(json.loads(buffer))
                    buffer = ""
                continue
            if stop.is_set():
                break
            time.sleep(0.05)


def run_playbook(
    inventory: Path,
    playbook: str | Path,
    progress: Progress,
    limit: str | None = None,
    check: bool = False,
    extra_vars: dict[str, Any] | None = None,
    log: Path | None = None,
    verbose: bool = False,
) -> PlaybookResult:
    """Run one playbook; show per-host progress; return Ansible's recap and the errors.

    ``playbook`` is a path or the name of a file in ``playbooks/``. Ansible's own output goes to
    ``log`` (0600), progress lines to ``progress``.
    """
    book = Path(playbook) if Path(playbook).is_absolute() else PLAYBOOKS / playbook
    if not book.exists():
        raise OperationFailed(f"playbook {book} not found")
    argv = [executable("ansible-playbook"), "-i", str(inventory), str(book)]
    if limit:
        argv += ["--limit", limit]
    if check:
        argv += ["--check", "--diff"]
    if extra_vars:
        argv += ["--extra-vars", json.dumps(extra_vars)]
    result = PlaybookResult(returncode=-1, seconds=0.0, log=log)
    current = {"play": ""}

    def on_event(ev: dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "play":
            current["play"] = ev["name"]
            progress(f"play: {ev['name']}")
        elif kind == "task" and verbose:
            progress(f"  task: {ev['name']}")
        elif kind in ("changed", "failed", "unreachable"):
            mark = {"changed": "changed", "failed": "FAILED", "unreachable": "UNREACHABLE"}[kind]
            line = f"  {ev['host']}: {mark}: {ev['task']}"
            if ev.get("msg"):
                line += f": {ev['msg']}"
            progress(line)
            if kind != "changed":
                result.errors.append(ev)
        elif kind == "stats":
            fields = {k: int(v) for k, v in ev.items() if k in HostSummary.__dataclass_fields__}
            result.hosts[ev["host"]] = HostSummary(**fields)

    with ansible_env() as env:
        events = Path(env["ANSIBLE_LOCAL_TEMP"]).parent / "events.jsonl"
        env.update(
            {
                "ESCAPE_FED_EVENTS": str(events),
                "ANSIBLE_CALLBACK_PLUGINS": str(PLUGINS / "callback"),
                "ANSIBLE_CALLBACKS_ENABLED": "escape_fed_events",
            }
        )
        stop = threading.Event()
        reader = threading.Thread(target=_follow, args=(events, stop, on_event), daemon=True)
        reader.start()
        started = time.monotonic()
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            out: Any = os.fdopen(fd, "w", encoding="utf-8")
        else:
            out = subprocess.DEVNULL
        try:
            proc = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False, cwd=PLAYBOOKS
            )
        finally:
            if log is not None:
                out.close()
            stop.set()
            reader.join(timeout=30)
        result.returncode = proc.returncode
        result.seconds = time.monotonic() - started
    return result
