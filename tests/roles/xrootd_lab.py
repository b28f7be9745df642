"""A lab for the data layer (XRootD origins, XCaches, the deployment CA), driven like a user.

Boots an isolated copy of the lab federation with the CLI (`lab up`, `render`), runs
playbooks/iam.yml (the lab token issuer: origins and caches read only with a token) and
playbooks/data.yml with escape-fed's Ansible environment, reaches hosts with `lab ssh`, and
always takes the lab down. Clients on lab hosts read with a real token from the issuer
(`escape-fed token`) in a file (BEARER_TOKEN_FILE: XRootD's ztn), over TLS with the CA
certificates of the system store (X509_CERT_DIR): see CLIENT_ENV and DataLab.give_token.
Shared by tests/roles/test_xrootd_roles.py, tests/e2e/test_data.py and bench/cache_bench.py.
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from escape_fed.backends.ansible import ansible_env, executable
from escape_fed.lab.runtime import ssh_command
from escape_fed.model import load_federation
from tests.conftest import LAB_FEDERATION, ROOT, DeployedLab
from tests.labfed import cli, lab_copy

RECAP = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)"
    r"\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.M,
)
DATA_PLAYBOOK = ROOT / "playbooks" / "data.yml"
IAM_PLAYBOOK = ROOT / "playbooks" / "iam.yml"
# The synthetic datasets of the lab federation (role defaults of xrootd_origin).
SKY = "/escape/astro/sky-survey-dr1"  # held by site-a (origin-a)
COLLISIONS = "/escape/hep/collisions-2026"  # held by site-b (origin-b)
ORIGIN_ROOT = "/srv/xrootd"  # xrootd_origin_localroot
CACHE_ROOT = "/var/cache/xrootd"  # the lab's cache.path
BENCH_FILE = "bench-100mib.dat"
ASTRO = "/escape/astro"  # an IAM group of the lab federation (token scopes: both datasets and
HEP = "/escape/hep"  # the group's own embargoed area, /escape/<group>/embargoed)
EMBARGOED_FILE = "notes-001.dat"  # in every group's embargoed area, on every origin
# Where a client on a lab host finds its token (DataLab.give_token) and the CA certificates
# XRootD's client checks servers with (the system store: tls_ca puts the deployment CA there).
TOKEN_FILE = "/root/escape-fed.token"
CLIENT_ENV = f"X509_CERT_DIR=/etc/ssl/certs BEARER_TOKEN_FILE={TOKEN_FILE}"


@dataclass
class PlaybookRun:
    rc: int
    seconds: float
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    def changed(self) -> dict[str, int]:
        return {h: r["changed"] for h, r in self.recap.items() if r["changed"]}


@dataclass
class DataLab:
    path: Path  # the federation file of this lab copy
    inventory: Path  # the rendered inventory's hosts.yml

    def all_vars(self) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load(
            (self.inventory.parent / "group_vars" / "all.yml").read_text()
        )
        return data

    @property
    def secrets_dir(self) -> Path:
        return Path(self.all_vars()["escape_fed_secrets_dir"])

    def address(self, host: str) -> str:
        return str(self.all_vars()["escape_fed_pool_hosts"][host]["address"])

    def fqdn(self, host: str) -> str:
        return str(self.all_vars()["escape_fed_pool_hosts"][host]["fqdn"])

    def ssh(
        self, host: str, command: str, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run COMMAND (one shell command line) on lab host HOST."""
        return cli("lab", "ssh", "-f", str(self.path), host, "--", command, timeout=timeout)

    def out(self, host: str, command: str, timeout: float = 300) -> str:
        proc = self.ssh(host, command, timeout)
        assert proc.returncode == 0, f"{host}: {command}: {proc.stdout}{proc.stderr}"
        return proc.stdout.strip()

    def python(self, host: str, script: str, *args: str, timeout: float = 600) -> str:
        """Run a Python script on HOST (sent base64-encoded: no quoting through ssh)."""
        blob = base64.b64encode(script.encode()).decode()
        argv = " ".join(args)
        return self.out(
            host,
            f"echo {blob} | base64 -d > /tmp/ef.py && python3 /tmp/ef.py {argv}",
            timeout,
        )

    def playbook(
        self, *args: str, timeout: float = 900, playbook: Path = DATA_PLAYBOOK
    ) -> PlaybookRun:
        """ansible-playbook PLAYBOOK (playbooks/data.yml) ARGS against this lab's inventory."""
        with ansible_env() as env:
            start = time.monotonic()
            proc = subprocess.run(
                [
                    executable("ansible-playbook"),
                    "-i",
                    str(self.inventory),
                    str(playbook),
                    *args,
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=timeout,
                check=False,
            )
            seconds = time.monotonic() - start
        output = proc.stdout + proc.stderr
        recap = {
            m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in RECAP.finditer(output)
        }
        return PlaybookRun(proc.returncode, seconds, output, recap)

    def deploy_issuer(self) -> PlaybookRun:
        """playbooks/iam.yml: the lab token issuer on the gateway."""
        return self.playbook(playbook=IAM_PLAYBOOK)

    def token(self, group: str = ASTRO) -> str:
        """A real token for GROUP from the lab issuer (`escape-fed token`, as a user gets one)."""
        out = self.inventory.parent.parent / f"token-{group.strip('/').replace('/', '-')}"
        proc = cli("token", str(out), "-f", str(self.path), "--group", group)
        assert proc.returncode == 0, proc.stderr
        return out.read_text().strip()

    def give_token(self, host: str, group: str = ASTRO, token: str | None = None) -> None:
        """Put a token for GROUP (or TOKEN) in TOKEN_FILE on HOST, 0600 (sent on stdin)."""
        state = Path(load_federation(self.path).lab.state_dir)
        proc = subprocess.run(
            ssh_command(state, host, f"umask 077 && cat > {TOKEN_FILE}"),
            input=token if token is not None else self.token(group),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr


def on_shared_lab(lab: DeployedLab) -> DataLab:
    """The data layer of the shared deployed lab (tests/conftest.py), with its own inventory."""
    fed = lab.fed
    inventory = Path(fed.control.state_dir) / fed.federation.name / "inventory" / "hosts.yml"
    assert inventory.exists(), f"{inventory}: the shared lab's deploy rendered no inventory"
    return DataLab(lab.file, inventory)


def data_lab(tmp: Path, tag: str, prefix: str, supernet: str) -> Iterator[DataLab]:
    """Boot an isolated lab copy, render its inventory; yield it; always take it down."""
    path = lab_copy(LAB_FEDERATION, tag, prefix, supernet, tmp)
    cli("lab", "down", str(path))  # leftovers of a killed earlier run
    try:
        up = cli("lab", "up", str(path))
        assert up.returncode == 0, f"lab up failed:\n{up.stderr[-3000:]}"
        out = tmp / "inventory"
        render = cli("render", str(path), "--out", str(out))
        assert render.returncode == 0, render.stderr
        yield DataLab(path, out / "hosts.yml")
    finally:
        cli("lab", "down", str(path))


def origin_opens(lab: DataLab, origin: str, logical_path: str) -> int:
    """How many times ORIGIN opened LOGICAL_PATH (its ofs.trace open log lines)."""
    log = "/var/log/xrootd/origin/xrootd.log"
    proc = lab.ssh(origin, f"grep -c 'ofs_open: .*fn={logical_path}$' {log}")
    return int(proc.stdout.strip() or 0)


def tx_bytes(lab: DataLab, host: str) -> int:
    """Bytes HOST has sent on its lab link (eth0)."""
    # /proc/net/dev is the host's own network namespace (sysfs in a container may not be).
    line = lab.out(host, "grep -E '^ *eth0:' /proc/net/dev")
    return int(line.split(":", 1)[1].split()[8])


TIMED_READ = r"""
import os, subprocess, sys, time
url, reps = sys.argv[1], int(sys.argv[2])
env = dict(os.environ, **dict(kv.split("=", 1) for kv in sys.argv[3:]))
for _ in range(reps):
    start = time.monotonic()
    proc = subprocess.run(["xrdcp", "-f", "-s", url, "/dev/null"], capture_output=True, text=True,
                          env=env)
    print(f"{time.monotonic() - start:.4f} {proc.returncode} {proc.stderr.strip()!r}")
"""


def timed_reads(lab: DataLab, host: str, url: str, reps: int = 1) -> list[tuple[float, int, str]]:
    """Read URL to /dev/null with xrdcp on HOST, REPS times: (seconds, rc, stderr) each.

    The client reads with the token in TOKEN_FILE on HOST (DataLab.give_token), over TLS."""
    rows = []
    for line in lab.python(host, TIMED_READ, url, str(reps), CLIENT_ENV).splitlines():
        seconds, rc, err = line.split(" ", 2)
        rows.append((float(seconds), int(rc), err))
    return rows
