"""The lab's lifecycle: up, down, status, one host's stop/start, and how to reach the hosts.

State lives in ``state_dir/lab.json`` (the spec, the image, each host's nspawn pid and start
time); it is written as hosts start, so a killed ``up`` can still be taken down. ``down`` also
finds what a killed run left behind by name (``<prefix>-*`` namespaces and links, mounts under
``state_dir``, the ``escape-fed-lab`` cgroups).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from escape_fed.errors import BadInput, OperationFailed
from escape_fed.lab import hosts as H
from escape_fed.lab import image as I
from escape_fed.lab import network as N
from escape_fed.lab._sys import (
    Progress,
    mounts_under,
    quiet,
    require_root,
    require_tools,
    run,
    safe_rmtree,
    unmount_all_under,
)
from escape_fed.lab.spec import LabHost, LabSite, LabSpec

STATE_FILE = "lab.json"
SSH_READY_TIMEOUT_S = 60.0
TOOLS = {
    "ip": "iproute2",
    "tc": "iproute2",
    "systemd-nspawn": "systemd-container",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mount": "mount",
}


@dataclass
class HostState:
    name: str
    pid: int | None = None
    starttime: int | None = None


@dataclass
class LabState:
    """A running lab as recorded in ``state_dir/lab.json``."""

    spec: LabSpec
    image: Path
    hosts: dict[str, HostState] = field(default_factory=dict)
    up_seconds: float | None = None
    reused: bool = False  # True when `up` found the same lab already running


# --------------------------------------------------------------------------- (de)serialisation


def spec_to_dict(spec: LabSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["state_dir"] = str(spec.state_dir)
    data["image_cache"] = str(spec.image_cache) if spec.image_cache is not None else None
    return data


def spec_from_dict(data: dict[str, Any]) -> LabSpec:
    d = dict(data)
    d["state_dir"] = Path(d["state_dir"])
    d["image_cache"] = Path(d["image_cache"]) if d.get("image_cache") else None
    d["sites"] = tuple(LabSite(**s) for s in d["sites"])
    d["hosts"] = tuple(LabHost(**h) for h in d["hosts"])
    d["image_packages"] = tuple(d.get("image_packages", ()))
    return LabSpec(**d)


def _state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def _save(state: LabState) -> None:
    path = _state_path(state.spec.state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "spec": spec_to_dict(state.spec),
                "image": str(state.image),
                "prefix": state.spec.prefix,
                "up_seconds": state.up_seconds,
                "hosts": {n: asdict(h) for n, h in state.hosts.items()},
            },
            indent=2,
        )
    )
    tmp.replace(path)


def load_state(state_dir: Path) -> LabState | None:
    """The recorded lab of ``state_dir``, or None if there is none."""
    path = _state_path(state_dir)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        spec = spec_from_dict(raw["spec"])
        hosts = {n: HostState(**h) for n, h in raw.get("hosts", {}).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise OperationFailed(
            f"{path} is not a lab state file ({exc}): remove it, then run `escape-fed lab down`"
        ) from exc
    return LabState(
        spec=spec, image=Path(raw["image"]), hosts=hosts, up_seconds=raw.get("up_seconds")
    )


def _require_state(state_dir: Path) -> LabState:
    state = load_state(state_dir)
    if state is None:
        raise OperationFailed(f"no lab is recorded in {state_dir}: run `escape-fed lab up` first")
    return state


def _running(state: LabState) -> dict[str, bool]:
    return {
        h.name: (
            h.name in state.hosts
            and H.is_ours(state.hosts[h.name].pid or -1, state.hosts[h.name].starttime)
        )
        for h in state.spec.hosts
    }


# --------------------------------------------------------------------------- ssh helpers


def _ssh_options(state_dir: Path) -> list[str]:
    return [
        "-F", "/dev/null",
        "-i", str(H.lab_key(state_dir)),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={H.known_hosts(state_dir)}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=5",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip


def _find_host(spec: LabSpec, host: str) -> LabHost:
    for h in spec.hosts:
        if host in (h.name, h.fqdn, h.address):
            return h
    names = ", ".join(h.name for h in spec.hosts)
    raise BadInput(f"no lab host {host!r}: the lab has {names}")


def ssh_command(
    state_dir: Path, host: str, cmd: list[str] | tuple[str, ...] | str = ()
) -> list[str]:
    """argv running ``cmd`` on a lab host over SSH (lab key, host-key checking on, batch mode)."""
    spec = _require_state(state_dir).spec
    h = _find_host(spec, host)
    tail = [cmd] if isinstance(cmd, str) else list(cmd)
    return ["ssh", *_ssh_options(state_dir), f"root@{h.address}", *tail]


def ansible_vars(state_dir: Path, host: str) -> dict[str, str]:
    """Ansible connection variables for one lab host (host-key checking stays on)."""
    spec = _require_state(state_dir).spec
    h = _find_host(spec, host)
    return {
        "ansible_host": h.address,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(H.lab_key(state_dir)),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={H.known_hosts(state_dir)} -o StrictHostKeyChecking=yes "
            "-o IdentitiesOnly=yes -o GlobalKnownHostsFile=/dev/null"
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
    }


def _write_ssh_files(spec: LabSpec) -> None:
    sd = spec.state_dir
    H.known_hosts(sd).write_text("".join(H.known_hosts_line(sd, h) + "\n" for h in spec.hosts))
    blocks = ["# Written by escape-fed lab: use with `ssh -F THIS_FILE HOST`."]
    for h in spec.hosts:
        blocks.append(
            f"Host {h.name} {h.fqdn} {h.address}\n"
            f"  HostName {h.address}\n  User root\n"
            f"  IdentityFile {H.lab_key(sd)}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {H.known_hosts(sd)}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 5\n"
        )
    (sd / "ssh_config").write_text("\n".join(blocks))


def _wait_ssh(state_dir: Path, hosts: list[LabHost], timeout: float) -> None:
    """Wait for every host to answer SSH (TCP 22, then a real `ssh hostname`), in parallel."""

    def one(h: LabHost) -> str | None:
        deadline = time.monotonic() + timeout
        last = "port 22 never opened"
        while time.monotonic() < deadline:
            if H.tcp_open(h.address):
                proc = run(
                    ["ssh", *_ssh_options(state_dir), f"root@{h.address}", "hostname"],
                    check=False,
                    timeout=15,
                )
                if proc.returncode == 0 and proc.stdout.strip() == h.name:
                    return None
                last = (proc.stderr.strip() or proc.stdout.strip() or "no output")[-300:]
            time.sleep(0.2)
        return (
            f"host {h.name} ({h.address}) did not answer SSH within {timeout:.0f} s ({last}); "
            f"see its console: {failed_console_log(state_dir, h.name)}"
        )

    if not hosts:
        return
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        errors = [e for e in pool.map(one, hosts) if e]
    if errors:
        raise OperationFailed("\n".join(errors))


# --------------------------------------------------------------------------- up


# Every guest's systemd takes several inotify instances; Linux's default of 128 per user is
# used up by about two labs, and a host past it never starts sshd. The lab raises the limits.
INOTIFY_LIMITS = {"max_user_instances": 8192, "max_user_watches": 1048576}


def raise_inotify_limits(say: Progress) -> None:
    """Raise the machine's inotify limits to what many booted guests need (never lowers)."""
    for name, wanted in INOTIFY_LIMITS.items():
        path = Path("/proc/sys/fs/inotify") / name
        try:
            current = int(path.read_text())
            if current < wanted:
                path.write_text(str(wanted))
                say(f"host: fs.inotify.{name} raised from {current} to {wanted} for the guests")
        except OSError as exc:
            raise OperationFailed(
                f"cannot raise fs.inotify.{name} to {wanted} ({exc}): lab "
                f"hosts cannot start more than a few; set it with sysctl"
            ) from None


