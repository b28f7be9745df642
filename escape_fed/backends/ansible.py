"""Run Ansible from the control machine: escape-fed's ansible.cfg, nothing left under $HOME.

Host keys stay checked: the inventory carries each backend's known_hosts (the lab records the
real key of every host it boots).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner  # type: ignore[import-untyped]

from escape_fed import collection
from escape_fed.errors import OperationFailed

# All found through the installed package (a checkout's editable install links them back to the
# top-level folders): escape-fed deploys with its own escape.fed collection.
ANSIBLE_CFG = collection.ansible_cfg()
PLAYBOOKS = collection.playbooks_dir()
COLLECTIONS_PATH = collection.collections_dir()


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
    """``ansible PATTERN -m ping`` over SSH (through ansible-runner): one result per host."""
    got: dict[str, PingResult] = {}

    def on_event(ev: dict[str, Any]) -> bool:
        data = ev.get("event_data") or {}
        host, res = data.get("host"), data.get("res") or {}
        if ev.get("event") == "runner_on_ok" and host:
            ok = res.get("ping") == "pong"
            got[host] = PingResult(host, ok, "pong" if ok else str(res)[-300:])
        elif ev.get("event") in ("runner_on_failed", "runner_on_unreachable") and host:
            got[host] = PingResult(host, False, str(res.get("msg", "failed")).strip()[-300:])
        return True

    with ansible_env() as env:
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
        work = Path(env["ANSIBLE_LOCAL_TEMP"]).parent / "runner"
        work.mkdir(parents=True, mode=0o700)
        env["PATH"] = f"{Path(executable('ansible')).parent}{os.pathsep}{env['PATH']}"
        run = ansible_runner.run(
            private_data_dir=str(work),
            host_pattern=pattern,
            module="ansible.builtin.ping",
            inventory=str(inventory),
            envvars=env,
            event_handler=on_event,
            timeout=timeout,
            quiet=True,
            suppress_env_files=True,
        )
        tail = (run.stdout.read().strip()[-300:] if run.rc else "") or "no result"
    return [got.get(name, PingResult(name, False, tail)) for name in names]


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


def run_playbook(
    inventory: Path,
    playbook: str | Path,
    progress: Progress,
    limit: str | None = None,
    check: bool = False,
    extra_vars: dict[str, Any] | None = None,
    log: Path | None = None,
    verbose: bool = False,
    extra_vars_file: Path | None = None,
    observe: Callable[[dict[str, Any]], None] | None = None,
) -> PlaybookResult:
    """Run one playbook; show per-host progress; return Ansible's recap and the errors.

    ``playbook`` is a path or the name of a file in ``playbooks/``. Ansible's own output goes to
    ``log`` (0600), progress lines to ``progress``; ``observe`` sees every event as it comes.
    """
    book = Path(playbook) if Path(playbook).is_absolute() else PLAYBOOKS / playbook
    if not book.exists():
        raise OperationFailed(f"playbook {book} not found")
    result = PlaybookResult(returncode=-1, seconds=0.0, log=log)
    host_events = {
        "runner_on_ok": "ok",
        "runner_on_failed": "failed",
        "runner_on_unreachable": "unreachable",
        "runner_on_skipped": "skipped",
    }
    stats_fields = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failures",
        "dark": "unreachable",
        "skipped": "skipped",
        "rescued": "rescued",
        "ignored": "ignored",
    }

    def on_event(ev: dict[str, Any]) -> bool:
        kind, data = ev.get("event", ""), ev.get("event_data") or {}
        if observe is not None:
            observe(ev)
        if kind == "playbook_on_play_start":
            progress(f"play: {data.get('play', '')}")
        elif kind == "playbook_on_task_start" and verbose:
            progress(f"  task: {data.get('task', '')}")
        elif kind in host_events:
            res = data.get("res") or {}
            mark = host_events[kind]
            if mark == "ok" and res.get("changed"):
                mark = "changed"
            if mark == "failed" and data.get("ignore_errors"):
                mark = "ignored"
            if mark in ("changed", "failed", "unreachable"):
                # no_log results arrive censored: their message is never shown
                msg = res.get("msg") or res.get("stderr") or res.get("module_stderr")
                msg = msg.strip()[-600:] if isinstance(msg, str) and msg.strip() else None
                label = {"changed": "changed", "failed": "FAILED", "unreachable": "UNREACHABLE"}
                line = f"  {data.get('host')}: {label[mark]}: {data.get('task')}"
                progress(line + (f": {msg}" if msg else ""))
                if mark != "changed":
                    result.errors.append(
                        {
                            "event": mark,
                            "host": data.get("host"),
                            "task": data.get("task"),
                            "msg": msg,
                        }
                    )
        elif kind == "playbook_on_stats":
            for host in sorted(data.get("processed") or {}):
                fields = {
                    ours: int((data.get(theirs) or {}).get(host, 0))
                    for theirs, ours in stats_fields.items()
                }
                result.hosts[host] = HostSummary(**fields)
        return True  # keep ansible-runner's own record of the event too

    cmdline = [str(book)]
    if limit:
        cmdline += ["--limit", limit]
    if check:
        cmdline += ["--check", "--diff"]
    if extra_vars:
        cmdline += ["--extra-vars", json.dumps(extra_vars)]
    if extra_vars_file:
        cmdline += ["--extra-vars", f"@{extra_vars_file}"]
    with ansible_env() as env:
        work = Path(env["ANSIBLE_LOCAL_TEMP"]).parent / "runner"
        work.mkdir(parents=True, mode=0o700)
        # ansible-runner starts the ansible-playbook beside escape-fed (see executable())
        env["PATH"] = f"{Path(executable('ansible-playbook')).parent}{os.pathsep}{env['PATH']}"
        started = time.monotonic()
        run = ansible_runner.run(
            private_data_dir=str(work),
            playbook=str(book),
            inventory=str(inventory),
            cmdline=shlex.join(cmdline[1:]) or None,
            envvars=env,
            project_dir=str(PLAYBOOKS),
            event_handler=on_event,
            quiet=True,
            suppress_env_files=True,
        )
        result.seconds = time.monotonic() - started
        result.returncode = int(run.rc if run.rc is not None else -1)
        if log is not None:  # Ansible's own output, owner-only
            log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                shutil.copyfileobj(run.stdout, out)
    return result
