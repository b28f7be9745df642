"""Lab hosts: overlay root filesystems, per-host identity, cgroups and systemd-nspawn processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from escape_fed.errors import OperationFailed
from escape_fed.lab._sys import mounts_under, run, unmount_all_under
from escape_fed.lab.spec import LabHost, LabSpec

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "escape-fed-lab"
# The hierarchies each nspawn is started in: its own cgroup in each, so hosts never share one.
CGROUP_HIERARCHIES = ("systemd", "unified", "memory")
STOP_TIMEOUT_S = 15.0

# Popen objects of the nspawns this process started: kept so they can be reaped.
_children: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------- paths


def ssh_dir(state_dir: Path) -> Path:
    return state_dir / "ssh"


def lab_key(state_dir: Path) -> Path:
    return ssh_dir(state_dir) / "id_ed25519"


def known_hosts(state_dir: Path) -> Path:
    return ssh_dir(state_dir) / "known_hosts"


def host_dir(state_dir: Path, name: str) -> Path:
    return state_dir / "hosts" / name


def merged_dir(state_dir: Path, name: str) -> Path:
    return host_dir(state_dir, name) / "merged"


def console_log(state_dir: Path, name: str) -> Path:
    return host_dir(state_dir, name) / "console.log"


def cgroup_name(host: LabHost) -> str:
    return host.netns  # prefixed and unique, like every other kernel object of the lab


def cgroup_dirs(cgname: str) -> list[Path]:
    return [
        CGROUP_ROOT / h / CGROUP_PARENT / cgname
        for h in CGROUP_HIERARCHIES
        if (CGROUP_ROOT / h).is_dir()
    ]


# --------------------------------------------------------------------------- keys & identity


def ensure_lab_key(state_dir: Path) -> Path:
    """The lab's one SSH keypair (root's authorized key on every host), made once, 0600."""
    key = lab_key(state_dir)
    key.parent.mkdir(parents=True, exist_ok=True)
    key.parent.chmod(0o700)
    if not key.exists() or not key.with_suffix(".pub").exists():
        key.unlink(missing_ok=True)
        key.with_suffix(".pub").unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "escape-fed-lab", "-f", str(key)])
    key.chmod(0o600)
    return key


def make_host_key(state_dir: Path, host: LabHost) -> str:
    """Generate the host's SSH host key on the control machine; return the public key line."""
    d = host_dir(state_dir, host.name) / "identity"
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    key = d / "ssh_host_ed25519_key"
    if not key.exists():
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"root@{host.fqdn}",
                "-f",
                str(key),
            ]
        )
    return key.with_suffix(".pub").read_text().strip()


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def install_identity(state_dir: Path, host: LabHost, hosts_file: str) -> None:
    """Write the host's own identity into its (mounted) overlay, before it boots."""
    root = merged_dir(state_dir, host.name)
    ident = host_dir(state_dir, host.name) / "identity"
    _write(root / "etc/hostname", host.name + "\n")
    mid = root / "etc/machine-id"
    if not mid.exists() or not mid.read_text().strip():
        _write(mid, uuid.uuid4().hex + "\n", 0o444)
    _write(root / "etc/hosts", hosts_file)
    for name, mode in (("ssh_host_ed25519_key", 0o600), ("ssh_host_ed25519_key.pub", 0o644)):
        _write(root / "etc/ssh" / name, (ident / name).read_text(), mode)
    _write(
        root / "etc/ssh/sshd_config.d/10-escape-fed-lab.conf",
        "# Written by escape-fed lab: one host key, keys only, lab addresses only.\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        f"ListenAddress {host.address}\nListenAddress 127.0.0.1\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUseDNS no\n",
    )
    pub = lab_key(state_dir).with_suffix(".pub").read_text()
    (root / "root/.ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(root / "root/.ssh/authorized_keys", pub, 0o600)
    # The host key comes from the control machine: nothing should make others at boot.
    mask = root / "etc/systemd/system/sshd-keygen.service"
    if not mask.is_symlink():
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")


def known_hosts_line(state_dir: Path, host: LabHost) -> str:
    pub = (host_dir(state_dir, host.name) / "identity/ssh_host_ed25519_key.pub").read_text().split()
    return f"{host.fqdn},{host.name},{host.address} {pub[0]} {pub[1]}"


# --------------------------------------------------------------------------- overlay


def mount_overlay(state_dir: Path, host: LabHost, image: Path) -> Path:
    d = host_dir(state_dir, host.name)
    upper, work, merged = d / "upper", d / "work", d / "merged"
    for p in (upper, work, merged):
        p.mkdir(parents=True, exist_ok=True)
    if not mounts_under(merged):
        run(
            ["mount", "-t", "overlay", f"escape-fed-{host.name}", "-o",
             f"lowerdir={image},upperdir={upper},workdir={work}", str(merged)]
        )  # fmt: skip
    return merged


def unmount_overlay(state_dir: Path, name: str) -> None:
    unmount_all_under(merged_dir(state_dir, name))


# --------------------------------------------------------------------------- processes


def proc_starttime(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_ours(pid: int, starttime: int | None) -> bool:
    """True if ``pid`` is still the process the lab recorded (same start time, an nspawn)."""
    now = proc_starttime(pid)
    if now is None or (starttime is not None and now != starttime):
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmd) and cmd[0].endswith(b"systemd-nspawn")


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _join_cgroups(dirs: list[Path]) -> None:
    pid = str(os.getpid())
    for d in dirs:
        (d / "cgroup.procs").write_text(pid)


def start_nspawn(state_dir: Path, host: LabHost) -> tuple[int, int]:
    """Boot the host: systemd-nspawn detached, in its own cgroups, console to console.log."""
    merged = merged_dir(state_dir, host.name)
    dirs = cgroup_dirs(cgroup_name(host))
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    if host.memory_mb is not None:
        limit = CGROUP_ROOT / "memory" / CGROUP_PARENT / cgroup_name(host) / "memory.limit_in_bytes"
        if limit.parent.is_dir():
            limit.write_text(str(host.memory_mb * 1024 * 1024))
    argv = [
        "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
        "-M", host.name, "-D", str(merged),
        f"--network-namespace-path=/run/netns/{host.netns}",
        "--console=read-only", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
    ]  # fmt: skip
    log = console_log(state_dir, host.name)
    with log.open("ab") as out:
        out.write(f"\n=== escape-fed lab: booting {host.name} at {time.ctime()} ===\n".encode())
        out.flush()
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _join_cgroups(dirs),  # noqa: PLW1509 - single-threaded here
            close_fds=True,
        )
    _children[child.pid] = child
    start = proc_starttime(child.pid)
    if start is None:
        raise OperationFailed(f"host {host.name}: systemd-nspawn exited at once; see {log}")
    return child.pid, start