def failed_console_log(state_dir: Path, name: str) -> Path:
    """Where a host's console log is kept after a failed ``up`` (its host dir is removed)."""
    return state_dir / "failed" / f"{name}.console.log"


def _keep_console_logs(spec: LabSpec) -> None:
    for h in spec.hosts:
        log = H.console_log(spec.state_dir, h.name)
        if log.exists():
            target = failed_console_log(spec.state_dir, h.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, target)


def check_host_prerequisites() -> None:
    require_root("the lab")
    require_tools(TOOLS)
    if not (H.CGROUP_ROOT / "systemd").is_dir() and not (H.CGROUP_ROOT / "cgroup.procs").exists():
        raise OperationFailed("no cgroup hierarchy under /sys/fs/cgroup: mount cgroups first")


def up(spec: LabSpec, progress: Progress | None = None) -> LabState:
    """Bring the lab up (image, network, hosts, SSH ready); a no-op if it already runs.

    On any failure everything made so far is taken down again and the error raised: the lab is
    left down, never half up.
    """
    say = progress or quiet
    check_host_prerequisites()
    N.validate(spec)
    sd = spec.state_dir
    sd.mkdir(parents=True, exist_ok=True)
    current = load_state(sd)
    if current is not None:
        alive = _running(current)
        same = spec_to_dict(current.spec) == spec_to_dict(spec)
        finished = current.up_seconds is not None  # a killed `up` never recorded its time
        if same and finished and alive and all(alive.values()):
            say(f"lab {spec.name}: already up ({len(alive)} hosts)")
            current.reused = True
            return current
        if any(alive.values()) and not same:
            raise BadInput(
                f"another lab ({current.spec.name}) is running from {sd}: "
                "run `escape-fed lab down` first, or use another state_dir"
            )
        say(f"lab {spec.name}: taking down what is left of an earlier run")
        down(sd)
    else:
        leftover = N.leftovers(spec.prefix)
        if leftover["netns"] or leftover["links"]:
            say(f"lab {spec.name}: cleaning leftovers of a killed run")
            down(spec)

    rootfs = I.build_image(spec, say)
    raise_inotify_limits(say)
    start = time.monotonic()
    state = LabState(spec=spec, image=rootfs)
    try:
        _save(state)
        H.ensure_lab_key(sd)
        N.create(spec, say)
        hosts_file = N.hosts_file(spec)
        say(f"hosts: preparing {len(spec.hosts)} overlays and identities")
        for h in spec.hosts:
            hd = H.host_dir(sd, h.name)
            if hd.exists():  # a fresh host: no state from an earlier lab
                safe_rmtree(hd)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda h: H.make_host_key(sd, h), spec.hosts))
        for h in spec.hosts:
            H.mount_overlay(sd, h, rootfs)
            H.install_identity(sd, h, hosts_file)
        _write_ssh_files(spec)
        say(f"hosts: booting {len(spec.hosts)} hosts")
        for h in spec.hosts:
            pid, st = H.start_nspawn(sd, h)
            state.hosts[h.name] = HostState(h.name, pid, st)
            _save(state)
        _wait_ssh(sd, list(spec.hosts), SSH_READY_TIMEOUT_S)
    except BaseException:
        say(f"lab {spec.name}: up failed, taking down what was made")
        _keep_console_logs(spec)
        try:
            down(spec)
        except Exception as exc:  # the first error is the one to report
            say(f"lab {spec.name}: cleanup after the failure also failed: {exc}")
        raise
    state.up_seconds = round(time.monotonic() - start, 2)
    _save(state)
    say(f"lab {spec.name}: {len(spec.hosts)} hosts up in {state.up_seconds} s")
    return state


