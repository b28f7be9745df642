"""Compare this host with what escape-fed's last converge left on it (read-only).

Reads the host's record as JSON on stdin (files: checksum, mode, owner, group; directories;
the entries of configuration directories; links; removed paths; accounts; services) and prints
a JSON list of differences: [] when the host is as recorded. Given {"capture": [DIR, ...]}
instead (right after a converge), prints every entry of those directories as the record keeps
them. Run by playbooks/verify.yml as one command per host; changes nothing.
Standard library only: it runs on every host's own python3.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys
from typing import Any

ENABLED = ("enabled", "enabled-runtime", "static", "indirect", "alias", "generated")


def _name(lookup: Any, ident: int) -> str:
    try:
        return str(lookup(ident)[0])
    except KeyError:
        return str(ident)


def owner_of(st: os.stat_result, want: dict[str, str], path: str, out: list[str]) -> None:
    mode = f"{stat.S_IMODE(st.st_mode):04o}"
    if "mode" in want and mode != want["mode"].rjust(4, "0"):
        out.append(f"{path}: mode {mode}, recorded {want['mode']}")
    got = {"owner": _name(pwd.getpwuid, st.st_uid), "group": _name(grp.getgrgid, st.st_gid)}
    for key, name in got.items():
        if key in want and name != want[key]:
            out.append(f"{path}: {key} {name}, recorded {want[key]}")


def sha1(path: str) -> str:
    digest = hashlib.sha1()  # Ansible's own checksum of a file's content
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def check_paths(want: dict[str, Any], out: list[str]) -> None:
    for path, rec in sorted(want.get("files", {}).items()):
        try:
            st = os.stat(path)
        except OSError:
            out.append(f"{path}: missing")
            continue
        if not stat.S_ISREG(st.st_mode) or sha1(path) != rec.get("checksum"):
            out.append(f"{path}: content differs from the converge")
        owner_of(st, rec, path, out)
    for path, rec in sorted(want.get("dirs", {}).items()):
        try:
            st = os.stat(path)
        except OSError:
            out.append(f"{path}: directory missing")
            continue
        if not stat.S_ISDIR(st.st_mode):
            out.append(f"{path}: no longer a directory")
        owner_of(st, rec, path, out)
    for path, src in sorted(want.get("links", {}).items()):
        if not os.path.islink(path) or os.readlink(path) != src:
            out.append(f"{path}: not the recorded link to {src}")
    for path in want.get("absent", []):
        if os.path.lexists(path):
            out.append(f"{path}: exists, the converge removed it")


def entries(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def check_listings(want: dict[str, Any], out: list[str]) -> None:
    """Directories whose every entry the converge saw: nothing added, nothing taken away."""
    for directory, names in sorted(want.get("listed", {}).items()):
        now = set(entries(directory))
        for name in sorted(now - set(names)):
            out.append(f"{directory}/{name}: added since the converge")
        for name in sorted(set(names) - now):
            out.append(f"{directory}/{name}: removed since the converge")


def capture(directories: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """Every entry of these directories, as the record keeps a written file (after a converge)."""
    found: dict[str, dict[str, dict[str, str]]] = {}
    for directory in directories:
        listing = found.setdefault(directory, {})
        for name in entries(directory):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                listing[name] = {"link": os.readlink(path)}
                continue
            rec = {
                "mode": f"{stat.S_IMODE(st.st_mode):04o}",
                "owner": _name(pwd.getpwuid, st.st_uid),
            }
            rec["group"] = _name(grp.getgrgid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                rec["checksum"] = sha1(path)
            listing[name] = rec
    return found


def check_accounts(want: dict[str, Any], out: list[str]) -> None:
    for name, rec in sorted(want.get("users", {}).items()):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            out.append(f"account {name}: missing")
            continue
        got = {"uid": pw.pw_uid, "home": pw.pw_dir, "shell": pw.pw_shell}
        for key, value in sorted(rec.items()):
            if got.get(key) != value:
                out.append(f"account {name}: {key} {got.get(key)}, recorded {value}")


def check_services(want: dict[str, Any], out: list[str]) -> None:
    services = want.get("services", {})
    if not services:
        return
    names = sorted(services)
    shown = subprocess.run(
        ["systemctl", "show", "--property=ActiveState,UnitFileState", "--", *names],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        check=False,
    ).stdout.strip()
    blocks = shown.split("\n\n") if shown else []
    blocks += [""] * (len(names) - len(blocks))
    for name, block in zip(names, blocks, strict=True):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        rec, active, unit = services[name], props.get("ActiveState"), props.get("UnitFileState")
        if "active" in rec and (active == "active") != rec["active"]:
            was = "active" if rec["active"] else "stopped"
            out.append(f"service {name}: {active or 'unknown'}, recorded {was}")
        if "enabled" in rec and (unit in ENABLED) != rec["enabled"]:
            was = "enabled" if rec["enabled"] else "disabled"
            out.append(f"service {name}: {unit or 'unknown'}, recorded {was}")


def main() -> None:
    want = json.load(sys.stdin)
    if "capture" in want:
        json.dump(capture(want["capture"]), sys.stdout)
        return
    out: list[str] = []
    check_paths(want, out)
    check_listings(want, out)
    check_accounts(want, out)
    check_services(want, out)
    json.dump(out, sys.stdout)


main()
