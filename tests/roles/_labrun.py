"""Role test helpers on lab hosts: a booted lab with its rendered inventory, playbook runs with
escape-fed's Ansible environment and their recap, testinfra over the lab's own ssh_config (host
keys checked), and a job submitted at an access point. Used by the molecule tier and the flock
role checks (on the shared flock lab, tests/conftest.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from escape_fed.backends.ansible import ansible_env, executable
from tests.conftest import ROOT

RECAP = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)"
    r"\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.M,
)


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "escape_fed", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class PlaybookRun:
    rc: int
    seconds: float
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    def changed(self) -> dict[str, int]:
        return {h: r["changed"] for h, r in self.recap.items() if r["changed"]}


def run_playbook(inventory: Path, playbook: str, *args: str, timeout: int = 900) -> PlaybookRun:
    with ansible_env() as env:
        start = time.monotonic()
        proc = subprocess.run(
            [executable("ansible-playbook"), "-i", str(inventory), str(ROOT / playbook), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
        seconds = time.monotonic() - start
    out = proc.stdout + proc.stderr
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in RECAP.finditer(proc.stdout)
    }
    return PlaybookRun(proc.returncode, seconds, out, recap)


@dataclass
class Lab:
    """A booted lab with its rendered inventory."""

    federation: Path
    state_dir: Path
    inventory: Path
    data: dict[str, object]

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def secrets_dir(self) -> Path:
        name = self.data["federation"]["name"]  # type: ignore[index]
        return Path(self.data["security"]["secrets_dir"]) / str(name)  # type: ignore[index]

    def host(self, name: str):  # type: ignore[no-untyped-def]
        import testinfra

        return testinfra.get_host(f"ssh://{name}", ssh_config=str(self.ssh_config))

    def hostvars(self, name: str) -> dict[str, object]:
        path = self.inventory / "host_vars" / f"{name}.yml"
        data: dict[str, object] = yaml.safe_load(path.read_text())
        return data

    def site(self, name: str) -> dict[str, Any]:
        path = self.inventory / "group_vars" / f"{name.replace('-', '_')}.yml"
        data: dict[str, Any] = yaml.safe_load(path.read_text())["escape_fed_site"]
        return data

    def group(self, name: str) -> list[str]:
        hosts = yaml.safe_load((self.inventory / "hosts.yml").read_text())

        def find(node: dict[str, object]) -> list[str] | None:
            for key, sub in (node or {}).items():
                if not isinstance(sub, dict):
                    continue
                if key == name:
                    return sorted(_members(sub))
                got = find(sub.get("children") or {})  # type: ignore[arg-type]
                if got is not None:
                    return got
            return None

        return find(hosts["all"]["children"]) or []

    def address(self, name: str) -> str:
        return str(self.hostvars(name)["ansible_host"])


def _members(node: dict[str, object]) -> set[str]:
    out = set((node.get("hosts") or {}).keys())  # type: ignore[union-attr]
    for sub in (node.get("children") or {}).values():  # type: ignore[union-attr]
        out |= _members(sub or {})
    return out


def wait_for(check, timeout: float = 120.0, every: float = 3.0):  # type: ignore[no-untyped-def]
    """Poll check() until it returns something truthy; return it (or the last value)."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(every)
        value = check()
    return value


# The submit description the e2e tests use too: a job pinned to one site by ESCAPE_SITE,
# printing where it ran and the cache it was given.
SUBMIT = """\
executable = /bin/sh
arguments = "-c 'echo site=$ESCAPE_SITE cache=$ESCAPE_CACHE host=$(hostname -f) user=$(id -un)'"
requirements = ESCAPE_SITE == "{site}"
request_cpus = 1
request_memory = 64
request_disk = 1024
output = {name}.out
error = {name}.err
log = {name}.log
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
queue
"""


def run_job(lab: Lab, ap: str, site: str, user: str = "escape", timeout: float = 150.0) -> str:
    """Submit SUBMIT at access point `ap` as `user`, wait for it to finish; return its output."""
    host = lab.host(ap)
    name = f"job-{site}-{int(time.time())}"
    home = f"/home/{user}"
    sub = SUBMIT.format(site=site, name=name)
    write = f"cat > {home}/{name}.sub <<'EOF'\n{sub}EOF\nchown {user} {home}/{name}.sub"
    host.run_expect([0], write)
    submitted = host.run(f"cd {home} && su {user} -c 'condor_submit {name}.sub'")
    assert submitted.rc == 0, submitted.stdout + submitted.stderr

    def done() -> bool:
        log = host.run(f"cat {home}/{name}.log")
        return "Job terminated" in log.stdout

    if not wait_for(done, timeout=timeout):
        q = host.run(f"su {user} -c 'condor_q -better-analyze'").stdout
        pytest.fail(f"job for {site} did not finish in {timeout} s:\n{q[-3000:]}")
    return str(host.run(f"cat {home}/{name}.out").stdout)
