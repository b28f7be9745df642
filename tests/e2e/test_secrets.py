"""No secret is world-readable on any host, and none is printed in any log or Ansible output.

The secrets are collected from where they live (the issuer's signing keys, the lab clients'
secrets, every host's TLS keys and HTCondor tokens, the tokens the tests fetched), then looked
for everywhere a person or another account could read them: every file the deployment wrote on
every lab host (the host's overlay upper directory) that is readable by others, every log on
the hosts and the journal, escape-fed's deploy logs, and the output of a deploy run in check
mode with diffs (the mode that prints file contents).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from escape_fed.lab.hosts import host_dir
from escape_fed.model.view import hosts
from tests.e2e.conftest import ISSUER_KEYS, TokenLab
from tests.labfed import cli

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1500)]

# What secret material looks like, whatever its value.
SECRET_SHAPES = (
    re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{20,}"),  # a JWT
    re.compile(rb'"d"\s*:\s*"[A-Za-z0-9_-]{20,}"'),  # the private part of a JWK
)
MAX_SCAN = 2 * 1024 * 1024  # larger files are data (datasets, cache blocks), not configuration


def _world_readable(merged: Path, rel: Path) -> bool:
    """Could an unprivileged account read ``rel`` on the host (file o+r, every parent o+x)?"""
    mode = os.lstat(merged / rel).st_mode
    if not mode & stat.S_IROTH:
        return False
    parent = rel.parent
    while parent != Path("."):
        if not os.stat(merged / parent).st_mode & stat.S_IXOTH:
            return False
        parent = parent.parent
    return True


def _written_files(lab: TokenLab, host: str) -> Iterator[Path]:
    """Regular files the deployment created or changed on a lab host (relative paths)."""
    upper = host_dir(lab.state_dir, host) / "upper"
    for root, dirs, files in os.walk(upper):
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "run")]
        for name in files:
            path = Path(root) / name
            if stat.S_ISREG(os.lstat(path).st_mode):
                yield path.relative_to(upper)


def _secret_values(lab: TokenLab) -> dict[str, str]:
    """Every secret value of the deployment, named by where it lives."""
    values: dict[str, str] = {}
    keys = lab.ssh(lab.issuer_host, f"cat {ISSUER_KEYS}/*.jwk").stdout
    for i, text in enumerate(re.findall(r"\{[^{}]*\}", keys)):
        values[f"issuer key {i}"] = json.loads(text)["d"]
    clients = lab.secrets / "iam" / "clients"
    for path in sorted(clients.glob("*.secret")):
        values[f"client secret {path.name}"] = path.read_text().strip()
    for h in hosts(lab.fed):
        out = lab.ssh(
            h.name,
            "for f in /etc/escape-fed/tls/*.key; do sed -n 2p $f; done 2>/dev/null;"
            " cat /etc/condor/tokens.d/* 2>/dev/null; true",
        ).stdout
        for j, line in enumerate(out.split()):
            if len(line) >= 40:
                # a JWT is identified by its signature, a PEM key by its first base64 line
                values[f"{h.name} secret {j}"] = line.rsplit(".", 1)[-1]
    for i, token in enumerate(lab.fetched_tokens()):
        values[f"fetched token {i}"] = token.rsplit(".", 1)[-1]
    assert len(values) > 10, values.keys()
    return values


@pytest.fixture(scope="module")
def secrets(token_lab: TokenLab) -> dict[str, str]:
    token_lab.token(next(iter(token_lab.fed.iam.groups)))  # at least one real user token
    return _secret_values(token_lab)


def test_no_secret_is_world_readable_on_any_host(
    token_lab: TokenLab, secrets: dict[str, str]
) -> None:
    leaks: list[str] = []
    scanned = 0
    for h in hosts(token_lab.fed):
        base = host_dir(token_lab.state_dir, h.name)
        for rel in _written_files(token_lab, h.name):
            path = base / "upper" / rel
            if path.stat().st_size > MAX_SCAN or not _world_readable(base / "merged", rel):
                continue
            scanned += 1
            data = path.read_bytes()
            shapes = [p.pattern[:30] for p in SECRET_SHAPES if p.search(data)]
            values = [n for n, v in secrets.items() if v.encode() in data]
            if shapes or values:
                leaks.append(f"{h.name}:/{rel}: {shapes + values}")
    assert scanned > 100  # the deployment's configuration files were looked at
    assert leaks == []


def test_secret_files_are_owner_only(token_lab: TokenLab) -> None:
    checks = {
        token_lab.issuer_host: f"{ISSUER_KEYS}/*.jwk",
        "cm": "/etc/condor/passwords.d/*",
    }
    for h in hosts(token_lab.fed):
        checks.setdefault(h.name, "")
        checks[h.name] += " /etc/condor/tokens.d/* /etc/escape-fed/tls/*.key"
    for host, pattern in checks.items():
        out = token_lab.ssh(host, f"stat -c '%a %n' {pattern} 2>/dev/null; true").stdout.split("\n")
        rows = [line.split(" ", 1) for line in out if line]
        assert rows, f"{host}: none of {pattern} exists"
        loose = [name for mode, name in rows if int(mode, 8) & 0o007]
        assert loose == [], f"{host}: readable by others: {loose}"
    for path in token_lab.secrets.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0 or path.suffix == ".crt", path


def test_no_secret_in_any_log_on_the_hosts(token_lab: TokenLab, secrets: dict[str, str]) -> None:
    for h in hosts(token_lab.fed):
        logs = token_lab.ssh(
            h.name,
            "journalctl --no-pager -o cat 2>/dev/null;"
            " cat $(find /var/log -type f) 2>/dev/null; true",
        ).stdout
        assert len(logs) > 0
        found = [name for name, value in secrets.items() if value in logs]
        assert found == [], f"{h.name}: secrets in logs: {found}"


def test_no_secret_in_escape_fed_logs_or_ansible_output(
    token_lab: TokenLab, secrets: dict[str, str]
) -> None:
    # check mode with --diff prints what every task would write: the riskiest output there is
    proc = cli("-v", "deploy", str(token_lab.file), "--full", "--check", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = {"deploy --check output": proc.stdout + proc.stderr}
    logs = Path(token_lab.fed.control.state_dir) / token_lab.fed.federation.name / "logs"
    for log in sorted(logs.glob("*.log")):
        outputs[str(log)] = log.read_text(errors="replace")
    assert len(outputs) >= 3  # the demo's deploy log, this run's log, its output
    for where, text in outputs.items():
        found = [name for name, value in secrets.items() if value in text]
        assert found == [], f"{where}: {found}"
        assert not any(p.search(text.encode()) for p in SECRET_SHAPES), where
