"""Issuer key rotation across every entry point, through the operator's commands.

`escape-fed keys rotate` publishes a new key, has every relying party fetch it, then signs with
it: a real token signed with the new key is accepted at once by an access point, an origin, a
cache and the ingress, with no service restarted. `escape-fed keys retire OLD` unpublishes the
previous key: a token signed with it, accepted a moment before, is refused everywhere at once,
while the new key's tokens still work. Runs after every other token test (marker `destructive`).
"""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import time
from typing import Any

import pytest

from tests.e2e.conftest import ISSUER_KEYS, TokenLab
from tests.e2e.test_tokens_condor import AP, AUTHN_FAILED, refused, submit, write_token
from tests.e2e.test_tokens_data import https_get
from tests.e2e.test_tokens_ingress import curl
from tests.labfed import cli
from tests.tokens import fresh_key, good_claims, mint

pytestmark = [pytest.mark.lab, pytest.mark.destructive(order=3), pytest.mark.timeout(1200)]

ASTRO = "/escape/astro"
DATASET_FILE = "/escape/astro/sky-survey-dr1/file-001.dat"
SERVICES = {
    "ap-a": "condor",
    "origin-a": "xrootd@origin",
    "cache-a": "xrootd@xcache",
    "gateway": "apache2",
}


def kid_of(token: str) -> str:
    head = token.split(".")[0]
    header: dict[str, Any] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return str(header["kid"])


def main_pids(lab: TokenLab) -> dict[str, str]:
    return {
        host: lab.ssh(host, f"systemctl show -P MainPID {unit}").stdout.strip()
        for host, unit in SERVICES.items()
    }


def answers(lab: TokenLab, token: str, name: str) -> dict[str, int | str]:
    """What each entry point says to ``token``: HTTP status, or the access point's verdict."""
    out: dict[str, int | str] = {
        "origin-a": https_get(lab, "origin-a", DATASET_FILE, token)[0],
        "cache-a": https_get(lab, "cache-a", DATASET_FILE, token)[0],
        "ingress": curl(lab, "/status", token).status,
    }
    sub = submit(lab, write_token(lab, token, name), "--access-point", AP)
    if sub.proc.returncode == 0:
        out["ap-a"] = "submitted"
    else:
        refused(lab, sub, AUTHN_FAILED)
        out["ap-a"] = "refused"
    return out


ACCEPTED = {"origin-a": 200, "cache-a": 200, "ingress": 200, "ap-a": "submitted"}
REFUSED = {"origin-a": 403, "cache-a": 403, "ingress": 401, "ap-a": "refused"}
REFRESH_S = 60  # the relying parties' own key refresh timers in the lab (at most)


def settled(lab: TokenLab, token: str) -> None:
    """Wait until every entry point accepts ``token``: an earlier rotation test may have left
    keys that relying parties only learn on their refresh timers (no `keys rotate` there)."""
    deadline = time.monotonic() + REFRESH_S + 60
    while (got := answers(lab, token, "settle")) != ACCEPTED:
        assert time.monotonic() < deadline, got
        time.sleep(15)


def publish_dashed_key(lab: TokenLab) -> str:
    """Publish on the issuer a key whose id begins with '-' (as about one in 64 did before the
    issuer stopped making them, and as keys made then still are); returns its kid."""
    kid = "-" + secrets.token_urlsafe(12)[:15]
    path = f"{ISSUER_KEYS}/{kid}.jwk"
    tmp = f"{ISSUER_KEYS}/.dashed.tmp"
    lab.ssh(
        lab.issuer_host,
        f"umask 077 && printf '%s\\n' {shlex.quote(json.dumps(fresh_key(kid)))} > {tmp} && "
        f"chown --reference={ISSUER_KEYS}/active {tmp} && mv -- {tmp} {shlex.quote(path)}",
    )
    return kid


def test_rotate_then_retire_across_every_entry_point(token_lab: TokenLab) -> None:
    lab = token_lab
    pids = main_pids(lab)
    old_key = lab.issuer_key()
    old_token = mint(old_key, good_claims(lab, ASTRO))
    settled(lab, old_token)

    proc = cli("keys", "rotate", str(lab.file), "--output", "json", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rotated = json.loads(proc.stdout)
    new_kid = rotated["active"]
    assert new_kid != old_key["kid"] and rotated["previous"] == [old_key["kid"]]
    states = {k["kid"]: k["state"] for k in rotated["keys"]}
    assert states[new_kid] == "active" and states[old_key["kid"]] == "published"

    new_token = lab.token(ASTRO)  # a real token from the issuer, now signed with the new key
    assert kid_of(new_token) == new_kid
    assert answers(lab, new_token, "new-after-rotate") == ACCEPTED
    assert answers(lab, old_token, "old-after-rotate") == ACCEPTED  # still published

    # A key whose id begins with '-' is retired like any other (given after --).
    dashed = publish_dashed_key(lab)
    proc = cli("keys", "list", str(lab.file), "-o", "json")
    assert dashed in {k["kid"] for k in json.loads(proc.stdout)}, proc.stderr
    proc = cli("keys", "retire", "-f", str(lab.file), "-o", "json", "--", dashed, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {k["kid"] for k in json.loads(proc.stdout)["keys"]} == {new_kid, old_key["kid"]}

    proc = cli("keys", "retire", old_key["kid"], "-f", str(lab.file), "-o", "json", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {k["kid"] for k in json.loads(proc.stdout)["keys"]} == {new_kid}

    fresh_old = mint(old_key, good_claims(lab, ASTRO))  # valid in every way but its key
    assert answers(lab, fresh_old, "old-after-retire") == REFUSED
    assert answers(lab, lab.token(ASTRO), "new-after-retire") == ACCEPTED
    assert main_pids(lab) == pids  # nothing was restarted


def test_the_active_key_cannot_be_retired(token_lab: TokenLab) -> None:
    active = token_lab.issuer_key()["kid"]
    proc = cli("keys", "retire", active, "-f", str(token_lab.file))
    assert proc.returncode == 2
    assert f"{active} is the active signing key: rotate first" in proc.stderr
    proc = cli("keys", "list", str(token_lab.file), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert {k["kid"]: k["state"] for k in json.loads(proc.stdout)}[active] == "active"
