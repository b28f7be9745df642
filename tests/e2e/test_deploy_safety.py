"""Deploy safety on the shared lab: one deploy at a time, a killed deploy is finished by the
next plain one, and a control machine that lost its secrets is never told "nothing changed".

Each test changes the lab (a deploy, a restart, a secrets directory moved away), so they run
last on it (destructive, orders 4 and 5) and leave it as deployed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from escape_fed.model.view import hosts
from escape_fed.ops.deploy import state_dir
from tests.e2e.conftest import TokenLab
from tests.labfed import ROOT, cli

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1500)]

# Every daemon the roles start, and the files it reads its configuration from.
DAEMONS = {
    "condor": "/etc/condor/condor_config /etc/condor/config.d/*",
    "xrootd@origin": "/etc/xrootd/xrootd-origin.cfg /etc/xrootd/scitokens-origin.cfg",
    "xrootd@xcache": "/etc/xrootd/xrootd-xcache.cfg /etc/xrootd/scitokens-xcache.cfg",
    "escape-fed-issuer": "/etc/escape-fed-issuer/config.json",
    "apache2": "/etc/apache2/apache2.conf /etc/apache2/sites-enabled/*",
}


def _start_deploy(lab: TokenLab, *args: str) -> subprocess.Popen[str]:
    """`escape-fed deploy ARGS FILE` in its own process group, stderr readable line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", "escape_fed", "deploy", *args, str(lab.file), "--output", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """Read ``proc``'s stderr until a line contains ``needle``; the lines read so far."""
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"deploy ended before {needle!r}:\n{''.join(seen)[-3000:]}")
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no {needle!r} within {timeout} s:\n{''.join(seen)[-3000:]}")


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (ansible-runner starts ansible-playbook in a session
    of its own, so a process group alone does not reach it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _kill_deploy(proc: subprocess.Popen[str]) -> None:
    """Kill the deploy as an operator's Ctrl-C-then-kill -9 would: its whole tree."""
    tree = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGTERM)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _stale_daemons(lab: TokenLab) -> dict[str, list[str]]:
    """Per host, the daemons that run on an older configuration than the one on disk: active,
    started before their newest configuration file was written."""
    out: dict[str, list[str]] = {}
    for h in hosts(lab.fed):
        script = "; ".join(
            f"if systemctl -q is-active {unit}; then "
            f's=$(date -d "$(systemctl show -p ActiveEnterTimestamp --value {unit})" +%s); '
            f"m=$(stat -c %Y {files} 2>/dev/null | sort -n | tail -1); "
            f'echo "{unit} $s ${{m:-0}}"; fi'
            for unit, files in DAEMONS.items()
        )
        proc = lab.ssh(h.name, script)
        for line in proc.stdout.splitlines():
            unit, started, written = line.split()
            if int(started) < int(written):
                out.setdefault(h.name, []).append(f"{unit} (started {started}, config {written})")
    return out


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file under ``path``."""
    return {
        str(p.relative_to(path)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.mark.destructive(order=4)
def test_a_second_concurrent_deploy_exits_2_and_changes_nothing(token_lab: TokenLab) -> None:
    state = state_dir(token_lab.fed)
    first = _start_deploy(token_lab)
    try:
        _wait_for_line(first, "configure:", timeout=600)  # past the lock, the lab, the inventory
        before_state, before_secrets = _tree(state / "inventory"), _tree(token_lab.secrets)
        started = time.monotonic()
        second = cli("deploy", str(token_lab.file), "--output", "json")
        took = time.monotonic() - started
        assert first.poll() is None, "the first deploy ended before the second one ran"
        after_state, after_secrets = _tree(state / "inventory"), _tree(token_lab.secrets)
    finally:
        out, err = first.communicate(timeout=900)
    assert second.returncode == 2, second.stderr
    assert second.stdout == ""
    assert f"pid {first.pid}: " in second.stderr and "another deploy" in second.stderr
    assert str(state / "deploy.lock") in second.stderr and "nothing was changed" in second.stderr
    assert "configure:" not in second.stderr and "hosts:" not in second.stderr
    assert took < 30, f"the second deploy took {took:.0f} s to refuse"
    assert (before_state, before_secrets) == (after_state, after_secrets)
    # positive control: the deploy that held the lock went through
    assert first.returncode == 0, err[-3000:]
    assert json.loads(out)["ok"] is True


DRIFT = "ESCAPE_FED_DRIFT"
POOL_CONFIG = "/etc/condor/config.d/11-escape-fed-pool.conf"  # htcondor_common's


def _startd_knob(lab: TokenLab, host: str) -> str | None:
    """DRIFT as the running startd on HOST has it (its configuration in memory)."""
    proc = lab.ssh(host, f"condor_config_val -startd {DRIFT}", check=False)
    value = proc.stdout.strip()
    return value if proc.returncode == 0 and not value.startswith("Not defined") else None


@pytest.mark.destructive(order=4)
def test_a_deploy_killed_after_a_change_is_finished_by_the_next_plain_deploy(
    token_lab: TokenLab,
) -> None:
    """A real change: wn-a1's pool configuration drifted (a knob added, the daemons reconfigured
    with it). A full deploy puts the file back and is killed right after that changed task,
    before its handler (condor_reconfig, at the end of the play) ran: the startd still runs the
    drifted configuration. The next plain deploy runs every role and every daemon ends on the
    configuration on disk."""
    host = "wn-a1"
    token_lab.ssh(host, f"echo '{DRIFT} = drifted' >> {POOL_CONFIG} && condor_reconfig")
    deadline = time.monotonic() + 60
    while _startd_knob(token_lab, host) != "drifted":
        assert time.monotonic() < deadline, "the startd did not take the drifted configuration"
        time.sleep(2)

    killed = _start_deploy(token_lab, "--converge")
    try:
        _wait_for_line(killed, f"{host}: changed: ", timeout=900)
    finally:
        _kill_deploy(killed)
    assert killed.returncode != 0
    assert DRIFT not in token_lab.ssh(host, f"cat {POOL_CONFIG}").stdout  # the file is back
    assert _startd_knob(token_lab, host) == "drifted"  # its handler was lost with the run

    again = cli("deploy", str(token_lab.file), "--output", "json", timeout=1500)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert result["skipped"] is False, "the plain deploy after a killed one only checked health"
    assert "an earlier deploy was interrupted" in again.stderr
    deadline = time.monotonic() + 60
    while (knob := _startd_knob(token_lab, host)) is not None:
        assert time.monotonic() < deadline, f"wn-a1's startd still runs the old config ({knob})"
        time.sleep(2)
    assert _stale_daemons(token_lab) == {}  # every daemon started after its config was written
    # positive control: the federation works on that configuration (a token from the issuer)
    assert token_lab.token("/escape/astro")


@pytest.fixture
def secrets_moved_away(token_lab: TokenLab) -> Iterator[Path]:
    """The control machine's secrets directory moved aside; put back afterwards."""
    secrets = token_lab.secrets
    aside = secrets.with_name(secrets.name + ".moved-by-test")
    shutil.rmtree(aside, ignore_errors=True)
    secrets.rename(aside)
    try:
        yield aside
    finally:
        if secrets.exists():  # whatever a deploy made in its place
            shutil.rmtree(secrets)
        aside.rename(secrets)


@pytest.mark.destructive(order=5)
def test_a_plain_deploy_with_the_secrets_gone_says_so_and_changes_nothing(
    token_lab: TokenLab, secrets_moved_away: Path
) -> None:
    state = state_dir(token_lab.fed)
    before = _tree(state / "inventory")
    proc = cli("deploy", str(token_lab.file), timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "nothing changed since the last deploy" not in proc.stderr + proc.stdout
    message = proc.stderr
    assert "lost secrets" in message, message
    secrets = token_lab.secrets
    for lost in ("ca/ca.key", "ca/ca.crt", "iam/clients/escape-lab-astro.secret"):
        assert str(secrets / lost) in message, message
    assert "deploy --converge" in message and "Restore them" in message
    assert not secrets.exists(), "the refused deploy made a new secrets directory"
    assert _tree(state / "inventory") == before
    # positive control: with the secrets back, the same plain deploy goes through
    secrets_moved_away.rename(secrets)
    try:
        ok = cli("deploy", str(token_lab.file), "--output", "json", timeout=1500)
    finally:
        secrets.rename(secrets_moved_away)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert json.loads(ok.stdout)["ok"] is True and "lost secrets" not in ok.stderr