def cgroup_pids(cgname: str) -> list[int]:
    pids: set[int] = set()
    for d in cgroup_dirs(cgname):
        if not d.is_dir():
            continue
        for procs in d.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids |= {int(x) for x in procs.read_text().split()}
    return sorted(pids)


def stop_processes(entries: Iterable[tuple[int | None, int | None, str]]) -> None:
    """Stop nspawns: SIGTERM the recorded pids (if still ours), wait, then SIGKILL.

    ``entries`` are (pid, starttime, cgroup name). Only the recorded nspawn and processes inside
    the lab's own cgroup of that host are ever signalled.
    """
    entries = list(entries)
    for pid, start, _cg in entries:
        if pid is not None and is_ours(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    pending = list(entries)
    while pending and time.monotonic() < deadline:
        still = []
        for pid, start, cg in pending:
            if pid is not None:
                _reap(pid)
            alive = (pid is not None and is_ours(pid, start)) or bool(cgroup_pids(cg))
            if alive:
                still.append((pid, start, cg))
        pending = still
        if pending:
            time.sleep(0.1)
    for pid, start, cg in pending:
        victims = set(cgroup_pids(cg))
        if pid is not None and is_ours(pid, start):
            victims.add(pid)
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
    end = time.monotonic() + 5
    for pid, _start, cg in pending:
        while time.monotonic() < end:
            if pid is not None:
                _reap(pid)
            if not cgroup_pids(cg) and (pid is None or proc_starttime(pid) is None):
                break
            time.sleep(0.05)


def remove_cgroups(cgname: str | None = None) -> None:
    """Remove a host's cgroup dirs (with None: every empty dir under the lab's parent)."""
    for h in CGROUP_HIERARCHIES:
        parent = CGROUP_ROOT / h / CGROUP_PARENT
        if not parent.is_dir():
            continue
        tops = [parent / cgname] if cgname else [p for p in parent.iterdir() if p.is_dir()]
        for top in tops:
            if not top.is_dir():
                continue
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def remove_cgroup_parent() -> None:
    for h in CGROUP_HIERARCHIES:
        with contextlib.suppress(OSError):
            (CGROUP_ROOT / h / CGROUP_PARENT).rmdir()


def lab_cgroup_dirs() -> list[Path]:
    return [
        CGROUP_ROOT / h / CGROUP_PARENT
        for h in CGROUP_HIERARCHIES
        if (CGROUP_ROOT / h / CGROUP_PARENT).exists()
    ]


# --------------------------------------------------------------------------- readiness & memory


def tcp_open(address: str, port: int = 22, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def memory_mib(cgname: str, pid: int | None) -> float | None:
    """A host's memory: v1 memory cgroup working set, else unified memory.current, else RSS."""
    mem = CGROUP_ROOT / "memory" / CGROUP_PARENT / cgname
    try:
        usage = int((mem / "memory.usage_in_bytes").read_text())
        stat = dict(
            (k, int(v))
            for k, v in (line.split() for line in (mem / "memory.stat").read_text().splitlines())
        )
        return round((usage - stat.get("total_inactive_file", 0)) / 2**20, 1)
    except (OSError, ValueError):
        pass
    current = CGROUP_ROOT / "unified" / CGROUP_PARENT / cgname / "memory.current"
    with contextlib.suppress(OSError, ValueError):
        return round(int(current.read_text()) / 2**20, 1)
    return rss_mib(cgname, pid)


def rss_mib(cgname: str, pid: int | None = None) -> float | None:
    """Sum of the RSS of a host's processes (counts shared library pages once per host)."""
    pids = cgroup_pids(cgname) or ([pid] if pid else [])
    total = 0
    for p in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pages = int(Path(f"/proc/{p}/statm").read_text().split()[1])
            total += pages * os.sysconf("SC_PAGE_SIZE")
    return round(total / 2**20, 1) if pids else None


def host_running(entry: dict[str, object]) -> bool:
    pid, start = entry.get("pid"), entry.get("starttime")
    return isinstance(pid, int) and is_ours(pid, start if isinstance(start, int) else None)


def spec_hosts_by_name(spec: LabSpec) -> dict[str, LabHost]:
    return {h.name: h for h in spec.hosts}
