#!/usr/bin/env python3
"""Control machine: make a lab client's secret (once) and the hash the issuer stores.

usage: client_secret.py DIR CLIENT_ID
Writes DIR/CLIENT_ID.secret (0600, made once) and DIR/CLIENT_ID.hash (0600, pbkdf2-sha256 of
the secret, remade only when it does not match the secret). Prints {"changed": bool} and never
the secret.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
from pathlib import Path

ITERATIONS = 200_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def matches(secret: str, encoded: str) -> bool:
    try:
        scheme, iterations, salt, digest = encoded.strip().split("$")
        got = hashlib.pbkdf2_hmac("sha256", secret.encode(), unb64(salt), int(iterations))
    except ValueError:
        return False
    return scheme == "pbkdf2_sha256" and hmac.compare_digest(got, unb64(digest))


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main() -> int:
    directory, client_id = Path(sys.argv[1]), sys.argv[2]
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    changed = False
    secret_file = directory / f"{client_id}.secret"
    hash_file = directory / f"{client_id}.hash"
    if not secret_file.exists():
        write(secret_file, secrets.token_urlsafe(32) + "\n")
        changed = True
    secret = secret_file.read_text(encoding="utf-8").strip()
    old = hash_file.read_text(encoding="utf-8") if hash_file.exists() else ""
    if not matches(secret, old):
        salt = secrets.token_bytes(16)
        digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, ITERATIONS)
        write(hash_file, f"pbkdf2_sha256${ITERATIONS}${b64(salt)}${b64(digest)}\n")
        changed = True
    for path in (secret_file, hash_file):
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
            changed = True
    print(json.dumps({"changed": changed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
