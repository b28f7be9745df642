"""The token tests' handle on the shared global-pool lab (``shared_lab``, tests/conftest.py).

Set ESCAPE_FED_SHARED_LAB=/var/lib/escape-fed/test-e2e-efz/federation.yaml to run against a
lab an earlier session deployed and left up.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from escape_fed.lab.runtime import ssh_command
from escape_fed.model import Federation
from escape_fed.model.schema import Role
from escape_fed.model.view import hosts, hosts_with
from escape_fed.ops.deploy import secrets_dir
from tests.conftest import DeployedLab
from tests.labfed import cli

ISSUER_KEYS = "/var/lib/escape-fed-issuer/keys"


@dataclass
class TokenLab:
    """A deployed lab federation, as the token tests see it."""

    file: Path
    fed: Federation
    workdir: Path
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def secrets(self) -> Path:
        """The federation's secrets directory on the control machine."""
        return secrets_dir(self.fed)

    @property
    def ca(self) -> Path:
        return self.secrets / "ca" / "ca.crt"

    @property
    def state_dir(self) -> Path:
        return Path(self.fed.lab.state_dir)

    def _host(self, name: str) -> Any:
        return next(h for h in hosts(self.fed) if h.name == name)

    def address(self, host: str) -> str:
        return str(self._host(host).address)

    def fqdn(self, host: str) -> str:
        return str(self._host(host).fqdn)

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``command`` as root on a lab host (over the lab's SSH, host keys checked)."""
        proc = subprocess.run(
            ssh_command(self.state_dir, host, command),
            capture_output=True,
            text=True,
            errors="replace",  # logs and binary files are read as text too
            timeout=300,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {command!r} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    @property
    def issuer_host(self) -> str:
        return hosts_with(self.fed, Role.ISSUER)[0].name

    def issuer_key(self) -> dict[str, Any]:
        """The issuer's active private signing key (a JWK), read on the issuer host."""
        proc = self.ssh(self.issuer_host, f'cat "{ISSUER_KEYS}/$(cat {ISSUER_KEYS}/active).jwk"')
        key: dict[str, Any] = json.loads(proc.stdout)
        return key

    def fetched_tokens(self) -> list[str]:
        """Every token :meth:`token` fetched so far."""
        return list(self._tokens.values())

    def token(self, group: str, *extra: str) -> str:
        """A real token for ``group`` from the lab issuer, fetched by `escape-fed token`."""
        out = self.workdir / f"token-{len(self._tokens)}"
        proc = cli("token", str(out), "-f", str(self.file), "--group", group, *extra)
        assert proc.returncode == 0, proc.stderr
        token = out.read_text().strip()
        self._tokens[str(out)] = token
        return token


@pytest.fixture(scope="session")
def token_lab(shared_lab: DeployedLab, tmp_path_factory: pytest.TempPathFactory) -> TokenLab:
    """The token tests' view of the shared global-pool lab (tests/conftest.py)."""
    return TokenLab(shared_lab.file, shared_lab.fed, tmp_path_factory.mktemp("tokens"))
