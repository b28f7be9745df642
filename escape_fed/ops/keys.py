"""keys: the lab token issuer's signing keys, rotated and retired across the whole federation.

Rotation follows the usual order of an OIDC provider: publish a new key, have every relying
party (access points, origins, caches, the ingress) fetch the issuer's key set again, then sign
with the new key, so no valid token is ever refused. Retiring unpublishes an old key and has
every relying party forget it at once, so tokens it signed are refused from then on. Nothing is
restarted. Both run ``playbooks/issuer-keys.yml``. A federation that trusts a real IAM has no
issuer host: its keys are rotated in IAM, and relying parties follow on their refresh timers.
"""

from __future__ import annotations

import re
import time
from typing import Any

from escape_fed.backends import remote
from escape_fed.backends.ansible import Progress, run_playbook
from escape_fed.errors import BadInput, OperationFailed
from escape_fed.model.schema import Federation, Role
from escape_fed.model.view import HostView, hosts_with
from escape_fed.ops.deploy import prepare, state_dir

KEYS_TOOL = "escape-fed-issuer-keys"
KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def issuer_host(fed: Federation) -> HostView:
    found = hosts_with(fed, Role.ISSUER)
    if not found:
        raise BadInput(
            f"iam.issuer {fed.iam.issuer} is not deployed by escape-fed (no host has the "
            "'issuer' role): rotate its keys in IAM; relying parties follow on their own"
        )
    return found[0]


def list_keys(fed: Federation) -> list[dict[str, Any]]:
    """The issuer's keys: kid, algorithm, state (active / published), creation time."""
    host = issuer_host(fed)
    proc = remote.run(fed, host, f"{KEYS_TOOL} list")
    if proc.returncode != 0:
        raise OperationFailed(
            f"{host.name}: `{KEYS_TOOL} list` failed ({proc.stderr.strip() or proc.returncode}):"
            " is the federation deployed?"
        )
    keys = []
    for line in proc.stdout.splitlines():
        kid, alg, state, created = line.split("\t")
        keys.append({"kid": kid, "alg": alg, "state": state, "created": int(created)})
    return keys


def _run(fed: Federation, source: str, progress: Progress, extra: dict[str, str]) -> float:
    inventory = prepare(fed, source)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = state_dir(fed) / "logs" / f"keys-{extra['escape_fed_keys_action']}-{stamp}.log"
    result = run_playbook(
        inventory / "hosts.yml", "issuer-keys.yml", progress, extra_vars=extra, log=log
    )
    if not result.ok:
        raise OperationFailed(
            f"key {extra['escape_fed_keys_action']} failed on "
            f"{', '.join(sorted(h for h, s in result.hosts.items() if s.failed)) or 'a host'}"
            f" (log: {log})"
        )
    return result.seconds


def rotate(fed: Federation, source: str, progress: Progress) -> dict[str, Any]:
    """Publish a new key, refresh every relying party, sign with it; the old key stays."""
    before = {k["kid"]: k for k in list_keys(fed)}
    seconds = _run(fed, source, progress, {"escape_fed_keys_action": "rotate"})
    keys = list_keys(fed)
    active = next(k["kid"] for k in keys if k["state"] == "active")
    if active in before:
        raise OperationFailed(f"the issuer still signs with {active} after the rotation")
    previous = [kid for kid, k in before.items() if k["state"] == "active"]
    return {"active": active, "previous": previous, "keys": keys, "seconds": round(seconds, 1)}


def retire(fed: Federation, source: str, kid: str, progress: Progress) -> dict[str, Any]:
    """Unpublish ``kid`` and make every relying party forget it now."""
    if not KID.match(kid):
        raise BadInput(f"{kid!r} is not a key id: expected one from `escape-fed keys list`")
    keys = {k["kid"]: k for k in list_keys(fed)}
    if kid not in keys:
        raise BadInput(f"the issuer has no key {kid!r}: it has {', '.join(sorted(keys))}")
    if keys[kid]["state"] == "active":
        raise BadInput(f"{kid} is the active signing key: rotate first, then retire it")
    seconds = _run(
        fed, source, progress, {"escape_fed_keys_action": "retire", "escape_fed_keys_kid": kid}
    )
    return {"retired": kid, "keys": list_keys(fed), "seconds": round(seconds, 1)}