# --------------------------------------------------------------------------- down


def down(
    target: LabSpec | Path, progress: Progress | None = None, prefix: str | None = None
) -> None:
    """Take the lab down and clean up everything it made, leftovers of killed runs included.

    ``target`` is a spec or a state dir. Safe to call when nothing runs, and twice.
    """
    say = progress or quiet
    require_root("the lab")
    if isinstance(target, LabSpec):
        spec: LabSpec | None = target
        sd = target.state_dir
    else:
        sd = Path(target)
        spec = None
    state = load_state(sd) if sd.exists() else None
    specs = [s for s in (spec, state.spec if state else None) if s is not None]
    pfx = prefix or (specs[0].prefix if specs else "ef")
    say(f"lab: down ({sd}, objects named {pfx}-*)")

    # 1. Processes: the nspawns recorded in lab.json, and whatever is left in each host's cgroup.
    entries: dict[str, tuple[int | None, int | None, str]] = {}
    for s in specs:
        for h in s.hosts:
            entries[H.cgroup_name(h)] = (None, None, H.cgroup_name(h))
    if state is not None:
        by_name = H.spec_hosts_by_name(state.spec)
        for name, hs in state.hosts.items():
            if name in by_name:
                cg = H.cgroup_name(by_name[name])
                entries[cg] = (hs.pid, hs.starttime, cg)
    for d in H.lab_cgroup_dirs():
        for child in d.iterdir():
            if child.is_dir() and child.name.startswith(pfx + "-") and child.name not in entries:
                entries[child.name] = (None, None, child.name)
    H.stop_processes(entries.values())

    # 2. Overlays (and any other mount) under the state dir.
    if sd.exists():
        unmount_all_under(sd / "hosts")

    # 3. Network: veths before namespaces.
    netns = [h.netns for s in specs for h in s.hosts] + [N.router_ns(pfx)]
    N.destroy(pfx, netns)

    # 4. Cgroups.
    for cg in entries:
        H.remove_cgroups(cg)
    H.remove_cgroup_parent()

    # 5. Host overlays' upper dirs: the next `up` starts from the image again.
    if sd.exists():
        hosts_root = sd / "hosts"
        if hosts_root.exists():
            safe_rmtree(hosts_root)
        _state_path(sd).unlink(missing_ok=True)
    left = N.leftovers(pfx)
    if left["netns"] or left["links"]:
        raise OperationFailed(
            f"lab down left {left}: remove them with `ip netns delete` / `ip link delete`"
        )


