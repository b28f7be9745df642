"""The token lab: one deployed federation shared by every token test module of a session.

Brought up by the README's main command (`escape-fed demo`) on an isolated copy of the lab
federation, taken down at the end of the session even on failure. Set
ESCAPE_FED_TOKEN_LAB=/path/to/federation.yaml to run the token tests against a lab that is
already deployed instead (it is left up).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from escape_fed.lab.runtime import ssh_command
from escape_fed.model import Federation, load_federation
from escape_fed.model.schema import Role
from escape_fed.model.view import hosts, hosts_with
from escape_fed.ops.deploy import secrets_dir
from tests.conftest import LAB_FEDERATION
from tests.labfed import cli, lab_copy

ISSUER_KEYS = "/var/lib/escape-fed-issuer/keys"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Key rotation changes the issuer every other token test relies on: run it last."""
    items.sort(key=lambda item: item.get_closest_marker("rotation") is not None)


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
def token_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenLab]:
    if os.geteuid() != 0:
        pytest.skip("the lab tier needs root")
    workdir = tmp_path_factory.mktemp("tokens")
    given = os.environ.get("ESCAPE_FED_TOKEN_LAB")
    if given:
        path = Path(given)
        yield TokenLab(path, load_federation(path), workdir)
        return
    path = lab_copy(LAB_FEDERATION, "e2e-efz", "efz", "10.92.0.0/16", workdir)
    cli("lab", "down", str(path))
    try:
        proc = cli("demo", str(path), "--output", "json", timeout=1500)
        assert proc.returncode == 0, f"demo failed:\n{proc.stderr[-3000:]}"
        yield TokenLab(path, load_federation(path), workdir)
    finally:
        cli("lab", "down", str(path))
