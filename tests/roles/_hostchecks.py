"""Checks of one HTCondor host, on a testinfra host (any backend).

Shared by the pytest lab driver (`_checks.py`, flock mode) and the molecule scenarios'
testinfra tests (`roles/htcondor_*/molecule/default/tests/`), so both assert the same thing.
Each check raises AssertionError naming the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

SECURITY_KNOBS = (
    "SEC_DEFAULT_AUTHENTICATION",
    "SEC_DEFAULT_ENCRYPTION",
    "SEC_DEFAULT_INTEGRITY",
    "SEC_READ_AUTHENTICATION",
    "SEC_READ_ENCRYPTION",
    "SEC_READ_INTEGRITY",
)
PASSWORD_DIR = "/etc/condor/passwords.d"
TOKEN_DIR = "/etc/condor/tokens.d"


def name_of(host: Any) -> str:
    return str(host.backend.get_pytest_id())


def config_val(host: Any, knob: str) -> str | None:
    """`condor_config_val KNOB` on the host: its value, or None when it is not defined."""
    got = host.run(f"condor_config_val {knob}")
    return got.stdout.strip() if got.rc == 0 else None


def config_list(host: Any, knob: str) -> list[str]:
    """A list-valued knob (DAEMON_LIST, STARTD_ATTRS) split on commas and spaces."""
    return (config_val(host, knob) or "").replace(",", " ").split()


def assert_condor_running(host: Any) -> None:
    state = host.run("systemctl is-active condor").stdout.strip()
    assert state == "active", (name_of(host), state)
    assert host.service("condor").is_enabled, name_of(host)


def alive_daemons(host: Any) -> set[str]:
    """Daemons the local condor_master reports alive (`condor_who -daemons`), e.g. 'Collector'."""
    out = host.run("condor_who -daemons").stdout
    alive = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] == "yes":
            alive.add(fields[0])
    return alive


def assert_daemons_alive(host: Any, *daemons: str, timeout: float = 60.0) -> None:
    """Each daemon (condor_who's name: Master, Collector, Schedd, ...) comes up within timeout."""
    deadline = time.monotonic() + timeout
    alive = alive_daemons(host)
    while not set(daemons) <= alive and time.monotonic() < deadline:
        time.sleep(2)
        alive = alive_daemons(host)
    missing = set(daemons) - alive
    assert not missing, f"{name_of(host)}: {sorted(missing)} not alive; alive: {sorted(alive)}"


def assert_security_required(host: Any) -> None:
    """Authentication, encryption and integrity REQUIRED, READ included; FS then IDTOKENS."""
    values = host.check_output("condor_config_val " + " ".join(SECURITY_KNOBS)).split()
    assert [v.upper() for v in values] == ["REQUIRED"] * len(SECURITY_KNOBS), (
        name_of(host),
        dict(zip(SECURITY_KNOBS, values, strict=False)),
    )
    methods = host.check_output("condor_config_val SEC_DEFAULT_AUTHENTICATION_METHODS")
    assert methods.replace(" ", "") == "FS,IDTOKENS", (name_of(host), methods)


def assert_no_wildcard_allow(host: Any) -> None:
    """No ALLOW_* is '*', raw or expanded; the network-facing levels name identities only."""
    found = host.run(r"condor_config_val -dump | grep -E '^ALLOW_.* = \*'")
    assert found.rc == 1 and found.stdout == "", (name_of(host), found.stdout)
    dump = host.check_output("condor_config_val -dump -expand | grep -E '^ALLOW_'")
    for line in dump.splitlines():
        key, _, value = line.partition(" = ")
        entries = value.replace(",", " ").split()
        assert "*" not in entries, (name_of(host), line)
        if key.startswith(("ALLOW_READ", "ALLOW_WRITE", "ALLOW_DAEMON", "ALLOW_ADVERTISE")):
            assert all("@" in e for e in entries), (name_of(host), line)


def assert_key_and_token_dirs_root_only(host: Any) -> None:
    """Both directories root 0700; every token and key in them root 0600."""
    for d in (PASSWORD_DIR, TOKEN_DIR):
        f = host.file(d)
        assert f.is_directory and f.user == "root" and f.mode == 0o700, (name_of(host), d)
        for entry in f.listdir():
            g = host.file(f"{d}/{entry}")
            assert g.user == "root" and g.group == "root" and g.mode == 0o600, (
                name_of(host),
                f"{d}/{entry}",
                oct(g.mode),
            )


def signing_keys(host: Any) -> list[str]:
    return sorted(host.file(PASSWORD_DIR).listdir())


def tokens(host: Any) -> list[str]:
    return sorted(host.file(TOKEN_DIR).listdir())


def assert_holds_no_signing_key(host: Any) -> None:
    keys = signing_keys(host)
    assert keys == [], f"{name_of(host)} holds a signing key: {keys}"


def assert_holds_the_pool_key(host: Any) -> None:
    keys = signing_keys(host)
    assert keys == ["POOL"], (name_of(host), keys)
    key = host.file(f"{PASSWORD_DIR}/POOL")
    assert key.user == "root" and key.mode == 0o600 and key.size >= 32, (name_of(host), key.size)


def collector_ads(cm: Any, adtype: str = "", constraint: str = "true") -> list[dict[str, Any]]:
    """Ads in the collector on `cm`, read there as local root (FS authentication).

    `adtype` is a condor_status option (-schedd, -collector); the default is the slot ads.
    """
    got = cm.run(f"condor_status {adtype} -constraint '{constraint}' -json")
    assert got.rc == 0, (name_of(cm), got.stderr)
    data: list[dict[str, Any]] = json.loads(got.stdout) if got.stdout.strip() else []
    return data


def wait_for_ads(
    cm: Any, adtype: str, constraint: str, count: int, timeout: float = 90.0
) -> list[dict[str, Any]]:
    """Poll the collector on `cm` until `count` ads match; return the last answer."""
    deadline = time.monotonic() + timeout
    ads = collector_ads(cm, adtype, constraint)
    while len(ads) < count and time.monotonic() < deadline:
        time.sleep(3)
        ads = collector_ads(cm, adtype, constraint)
    return ads


def inventory_host(host: Any, fqdn: str, ansible_inventory: str) -> Any:
    """The testinfra host (over the same Ansible inventory) whose escape_fed fqdn is `fqdn`."""
    import testinfra  # type: ignore[import-untyped]

    pool_hosts = host.ansible.get_variables()["escape_fed_pool_hosts"]
    names = [n for n, h in pool_hosts.items() if h["fqdn"] == fqdn]
    assert names, f"{fqdn} is not a host of escape_fed_pool_hosts"
    return testinfra.get_host(f"ansible://{names[0]}", ansible_inventory=ansible_inventory)


def pool_central_managers(host: Any) -> list[str]:
    return [str(p["central_manager"]) for p in host.ansible.get_variables()["escape_fed_pools"]]


def control_query(
    tokens_dir: Path, address: str, adtype: str = "Startd", constraint: str = "true"
) -> list[dict[str, Any]]:
    """Query a collector from the control machine: Python bindings, the READ token in tokens_dir.

    `adtype` names an htcondor.AdTypes member (Startd, Collector, Schedd).
    """
    script = textwrap.dedent(
        """
        import json, sys
        import htcondor
        ads = htcondor.Collector(sys.argv[1]).query(
            getattr(htcondor.AdTypes, sys.argv[2]), constraint=sys.argv[3],
            projection=["Name", "Cpus", "Memory", "ESCAPE_SITE", "ESCAPE_CACHE", "ESCAPE_RSES"])
        print(json.dumps([{k: ad.get(k) for k in ad.keys()} for ad in ads]))
        """
    )
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as cfg:
        cfg.write(
            f"SEC_TOKEN_DIRECTORY = {tokens_dir}\n"
            "SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS\n"
            "SEC_CLIENT_AUTHENTICATION = REQUIRED\n"
            "SEC_CLIENT_ENCRYPTION = REQUIRED\n"
            "SEC_CLIENT_INTEGRITY = REQUIRED\n"
        )
        cfg.flush()
        proc = subprocess.run(
            [sys.executable, "-c", script, address, adtype, constraint],
            capture_output=True,
            text=True,
            env={**os.environ, "CONDOR_CONFIG": cfg.name},
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data: list[dict[str, Any]] = json.loads(proc.stdout)
    return data