# --------------------------------------------------------------------------- status & one host


def status(state_dir: Path) -> list[dict[str, object]]:
    """One row per host: host, site, fqdn, address, state, pid, memory_mib."""
    state = load_state(state_dir)
    if state is None:
        return []
    rows: list[dict[str, object]] = []
    for h in state.spec.hosts:
        hs = state.hosts.get(h.name)
        running = hs is not None and hs.pid is not None and H.is_ours(hs.pid, hs.starttime)
        rows.append(
            {
                "host": h.name,
                "site": h.site,
                "fqdn": h.fqdn,
                "address": h.address,
                "state": "running" if running else "stopped",
                "pid": hs.pid if running and hs else None,
                "memory_mib": H.memory_mib(H.cgroup_name(h), hs.pid if hs else None)
                if running
                else None,
            }
        )
    return rows


def stop_host(state_dir: Path, name: str, progress: Progress | None = None) -> None:
    """Stop one host's nspawn; its overlay (and so its identity and changes) is kept."""
    say = progress or quiet
    require_root("the lab")
    state = _require_state(state_dir)
    h = _find_host(state.spec, name)
    hs = state.hosts.get(h.name, HostState(h.name))
    say(f"host {h.name}: stopping")
    H.stop_processes([(hs.pid, hs.starttime, H.cgroup_name(h))])
    H.remove_cgroups(H.cgroup_name(h))
    H.unmount_overlay(state_dir, h.name)
    state.hosts[h.name] = HostState(h.name)
    _save(state)


def start_host(state_dir: Path, name: str, progress: Progress | None = None) -> None:
    """Start a stopped host again, same overlay and identity; returns once SSH answers."""
    say = progress or quiet
    require_root("the lab")
    state = _require_state(state_dir)
    h = _find_host(state.spec, name)
    hs = state.hosts.get(h.name)
    if hs is not None and hs.pid is not None and H.is_ours(hs.pid, hs.starttime):
        say(f"host {h.name}: already running")
        return
    if h.netns not in N.list_netns():
        raise OperationFailed(
            f"host {h.name}: its network namespace {h.netns} is gone: run `escape-fed lab down` "
            "and `escape-fed lab up` again"
        )
    say(f"host {h.name}: starting")
    H.mount_overlay(state_dir, h, state.image)
    H.remove_cgroups(H.cgroup_name(h))
    pid, st = H.start_nspawn(state_dir, h)
    state.hosts[h.name] = HostState(h.name, pid, st)
    _save(state)
    _wait_ssh(state_dir, [h], SSH_READY_TIMEOUT_S)


def lab_leftovers(prefix: str, state_dir: Path | None = None) -> dict[str, list[str]]:
    """Everything of a lab still on the machine (all empty once it is down)."""
    found = N.leftovers(prefix)
    found["mounts"] = [str(p) for p in mounts_under(state_dir)] if state_dir else []
    found["cgroups"] = [
        str(c) for d in H.lab_cgroup_dirs() for c in d.iterdir() if c.name.startswith(prefix + "-")
    ]
    procs = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmd
            and cmd[0].endswith(b"systemd-nspawn")
            and any(
                a.startswith(f"--network-namespace-path=/run/netns/{prefix}-".encode()) for a in cmd
            )
        ):
            procs.append(pid_dir.name)
    found["processes"] = procs
    return found


def host_pid_exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")
