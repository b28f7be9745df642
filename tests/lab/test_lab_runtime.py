"""The lab runtime for real: one lab (2 sites x 2 hosts + a 1-host central site) for the module.

Needs root, systemd-nspawn (systemd-container) and debootstrap; the image is cached under
/var/lib/escape-fed/lab/images, shared with the default lab (built on first use, about 75 s).
The lab uses its own prefix and addresses (``eft``, 10.77.100-103) so it never touches a lab
that is already running.
The tests run in file order: up, reach, isolate, up again, stop/start, down.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from escape_fed.lab import (
    ansible_vars,
    down,
    lab_leftovers,
    load_state,
    ssh_command,
    start_host,
    status,
    stop_host,
    up,
)
from escape_fed.lab import network as N
from escape_fed.lab.demo import demo_spec
from escape_fed.lab.hosts import CGROUP_PARENT, CGROUP_ROOT
from escape_fed.lab.spec import LabSpec
from tests.conftest import require_root

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

STATE_DIR = Path(os.environ.get("ESCAPE_FED_TEST_LAB", "/var/lib/escape-fed/test-lab"))
IMAGE_CACHE = Path(os.environ.get("ESCAPE_FED_IMAGE_CACHE", "/var/lib/escape-fed/lab/images"))
PREFIX = "eft"
REPO = Path(__file__).resolve().parents[2]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_spec() -> LabSpec:
    return demo_spec(STATE_DIR, prefix=PREFIX, third=100, name="test-lab", image_cache=IMAGE_CACHE)


def run_ssh(
    spec: LabSpec, host: str, cmd: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ssh_command(spec.state_dir, host, cmd),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert proc.returncode == 0, f"{host}: `{cmd}` failed: {proc.stderr}{proc.stdout}"
    return proc


def root_routes() -> list[str]:
    out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True)
    return sorted(out.stdout.splitlines())


@pytest.fixture(scope="module")
def spec() -> Iterator[LabSpec]:
    """Bring the lab up once, from nothing; always take it down at the end."""
    require_root()
    for tool, pkg in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install {pkg}")
    lab_spec = make_spec()
    down(lab_spec)  # whatever an earlier (killed) run left is removed first
    left = lab_leftovers(PREFIX, STATE_DIR)
    assert not any(left.values()), f"lab objects exist before up: {left}"
    routes_before = root_routes()
    try:
        up(lab_spec, _say)
        lab_spec_routes[:] = [r for r in root_routes() if r not in routes_before]
        yield lab_spec
    finally:
        down(lab_spec, _say)


lab_spec_routes: list[str] = []  # routes `up` added to the root namespace


# --------------------------------------------------------------------------- up & reach


def test_up_brings_every_host(spec: LabSpec) -> None:
    rows = status(spec.state_dir)
    assert [r["host"] for r in rows] == [h.name for h in spec.hosts]
    for row in rows:
        assert row["state"] == "running", row
        assert isinstance(row["pid"], int) and Path(f"/proc/{row['pid']}").exists()
        mem = row["memory_mib"]
        assert isinstance(mem, float) and 1 < mem < 200, row


def test_each_host_answers_ssh_with_its_own_name_and_address(spec: LabSpec) -> None:
    for host in spec.hosts:
        out = run_ssh(spec, host.name, "hostname; hostname -f; ip -4 -o addr show dev eth0").stdout
        lines = out.splitlines()
        assert lines[0] == host.name
        assert lines[1] == host.fqdn
        assert f"inet {host.address}/24" in lines[2]


def test_each_host_has_its_own_identity(spec: LabSpec) -> None:
    ids = {
        h.name: run_ssh(
            spec, h.name, "cat /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub"
        ).stdout.split("\n", 1)
        for h in spec.hosts
    }
    machine_ids = {v[0] for v in ids.values()}
    host_keys = {v[1].split()[1] for v in ids.values()}
    assert len(machine_ids) == len(host_keys) == len(spec.hosts)
    known = (spec.state_dir / "ssh/known_hosts").read_text()
    for key in host_keys:
        assert key in known
    key_file = spec.state_dir / "ssh/id_ed25519"
    assert key_file.stat().st_mode & 0o777 == 0o600


def _ansible_bin() -> str:
    for candidate in (REPO / ".venv/bin/ansible", Path(sys.executable).parent / "ansible"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("ansible")
    if found is None:
        pytest.fail("ansible is missing: install the dev extras (ansible-core) into the venv")
    return found


def _ansible_ping(spec: LabSpec, tmp: Path, known_hosts: Path | None = None) -> str:
    """`ansible all -m ping` with its own home, temp and ControlPath dirs under ``tmp``.

    A fresh ``tmp`` per run: a ControlPersist master left by an earlier run would skip the
    host-key check.
    """
    tmp.mkdir()
    hosts: dict[str, dict[str, str]] = {}
    for h in spec.hosts:
        v = ansible_vars(spec.state_dir, h.name)
        if known_hosts is not None:
            v["ansible_ssh_common_args"] = v["ansible_ssh_common_args"].replace(
                str(spec.state_dir / "ssh/known_hosts"), str(known_hosts)
            )
        hosts[h.name] = v
    inventory = tmp / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    env = dict(os.environ)
    for var, sub in (
        ("ANSIBLE_HOME", "home"),
        ("ANSIBLE_LOCAL_TEMP", "tmp"),
        ("ANSIBLE_SSH_CONTROL_PATH_DIR", "cp"),
    ):
        (tmp / sub).mkdir(exist_ok=True)
        env[var] = str(tmp / sub)
    env["ANSIBLE_HOST_KEY_CHECKING"] = "True"
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run(
        [_ansible_bin(), "-i", str(inventory), "all", "-m", "ansible.builtin.ping"],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp,
    )
    return proc.stdout + proc.stderr


def test_ansible_reaches_every_host_with_host_key_checking(spec: LabSpec, tmp_path: Path) -> None:
    out = _ansible_ping(spec, tmp_path / "good")
    for h in spec.hosts:
        assert re.search(rf'^{h.name} \| SUCCESS => {{\n(.*\n)*?\s+"ping": "pong"', out, re.M), out
    # ...and host-key checking is really on: with an empty known_hosts every host is refused.
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    out = _ansible_ping(spec, tmp_path / "bad", known_hosts=empty)
    for h in spec.hosts:
        assert re.search(rf"^{h.name} \| UNREACHABLE!", out, re.M), out
    assert "Host key verification failed" in out


def test_ssh_config_file_works(spec: LabSpec) -> None:
    host = spec.hosts[0]
    proc = subprocess.run(
        ["ssh", "-F", str(spec.state_dir / "ssh_config"), host.fqdn, "hostname"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == host.name


# --------------------------------------------------------------------------- network shape


def test_sites_reach_each_other_only_through_the_router(spec: LabSpec) -> None:
    a1, a2, b1 = spec.hosts[0], spec.hosts[1], spec.hosts[2]
    gw_a = spec.sites[0].gateway
    across = run_ssh(spec, a1.name, f"ip route get {b1.address}").stdout
    assert f"via {gw_a} dev eth0" in across
    inside = run_ssh(spec, a1.name, f"ip route get {a2.address}").stdout
    assert "via" not in inside
    # by name (from /etc/hosts), across the router: TTL drops by one
    ping = run_ssh(spec, a1.name, f"ping -c 2 -W 2 {b1.fqdn}").stdout
    assert "2 received" in ping and "ttl=63" in ping
    ping = run_ssh(spec, a1.name, f"ping -c 1 -W 2 {a2.name}").stdout
    assert "1 received" in ping and "ttl=64" in ping
    central = spec.hosts[-1]
    ping = run_ssh(spec, b1.name, f"ping -c 1 -W 2 {central.fqdn}").stdout
    assert "1 received" in ping


def test_no_host_has_a_route_off_the_lab(spec: LabSpec) -> None:
    for host in spec.hosts:
        routes = run_ssh(spec, host.name, "ip -4 route show; ip -6 route show").stdout
        assert "default" not in routes, f"{host.name} has a default route: {routes}"
        off = run_ssh(spec, host.name, "ip route get 1.1.1.1", check=False)
        assert off.returncode != 0 and "unreachable" in off.stderr.lower(), off
    ping = run_ssh(spec, spec.hosts[0].name, "ping -c 1 -W 1 1.1.1.1", check=False)
    assert ping.returncode != 0
    # the router forwards between lab subnets only: it has no default route either
    router_routes = subprocess.run(
        ["ip", "-n", N.router_ns(PREFIX), "-4", "route", "show"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout
    assert "default" not in router_routes
    for line in router_routes.splitlines():
        assert ipaddress.IPv4Network(line.split()[0]).subnet_of(N.supernet(spec)), line


def test_root_namespace_gets_one_route_and_the_wan_is_shaped(spec: LabSpec) -> None:
    supernet = str(N.supernet(spec))
    assert sorted(r.split()[0] for r in lab_spec_routes) == sorted(
        [spec.control_subnet, supernet]
    ), lab_spec_routes
    assert any(f"via {N.router_control_address(spec)}" in r for r in lab_spec_routes)
    qdiscs = subprocess.run(
        ["ip", "netns", "exec", N.router_ns(PREFIX), "tc", "qdisc", "show"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout
    for site in spec.sites:
        for dev in N.wan_links(spec, site):
            assert "qdisc tbf" in qdiscs and f"dev {dev} root" in qdiscs, qdiscs
    assert qdiscs.count(f"rate {spec.wan_mbit}Mbit") == 2 * len(spec.sites), qdiscs
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    router_forward = subprocess.run(
        ["ip", "netns", "exec", N.router_ns(PREFIX), "sysctl", "-n", "net.ipv4.ip_forward"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert router_forward == "1"
    host_forward = run_ssh(spec, spec.hosts[0].name, "cat /proc/sys/net/ipv4/ip_forward").stdout
    assert host_forward.strip() == "0"
    assert forward in ("0", "1")  # untouched by the lab (the test cannot know the original)


def test_hosts_have_their_own_cgroups(spec: LabSpec) -> None:
    for hierarchy in ("systemd", "unified"):
        root = CGROUP_ROOT / hierarchy
        if not root.is_dir():
            continue
        assert not (root / "payload").exists() and not (root / "supervisor").exists()
        for host in spec.hosts:
            assert (root / CGROUP_PARENT / host.netns).is_dir()


# --------------------------------------------------------------------------- lifecycle


def test_up_again_is_a_no_op(spec: LabSpec) -> None:
    before = {r["host"]: r["pid"] for r in status(spec.state_dir)}
    start = time.monotonic()
    state = up(spec)
    took = time.monotonic() - start
    assert state.reused
    assert took < 3, f"up of a running lab took {took:.1f} s"
    assert {r["host"]: r["pid"] for r in status(spec.state_dir)} == before


def test_stop_and_start_one_host(spec: LabSpec) -> None:
    host = spec.hosts[3]
    before = run_ssh(spec, host.name, "cat /etc/machine-id; touch /root/survives").stdout
    old_pid = next(r["pid"] for r in status(spec.state_dir) if r["host"] == host.name)
    stop_host(spec.state_dir, host.name)
    row = next(r for r in status(spec.state_dir) if r["host"] == host.name)
    assert row["state"] == "stopped"
    assert not Path(f"/proc/{old_pid}").exists()
    assert run_ssh(spec, host.name, "true", check=False).returncode != 0
    others = [r for r in status(spec.state_dir) if r["host"] != host.name]
    assert all(r["state"] == "running" for r in others)
    start_host(spec.state_dir, host.name)
    row = next(r for r in status(spec.state_dir) if r["host"] == host.name)
    assert row["state"] == "running" and row["pid"] != old_pid
    # same host key (StrictHostKeyChecking=yes passes), same identity, same disk
    after = run_ssh(spec, host.name, "cat /etc/machine-id; ls /root/survives; hostname").stdout
    assert after.splitlines()[0] == before.splitlines()[0]
    assert after.splitlines()[2] == host.name


def test_down_leaves_nothing_and_twice_is_fine(spec: LabSpec) -> None:
    pids = [r["pid"] for r in status(spec.state_dir)]
    down(spec)
    left = lab_leftovers(PREFIX, STATE_DIR)
    assert not any(left.values()), left
    # ...and by listing the kernel's own view, not only the lab's helper:
    netns = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True
    ).stdout
    assert f"{PREFIX}-" not in netns
    links = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True, text=True).stdout
    assert f" {PREFIX}-" not in links
    assert str(STATE_DIR) not in Path("/proc/mounts").read_text()
    for hierarchy in ("systemd", "unified", "memory"):
        parent = CGROUP_ROOT / hierarchy / CGROUP_PARENT
        assert not parent.exists() or not any(
            p.name.startswith(PREFIX + "-") for p in parent.iterdir()
        )
    for pid in pids:
        assert isinstance(pid, int) and not Path(f"/proc/{pid}").exists()
    assert load_state(STATE_DIR) is None
    assert status(STATE_DIR) == []
    down(spec)  # twice is fine
    down(STATE_DIR)


def test_down_removes_leftovers_of_a_killed_run(spec: LabSpec) -> None:
    # What a killed `up` leaves: a namespace with a veth, a link in the root namespace, a cgroup.
    ns, link = f"{PREFIX}-junk", f"{PREFIX}-junk0"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(
        ["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns], check=True
    )
    cg = CGROUP_ROOT / "systemd" / CGROUP_PARENT / f"{PREFIX}-junk"
    cg.mkdir(parents=True)
    assert lab_leftovers(PREFIX, STATE_DIR)["netns"] == [ns]
    down(STATE_DIR, prefix=PREFIX)
    left = lab_leftovers(PREFIX, STATE_DIR)
    assert not any(left.values()), left
    assert not cg.exists()
