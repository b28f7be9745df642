"""The lab image: one Debian trixie root filesystem shared (read-only) by every lab host.

Built once with debootstrap, then the roles' packages are installed in a chroot. Cached under
``state_dir/images/<hash>/rootfs``; the hash covers the recipe, the suite and the package list.
A build goes to a temporary directory that is renamed into place only when complete, so a failed
or killed build never leaves a half image that a later run would take for a good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from escape_fed.errors import OperationFailed
from escape_fed.lab._sys import Progress, quiet, require_root, require_tools, run, safe_rmtree
from escape_fed.lab.spec import LabSpec

RECIPE_VERSION = 2  # bump when the build steps change in a way that changes the image
SUITE = "trixie"
BASE_INCLUDE: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "procps",
    "ca-certificates",
    "sudo",
    "iputils-ping",
    "less",
)
ROLE_PACKAGES: tuple[str, ...] = (
    "htcondor",
    "xrootd-server",
    "xrootd-client",
    "xrootd-scitokens-plugins",
    "nginx",
    "python3-authlib",
    "python3-joserfc",
    "python3-flask",
    "gunicorn",
    "apache2",
    "libapache2-mod-auth-openidc",
    "curl",
)
# Services the packages enable at install time; the roles enable what a host really runs.
DISABLED_UNITS: tuple[str, ...] = (
    "condor.service",
    "nginx.service",
    "apache2.service",
    "apache-htcacheclean.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "man-db.timer",
    "systemd-tmpfiles-clean.timer",
)
COMPLETE_MARKER = ".complete"
BUILD_INFO = "build.json"
APT_OPTS = ("-o", "Acquire::Check-Valid-Until=false", "-o", "Acquire::Check-Date=false")


# --------------------------------------------------------------------------- the mirror


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            current[key] += " " + raw.strip()
            continue
        if ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    return stanzas


def _is_main_suite(suite: str) -> bool:
    return "-" not in suite and "/" not in suite


def find_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror URI from the host's own apt configuration (never a hard-coded one).

    Takes the deb822 entry (``sources.list.d/*.sources``) whose ``Suites`` include a main suite
    (``bookworm``, not ``bookworm-updates``/``-security``), else the matching ``sources.list`` line.
    """
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for st in _deb822_stanzas(path.read_text(errors="replace")):
            if st.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in st.get("types", "").split():
                continue
            if any(_is_main_suite(s) for s in st.get("suites", "").split()):
                uris = st.get("uris", "").split()
                if uris:
                    return uris[0].rstrip("/")
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 2 and _is_main_suite(words[1]):
                return words[0].rstrip("/")
    raise OperationFailed(
        f"no Debian mirror found in {apt_dir}/sources.list.d/*.sources or {apt_dir}/sources.list: "
        "configure apt with a Debian mirror (an entry for the main suite, e.g. `bookworm`)"
    )


# --------------------------------------------------------------------------- cache layout


def image_packages(spec: LabSpec) -> tuple[str, ...]:
    """Packages installed in the chroot after debootstrap (roles' packages + the spec's extras)."""
    return tuple(sorted(set(ROLE_PACKAGES) | set(spec.image_packages)))


