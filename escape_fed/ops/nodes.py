"""nodes: one execute node's HTCondor identity, revoked without touching any other node.

Every execute node holds its own IDTOKEN, ``<host fqdn>@<trust domain>``, issued by its pool's
central manager with a lifetime (role htcondor_execute). Revoking it is HTCondor's own token
revocation: the central manager gets ``SEC_TOKEN_REVOCATION_EXPR`` refusing every token of that
identity issued up to now (``sub =?= ID && iat <= NOW``), kept in a file no deploy rewrites
(``25-escape-fed-revoked.conf``, built from the record ``escape-fed-revoked.json`` next to it),
and reconfigures. Then the node gets a fresh token (same identity, authorizations and lifetime,
issued after the revocation) so it stays in the pool; a node that cannot be reached gets one at
the next ``escape-fed deploy --full`` (the role reissues any token the record revokes).
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
import subprocess
import time
from typing import Any

from escape_fed.backends import remote
from escape_fed.errors import BadInput, OperationFailed
from escape_fed.model.schema import Federation, Role
from escape_fed.model.view import HostView, hosts_with, pool_central_manager

# On the issuing central manager (htcondor_common_token_revoked_record is the same path).
REVOKED_RECORD = "/etc/condor/escape-fed-revoked.json"
REVOKED_CONFIG = "/etc/condor/config.d/25-escape-fed-revoked.conf"
TOKEN_DIR = "/etc/condor/tokens.d"
KEY_NAME = "POOL"

# Runs on the central manager: record the identity as revoked up to now, rewrite the
# revocation expression from the whole record, reconfigure, print the time recorded.
_REVOKE = """
import json, os, subprocess, sys, time
identity, record, config = sys.argv[1:4]
try:
    with open(record) as f:
        data = json.load(f)
except FileNotFoundError:
    data = {}
now = int(time.time())
data[identity] = now

def write(path, text):
    tmp = path + ".new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)

write(record, json.dumps(data, indent=1, sort_keys=True) + "\\n")
expr = " || ".join(
    "(sub =?= %s && iat <= %d)" % (json.dumps(i), t) for i, t in sorted(data.items())
)
write(config, "# Written by escape-fed revoke-node; no deploy rewrites it.\\n"
      "# Tokens of these identities issued at or before these times are refused.\\n"
      "SEC_TOKEN_REVOCATION_EXPR = " + expr + "\\n")
subprocess.run(["condor_reconfig"], check=True, capture_output=True)
print(now)
"""

# Runs on the central manager: wait until the clock is past the revocation, then issue.
_ISSUE = """
import subprocess, sys, time
after = int(sys.argv[1])
while int(time.time()) <= after:
    time.sleep(0.1)
print(subprocess.run(sys.argv[2:], check=True, capture_output=True, text=True).stdout.strip())
"""


def execute_host(fed: Federation, name: str) -> HostView:
    """The execute node NAME (its short name or fqdn); exit 2 naming the choices otherwise."""
    nodes = hosts_with(fed, Role.EXECUTE)
    for host in nodes:
        if name in (host.name, host.fqdn):
            return host
    known = ", ".join(h.name for h in nodes) or "none"
    raise BadInput(
        f"{name}: not an execute node of federation {fed.federation.name!r} "
        f"(execute nodes: {known})"
    )


def identity(fed: Federation, host: HostView) -> str:
    """The HTCondor identity a node's token proves (role htcondor_execute)."""
    return f"{host.fqdn}@{fed.federation.trust_domain}"


def _claims(token: str) -> dict[str, Any]:
    parts = token.strip().split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims: dict[str, Any] = json.loads(payload)
    except (binascii.Error, ValueError):
        return {}
    return claims


def _python(script: str, *args: str) -> str:
    return "python3 -c " + " ".join(shlex.quote(a) for a in (script, *args))


def revoke_node(fed: Federation, name: str) -> dict[str, Any]:
    """Revoke execute node NAME's HTCondor token at its central manager, then reissue it one.

    Only tokens of that node's identity issued up to now are refused; every other node keeps
    its token and its place in the pool.
    """
    start = time.monotonic()
    host = execute_host(fed, name)
    cm = pool_central_manager(fed, host.site)
    if cm is None:  # the model requires one for every site with execute nodes
        raise OperationFailed(f"{host.name}: site {host.site} has no central manager")
    who = identity(fed, host)
    token_path = f"{TOKEN_DIR}/{cm.fqdn}"

    # The node's current token (its authorizations and lifetime are kept), read before revoking.
    current = remote.run(fed, host, f"cat {shlex.quote(token_path)}")
    claims = _claims(current.stdout) if current.returncode == 0 else {}

    proc = remote.run(fed, cm, _python(_REVOKE, who, REVOKED_RECORD, REVOKED_CONFIG))
    if proc.returncode != 0 or not proc.stdout.strip().isdigit():
        raise OperationFailed(
            f"{cm.name}: recording the revocation of {who} failed "
            f"({proc.stderr.strip()[-400:] or proc.returncode}): is the federation deployed?"
        )
    revoked_up_to = int(proc.stdout.strip())
    result: dict[str, Any] = {
        "host": host.name,
        "identity": who,
        "central_manager": cm.name,
        "revoked_issued_up_to": revoked_up_to,
        "reissued": False,
    }

    scopes = [s.removeprefix("condor:/") for s in str(claims.get("scope", "")).split()]
    lifetime = int(claims["exp"]) - int(claims["iat"]) if "exp" in claims else 0
    if claims.get("sub") != who or not scopes:
        result["note"] = (
            f"{host.name} could not be read ({current.stderr.strip()[-200:] or 'no token'}): "
            "`escape-fed deploy --full` issues it a new token"
        )
        result["seconds"] = round(time.monotonic() - start, 1)
        return result
    argv = ["condor_token_create", "-identity", who, "-key", KEY_NAME]
    for scope in scopes:
        argv += ["-authz", scope]
    if lifetime > 0:
        argv += ["-lifetime", str(lifetime)]
    issued = remote.run(fed, cm, _python(_ISSUE, str(revoked_up_to), *argv))
    token = issued.stdout.strip()
    if issued.returncode != 0 or len(token.split(".")) != 3:
        raise OperationFailed(
            f"{cm.name}: issuing {host.name} a new token failed "
            f"({issued.stderr.strip()[-400:] or issued.returncode}); the old one stays revoked: "
            "`escape-fed deploy --full` issues it one"
        )
    # The token travels on stdin, never on a command line; 0600 from the start; then the
    # node's daemons authenticate with it from their next connection on.
    install = (
        f"umask 077 && cat > {shlex.quote(token_path)}.new && "
        f"mv {shlex.quote(token_path)}.new {shlex.quote(token_path)} && condor_reconfig"
    )
    put = subprocess.run(
        remote.command(fed, host, install),
        input=token + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if put.returncode != 0:
        raise OperationFailed(
            f"{host.name}: installing its new token failed "
            f"({put.stderr.strip()[-400:] or put.returncode}); the old one stays revoked"
        )
    result["reissued"] = True
    result["new_token_issued_at"] = int(_claims(token).get("iat", 0))
    result["seconds"] = round(time.monotonic() - start, 1)
    return result
