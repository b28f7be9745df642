"""Signing keys: one private JWK per file in the keys directory, the signing kid in ``active``.

The issuer re-reads the directory whenever it (or ``active``) changes, so keys are added,
activated and removed without a restart. ``escape-fed-issuer-keys`` manages the directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import re
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey

ALG = "ES256"
CURVE = "P-256"
ACTIVE = "active"
SUFFIX = ".jwk"
DEFAULT_DIR = Path("/var/lib/escape-fed-issuer/keys")
OWNER = "escape-issuer"
LOG = logging.getLogger("escape_fed_issuer.keys")


@dataclass(frozen=True)
class Keys:
    active: str
    private: dict[str, dict[str, Any]]  # kid -> private JWK

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public parts of every key, with kid, alg and use."""
        out = []
        for kid in sorted(self.private):
            key = ECKey.import_key(self.private[kid])
            public = dict(key.as_dict(private=False))
            public.update({"kid": kid, "alg": ALG, "use": "sig"})
            out.append(public)
        return {"keys": out}

    def signing_key(self) -> dict[str, Any]:
        return self.private[self.active]


def read_keys(directory: Path) -> Keys:
    private: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        data = json.loads(path.read_text(encoding="utf-8"))
        kid = path.name[: -len(SUFFIX)]
        if data.get("kid") != kid:
            raise ValueError(f"{path}: kid {data.get('kid')!r} does not match the file name")
        private[kid] = data
    active = (directory / ACTIVE).read_text(encoding="utf-8").strip()
    if active not in private:
        raise ValueError(f"{directory}/{ACTIVE} names {active!r}, which has no key file")
    return Keys(active, private)


class KeyStore:
    """The keys directory, re-read whenever it changes (checked on every request)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[object, ...] | None = None
        self._keys: Keys | None = None
        self._lock = threading.Lock()

    def _stamp_now(self) -> tuple[object, ...]:
        """Changes whenever a key file is added or removed or ``active`` is replaced (the tool
        renames a new file over it: a new inode), even within one timestamp tick."""
        active = (self.directory / ACTIVE).stat()
        return (
            self.directory.stat().st_mtime_ns,
            tuple(sorted(os.listdir(self.directory))),
            active.st_ino,
            active.st_mtime_ns,
        )

    def get(self) -> Keys:
        with self._lock:
            stamp = self._stamp_now()
            if self._keys is None or stamp != self._stamp:
                try:
                    self._keys = read_keys(self.directory)
                    self._stamp = stamp
                except (OSError, ValueError) as exc:
                    if self._keys is None:
                        raise
                    # keep serving the last good keys; try again on the next request
                    LOG.error(
                        "keys in %s unusable, keeping the previous ones: %s", self.directory, exc
                    )
            return self._keys


# --- escape-fed-issuer-keys (root only) -------------------------------------------------------


def _write_atomic(path: Path, text: str, mode: int, owner: str | None) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            entry = pwd.getpwnam(owner)
            os.fchown(fd, entry.pw_uid, entry.pw_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_key() -> dict[str, Any]:
    """A new ES256 key; its kid is the first 16 characters of its JWK thumbprint (RFC 7638,
    base64url). A key whose kid would begin with ``-`` (one in 64) is drawn again: such an id
    reads as an option on every command line it is given to."""
    while True:
        key = ECKey.generate_key(CURVE, private=True)
        kid = key.thumbprint()[:16]
        if not kid.startswith("-"):
            break
    data = dict(key.as_dict(private=True))
    data.update({"kid": kid, "alg": ALG, "use": "sig"})
    return data


def _active(directory: Path) -> str | None:
    try:
        return (directory / ACTIVE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def _kids(directory: Path) -> list[str]:
    return sorted(p.name[: -len(SUFFIX)] for p in directory.glob(f"*{SUFFIX}"))


def cmd_list(directory: Path) -> int:
    active = _active(directory)
    for kid in _kids(directory):
        stamp = (directory / f"{kid}{SUFFIX}").stat().st_mtime
        print(f"{kid}\t{ALG}\t{'active' if kid == active else 'published'}\t{int(stamp)}")
    return 0


def cmd_add(directory: Path, activate: bool, owner: str | None) -> int:
    data = new_key()
    kid = data["kid"]
    _write_atomic(directory / f"{kid}{SUFFIX}", json.dumps(data) + "\n", 0o600, owner)
    if activate or _active(directory) is None:
        _write_atomic(directory / ACTIVE, kid + "\n", 0o600, owner)
    print(kid)
    return 0


def cmd_activate(directory: Path, kid: str, owner: str | None) -> int:
    if kid not in _kids(directory):
        print(f"escape-fed-issuer-keys: no key {kid!r} in {directory}", file=sys.stderr)
        return 2
    _write_atomic(directory / ACTIVE, kid + "\n", 0o600, owner)
    return 0


def cmd_remove(directory: Path, kid: str) -> int:
    if kid not in _kids(directory):
        print(f"escape-fed-issuer-keys: no key {kid!r} in {directory}", file=sys.stderr)
        return 2
    if kid == _active(directory):
        print(
            f"escape-fed-issuer-keys: {kid} is the active signing key: activate another key first",
            file=sys.stderr,
        )
        return 2
    (directory / f"{kid}{SUFFIX}").unlink()
    return 0


KID_COMMANDS = ("activate", "remove")
KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def ids_as_operands(argv: list[str]) -> list[str]:
    """ARGV with ``--`` put before the key id of ``activate`` or ``remove`` when it begins with
    ``-`` and none is there: older keys have such ids (and older callers give them bare), and
    argparse would read them as options (``-hXY...`` even as ``-h``)."""
    out = list(argv)
    i = 0
    while i < len(out):
        word = out[i]
        if word in ("--dir", "--owner"):
            i += 2
            continue
        if word in KID_COMMANDS:
            nxt = out[i + 1] if i + 1 < len(out) else ""
            if nxt.startswith("-") and nxt not in ("--", "-h", "--help") and KID.match(nxt):
                out.insert(i + 1, "--")
            break
        if not word.startswith("-") or word == "--":
            break
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="escape-fed-issuer-keys",
        description="Manage the lab issuer's signing keys (published in its JWKS at once, "
        "no restart). Give a key id after -- (activate -- KID, remove -- KID): ids may begin "
        "with '-'.",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="keys directory")
    parser.add_argument("--owner", default=OWNER, help="account owning the key files")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="kid, algorithm, active or published, creation time")
    add = sub.add_parser("add", help="make a new ES256 key (published at once); print its kid")
    add.add_argument("--activate", action="store_true", help="sign with it from now on")
    act = sub.add_parser("activate", help="sign with this key from now on")
    act.add_argument("kid", help="key id (after --: activate -- KID)")
    rem = sub.add_parser("remove", help="unpublish a key (never the active one)")
    rem.add_argument("kid", help="key id (after --: remove -- KID)")
    args = parser.parse_args(ids_as_operands(sys.argv[1:] if argv is None else argv))
    directory: Path = args.dir
    if not directory.is_dir():
        print(f"escape-fed-issuer-keys: {directory}: no such directory", file=sys.stderr)
        return 2
    if args.command == "list":
        return cmd_list(directory)
    if os.geteuid() != 0:
        print("escape-fed-issuer-keys: must run as root", file=sys.stderr)
        return 2
    if args.command == "add":
        return cmd_add(directory, args.activate, args.owner)
    if args.command == "activate":
        return cmd_activate(directory, args.kid, args.owner)
    return cmd_remove(directory, args.kid)