def image_hash(spec: LabSpec) -> str:
    recipe = {
        "recipe": RECIPE_VERSION,
        "suite": SUITE,
        "include": sorted(BASE_INCLUDE),
        "packages": list(image_packages(spec)),
        "disabled": sorted(DISABLED_UNITS),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def images_root(spec: LabSpec) -> Path:
    return spec.image_cache if spec.image_cache is not None else spec.state_dir / "images"


def image_dir(spec: LabSpec) -> Path:
    return images_root(spec) / image_hash(spec)


def image_rootfs(spec: LabSpec) -> Path:
    return image_dir(spec) / "rootfs"


def cached_image(spec: LabSpec) -> Path | None:
    """The rootfs if a complete image for this spec is cached, else None."""
    d = image_dir(spec)
    if (d / COMPLETE_MARKER).is_file() and (d / "rootfs" / "usr" / "sbin" / "sshd").exists():
        return d / "rootfs"
    return None


def last_build_info(spec: LabSpec) -> dict[str, object] | None:
    path = image_dir(spec) / BUILD_INFO
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_prerequisites() -> None:
    require_root("building the lab image")
    require_tools(
        {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container", "chroot": "coreutils"}
    )


# --------------------------------------------------------------------------- build


@contextlib.contextmanager
def _chroot_mounts(root: Path) -> Iterator[None]:
    """/proc, /sys, /dev (+ /dev/pts) mounted in the chroot; always unmounted afterwards."""
    mounted: list[Path] = []
    try:
        for source, target, args in (
            ("proc", root / "proc", ["-t", "proc"]),
            ("sysfs", root / "sys", ["-t", "sysfs"]),
            ("/dev", root / "dev", ["--bind"]),
            ("devpts", root / "dev" / "pts", ["-t", "devpts", "-o", "newinstance,ptmxmode=0666"]),
        ):
            target.mkdir(parents=True, exist_ok=True)
            run(["mount", *args, source, str(target)])
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            if run(["umount", str(target)], check=False).returncode != 0:
                run(["umount", "-l", str(target)], check=False)


def _chroot(root: Path, script: str, timeout: float = 1200) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
        "HOME": "/root",
    }
    run(["chroot", str(root), "/bin/sh", "-ec", script], timeout=timeout, env=env)


def _write_apt_sources(root: Path, mirror: str) -> None:
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    sources = root / "etc/apt/sources.list.d"
    sources.mkdir(parents=True, exist_ok=True)
    (sources / "debian.sources").write_text(
        "# Written by escape-fed from the build host's own apt mirror.\n"
        f"Types: deb\nURIs: {mirror}\nSuites: {SUITE}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    conf = root / "etc/apt/apt.conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "99escape-fed-lab").write_text(
        'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n'
        'APT::Install-Recommends "false";\n'
    )


def _clear_identity(root: Path) -> None:
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("# lab hosts have no DNS: names come from /etc/hosts\n")


def _build(tmp: Path, spec: LabSpec, progress: Progress) -> None:
    rootfs = tmp / "rootfs"
    mirror = find_mirror()
    progress(f"image: debootstrap {SUITE} from {mirror} (about a minute)")
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_INCLUDE)}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        timeout=1800,
    )
    _write_apt_sources(rootfs, mirror)
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copyfile("/etc/resolv.conf", rootfs / "etc/resolv.conf", follow_symlinks=True)
    packages = " ".join(image_packages(spec))
    opts = " ".join(APT_OPTS)
    progress(f"image: apt-get install {packages}")
    with _chroot_mounts(rootfs):
        _chroot(
            rootfs,
            f"apt-get {opts} update -q\n"
            f"apt-get {opts} install -y -q --no-install-recommends {packages}\n"
            "apt-get clean\n",
        )
        units = " ".join(DISABLED_UNITS)
        _chroot(rootfs, f"for u in {units}; do systemctl disable $u >/dev/null 2>&1 || true; done")
    policy.unlink()
    safe_rmtree(rootfs / "var/lib/apt/lists")
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
    for cache in (rootfs / "var/cache/apt").glob("*.bin"):
        cache.unlink()
    _clear_identity(rootfs)


def build_image(spec: LabSpec, progress: Progress | None = None, *, force: bool = False) -> Path:
    """Return the rootfs of the lab image, building it first unless a complete one is cached."""
    say = progress or quiet
    if not force:
        cached = cached_image(spec)
        if cached is not None:
            say(f"image: cached at {cached.parent}")
            return cached
    check_prerequisites()
    final = image_dir(spec)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(".build-*"):  # a killed earlier build
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists():
            continue  # another build is running right now
        say(f"image: removing the unfinished build {stale}")
        safe_rmtree(stale)
    tmp = final.parent / f".build-{final.name}-{os.getpid()}"
    tmp.mkdir()
    start = time.monotonic()
    try:
        _build(tmp, spec, say)
        seconds = round(time.monotonic() - start, 1)
        (tmp / BUILD_INFO).write_text(
            json.dumps(
                {
                    "seconds": seconds,
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "suite": SUITE,
                    "recipe": RECIPE_VERSION,
                    "packages": list(image_packages(spec)),
                },
                indent=2,
            )
        )
        (tmp / COMPLETE_MARKER).write_text("")
        if final.exists():
            old = final.parent / f".build-old-{final.name}-{os.getpid()}"
            final.rename(old)
            safe_rmtree(old)
        tmp.rename(final)
    except BaseException:
        safe_rmtree(tmp)
        raise
    say(f"image: built in {seconds} s at {final}")
    return final / "rootfs"
