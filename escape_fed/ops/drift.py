"""What the last converge left on every host, and a cheap check that it is all still there.

A converge (site.yml, every role) is recorded from Ansible's own task results as they arrive:
for each host, the files its templates and copies wrote (content checksum, mode, owner, group),
the directories and links it made, the paths it removed, the accounts it created and the
services it enabled or started. Delegated results (work done on the control machine or on a
central manager for this host) are not this host's state and are left out.

Right after the converge, one command per host adds every entry of the configuration
directories the roles wrote in (under /etc, /usr/local, /opt): the files a role writes while
hiding its result (``no_log``: keys, tokens) are recorded by checksum there, and a file added to
such a directory later (a stray ``config.d`` snippet) is drift too.

``deploy --full`` with unchanged inputs then checks that record on every host with one remote
command per host (playbooks/verify.yml runs playbooks/files/verify_state.py) before the health
play; any difference sends it to a converge of every role, as before. ``deploy --converge``
runs every role whatever the checks say. Keys that rotate and caches live under /var and are
not listed: the health play covers the services that use them.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from escape_fed.backends.ansible import PlaybookResult, Progress, run_playbook

VERIFY_PLAYBOOK = "verify.yml"
VERIFY_TASK = "Compare the host with what the last converge left there"
RECORD_NAME = "converged-state.json"

# Task actions whose results describe state a host keeps (short names: FQCN prefixes dropped).
_FILE_ACTIONS = {"template", "copy"}
_PATH_ACTIONS = {"file"}
_SERVICE_ACTIONS = {"systemd_service", "systemd", "service"}
_USER_ACTIONS = {"user"}
_CONFIG_TOPS = ("/etc/", "/usr/local/", "/opt/")
_ACTIVE = {"started": True, "restarted": True, "reloaded": True, "running": True, "stopped": False}


def _short(action: str) -> str:
    return action.rsplit(".", 1)[-1]


@dataclass
class HostState:
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    dirs: dict[str, dict[str, str]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    services: dict[str, dict[str, bool]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    listed: dict[str, list[str]] = field(default_factory=dict)  # configuration directories

    def _forget(self, path: str) -> None:
        self.files.pop(path, None)
        self.dirs.pop(path, None)
        self.links.pop(path, None)
        if path in self.absent:
            self.absent.remove(path)

    def take(self, action: str, res: dict[str, Any]) -> None:
        """Fold one task result (or one loop item's) into the record; later results win."""
        if res.get("failed") or res.get("skipped") or "censored" in res:
            return
        owner = {k: str(res[k]) for k in ("mode", "owner", "group") if res.get(k) is not None}
        if action in _FILE_ACTIONS and res.get("dest") and res.get("checksum"):
            path = str(res["dest"])
            self._forget(path)
            self.files[path] = {"checksum": str(res["checksum"]), **owner}
        elif action in _PATH_ACTIONS and res.get("path"):
            path, state = str(res["path"]), res.get("state")
            if state == "directory":
                self._forget(path)
                self.dirs[path] = owner
            elif state == "absent":
                self._forget(path)
                self.absent.append(path)
            elif state == "link" and res.get("src"):
                self._forget(path)
                self.links[path] = str(res["src"])
            elif state == "file" and path in self.files:
                self.files[path].update(owner)  # a later mode/owner change of a written file
        elif action in _SERVICE_ACTIONS and res.get("name"):
            want: dict[str, bool] = dict(self.services.get(str(res["name"]), {}))
            if res.get("state") in _ACTIVE:
                want["active"] = _ACTIVE[str(res["state"])]
            if isinstance(res.get("enabled"), bool):
                want["enabled"] = res["enabled"]
            if want:
                self.services[str(res["name"])] = want
        elif action in _USER_ACTIONS and res.get("name") and res.get("state") == "present":
            keep = ("uid", "home", "shell")
            self.users[str(res["name"])] = {k: res[k] for k in keep if res.get(k) is not None}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def config_dirs(self) -> list[str]:
        """The configuration directories the roles wrote in: every entry of them is recorded.

        Under /etc, /usr/local and /opt only (what a converge leaves there stays until the next
        one); caches, spools and keys that rotate live under /var and are not listed."""
        mine = set(self.dirs) | {os.path.dirname(p) for p in self.files}
        return sorted(d for d in mine if d.startswith(_CONFIG_TOPS) and d.count("/") >= 2)

    def add_listing(self, found: dict[str, dict[str, dict[str, str]]]) -> None:
        """Fold in every entry of the configuration directories, as a capture found them:
        files the roles wrote without showing it (secrets: checksums only) included."""
        for directory, listing in found.items():
            self.listed[directory] = sorted(listing)
            for name, rec in listing.items():
                path = f"{directory}/{name}"
                if path in self.files or path in self.dirs or path in self.links:
                    continue  # the roles' own results say more
                if "link" in rec:
                    self.links[path] = rec["link"]
                elif "checksum" in rec:
                    self.files[path] = rec
                else:
                    self.dirs[path] = rec  # a directory or another kind of entry: its owner


class Recorder:
    """Collects the record from a converge's events (run_playbook's ``observe``)."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostState] = {}

    def observe(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        data = event.get("event_data") or {}
        host, res = data.get("host"), data.get("res") or {}
        if kind not in ("runner_on_ok", "runner_item_on_ok") or not host:
            return
        if not isinstance(res, dict) or res.get("_ansible_delegated_vars"):
            return  # a delegated task's work is on another machine
        if kind == "runner_on_ok" and isinstance(res.get("results"), list):
            return  # a loop: its items came one by one (only they carry the delegation mark)
        action = _short(str(data.get("task_action", "")))
        self.hosts.setdefault(str(host), HostState()).take(action, res)

    def save(self, path: Path, fingerprint: str) -> None:
        """Write the record (0600, atomically) for inputs with this fingerprint."""
        data = {
            "fingerprint": fingerprint,
            "hosts": {h: s.as_dict() for h, s in sorted(self.hosts.items())},
        }
        from escape_fed.ops.tokens import write_private  # tokens imports deploy, which imports this

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, json.dumps(data, indent=1, sort_keys=True))


def record_path(state: Path) -> Path:
    return state / RECORD_NAME


def load_record(path: Path, fingerprint: str) -> dict[str, dict[str, Any]] | None:
    """The per-host record, if one was written for inputs with this fingerprint."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    hosts = data.get("hosts")
    return hosts if isinstance(hosts, dict) and hosts else None


@dataclass
class Verification:
    playbook: PlaybookResult
    drift: dict[str, list[str]]  # host -> what differs from the record

    @property
    def clean(self) -> bool:
        return self.playbook.ok and not self.drift


def verify(
    inventory: Path,
    record: dict[str, dict[str, Any]],
    progress: Progress,
    log: Path | None = None,
    verbose: bool = False,
) -> Verification:
    """Check every recorded host against its record: one command per host, nothing changed."""
    drift: dict[str, list[str]] = {}
    result, answers = _run_check(inventory, record, progress, log, verbose)
    for host, found in answers.items():
        if found is None or not isinstance(found, list):
            drift[host] = ["the check gave no readable answer"]
        elif found:
            drift[host] = [str(x) for x in found]
    for host in result.hosts:
        if host not in record:
            drift[host] = ["no record of this host: it was not in the last converge"]
        elif host not in answers:
            drift[host] = ["the check did not run"]
    for host in set(record) - set(result.hosts):
        drift[host] = ["recorded, but no longer in the inventory"]
    return Verification(result, drift)


def _run_check(
    inventory: Path,
    per_host: dict[str, dict[str, Any]],
    progress: Progress,
    log: Path | None,
    verbose: bool,
) -> tuple[PlaybookResult, dict[str, Any]]:
    """Run playbooks/files/verify_state.py on every host with its input; its answers by host."""
    answers: dict[str, Any] = {}

    def observe(event: dict[str, Any]) -> None:
        data = event.get("event_data") or {}
        if event.get("event") != "runner_on_ok" or data.get("task") != VERIFY_TASK:
            return
        try:
            answers[str(data.get("host"))] = json.loads((data.get("res") or {}).get("stdout") or "")
        except ValueError:
            answers[str(data.get("host"))] = None

    fd, name = tempfile.mkstemp(prefix="escape-fed-verify-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp: 0600
            json.dump({"escape_fed_expected_state": per_host}, out)
        result = run_playbook(
            inventory,
            VERIFY_PLAYBOOK,
            progress,
            extra_vars_file=Path(name),
            log=log,
            verbose=verbose,
            observe=observe,
        )
    finally:
        os.unlink(name)
    return result, answers


def capture(
    inventory: Path,
    recorder: Recorder,
    progress: Progress,
    log: Path | None = None,
    verbose: bool = False,
) -> bool:
    """After a converge: add every entry of each host's configuration directories to the record."""
    wanted = {h: {"capture": s.config_dirs()} for h, s in recorder.hosts.items()}
    result, answers = _run_check(inventory, wanted, progress, log, verbose)
    for host, found in answers.items():
        if host in recorder.hosts and isinstance(found, dict):
            recorder.hosts[host].add_listing(found)
    return result.ok and set(answers) >= set(wanted)
