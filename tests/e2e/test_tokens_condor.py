"""IAM tokens at the access points, for real: a scientist on the control machine submits over the
network to an access point's schedd with `escape-fed submit --token` (HTCondor's Python bindings,
SCITOKENS inside TLS); the access point verifies the token against the lab issuer's keys and
maps it, by IAM group, to the group's account. The job runs as that account on an execute node
(its own `id -un` says so), in the group's accounting group, with the token beside it.

Every wrong token of the matrix (tests/tokens.py) is refused by the schedd with HTCondor's own
error, and no job is queued. (`other_group_path` is a storage request, not a token: here its
counterpart is that a group-B token's job runs as hep, never as astro.) Beyond the matrix: WLCG
tokens without the whole compute.create/modify/cancel set, and a SciTokens-profile token, may
not submit: HTCondor itself turns WLCG compute scopes into its READ and WRITE levels.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from escape_fed.backends import condor
from escape_fed.model.schema import Role
from escape_fed.model.view import hosts_with
from escape_fed.ops.deploy import secrets_dir
from tests.e2e.conftest import TokenLab
from tests.labfed import cli
from tests.roles.xrootd_lab import EMBARGOED_FILE
from tests.tokens import CASES, case, good_claims, mint

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

ASTRO, HEP = "/escape/astro", "/escape/hep"
AP = "ap-a"
# Runs on the execute node: who the job is, and whether its token came with it.
PROBE = [
    "/bin/sh",
    "-c",
    'id -un; test -s "$BEARER_TOKEN_FILE" && echo token=yes; '
    'stat -c token-mode=%a "$BEARER_TOKEN_FILE"',
]
# HTCondor's refusals, as the client sees them.
AUTHN_FAILED = "AUTHENTICATE:1004:Failed to authenticate using SCITOKENS"
AUTHZ_DENIED = 'Received "DENIED" from server for user astro@escape.lab using method SCITOKENS'


@dataclass
class Submitted:
    proc: subprocess.CompletedProcess[str]
    since: int  # the control machine's (and the lab hosts') clock before submitting

    @property
    def result(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.proc.stdout)
        return data


def write_token(lab: TokenLab, token: str, name: str) -> Path:
    path = lab.workdir / f"{name}.tok"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def submit(lab: TokenLab, token: Path, *args: str) -> Submitted:
    since = int(time.time()) - 1
    proc = cli(
        "submit",
        str(lab.file),
        "--token",
        str(token),
        "--outdir",
        str(lab.workdir / "jobs"),
        "--output",
        "json",
        *args,
        "--",
        *PROBE,
        timeout=420,
    )
    return Submitted(proc, since)


def jobs_since(lab: TokenLab, ap: str, since: int) -> list[str]:
    """Jobs queued at ``ap`` since ``since``, in the queue or already in its history."""
    constraint = f"QDate >= {since}"
    out = lab.ssh(
        ap,
        f"condor_q -all -constraint '{constraint}' -af ClusterId Owner; "
        f"condor_history -constraint '{constraint}' -af ClusterId Owner",
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def assert_runs_as(lab: TokenLab, group: str, ap: str, *args: str) -> dict[str, Any]:
    account = lab.fed.iam.groups[group].account
    accounting = lab.fed.iam.groups[group].accounting_group
    token = write_token(lab, lab.token(group), account)
    sub = submit(lab, token, "--access-point", ap, "--wait", "--timeout", "300", *args)
    assert sub.proc.returncode == 0, sub.proc.stderr[-3000:]
    r = sub.result
    print(
        f"\n{group} at {ap}: job {r['job']} on {r['ran_on']}, submit->start "
        f"{r['submit_to_start_s']} s, submit->done {r['submit_to_done_s']} s"
    )
    assert r["finished"] and r["ok"] and r["exit_code"] == 0, r
    assert r["owner"] == account, r  # the schedd's Owner: the mapped account
    assert r["accounting_group"] == accounting, r  # AcctGroup
    execute = {h.fqdn for h in hosts_with(lab.fed, Role.EXECUTE)}
    assert r["ran_on"] in execute, r
    lines = (r["stdout"] or "").split()
    assert lines[:1] == [account], r  # `id -un` on the execute node
    assert "token=yes" in lines, r  # the job has its token (BEARER_TOKEN_FILE)
    assert "token-mode=600" in lines, r  # ... readable by the group's account only
    # The access point's own record: who submitted, with which token.
    attrs = "-af Owner AcctGroup AuthTokenIssuer AuthTokenGroups"
    out = lab.ssh(
        ap, f"condor_q {r['job']} {attrs}; condor_history {r['job']} -limit 1 {attrs}"
    ).stdout
    ad = next((line.split() for line in out.splitlines() if line.strip()), [])
    assert ad[:4] == [account, accounting, lab.fed.iam.issuer, group], ad
    return r


def test_a_group_a_token_job_runs_as_group_a(token_lab: TokenLab) -> None:
    assert_runs_as(token_lab, ASTRO, AP, "--site", "site-a")


def test_a_group_b_token_job_runs_as_hep_not_astro(token_lab: TokenLab) -> None:
    r = assert_runs_as(token_lab, HEP, "ap-b", "--site", "site-b")
    assert r["owner"] != "astro" and "astro" not in (r["stdout"] or "").split()


def submit_direct(lab: TokenLab, token: Path | None) -> tuple[str, int]:
    """Submit at AP with TOKEN itself, as `escape-fed submit --token` does but without its
    token exchange (the issuer refuses a wrong token before the access point would see it):
    (the refusal, the clock before submitting). A job accepted fails the test."""
    since = int(time.time()) - 1
    with pytest.raises(Exception) as info:
        condor.submit_with_token(
            condor.TokenSubmission(
                collector=f"{lab.address('cm')}:9618",
                schedd=lab.fqdn(AP),
                description="executable = /bin/true\ntransfer_executable = false\nqueue\n",
                token_file=token,
                ca_file=lab.ca,
                control_tokens=secrets_dir(lab.fed) / "tokens.d",
                initialdir=lab.workdir,
            )
        )
    return str(info.value), since


def refused(lab: TokenLab, token: Path, *needles: str) -> None:
    why, since = submit_direct(lab, token)
    print(f"\n  refused: {why.strip()[-300:]}")
    assert f"access point {lab.fqdn(AP)} refused the job" in why, why
    assert any(n in why for n in needles), why
    assert jobs_since(lab, AP, since) == []


@pytest.mark.parametrize("name", CASES)
def test_a_wrong_token_submits_nothing(token_lab: TokenLab, name: str) -> None:
    token = case(name).build(token_lab, ASTRO)
    if token is None:  # no token at all: the client offers SCITOKENS with nothing to show
        assert not Path(f"/tmp/bt_u{os.getuid()}").exists(), "a bearer token lies in /tmp"
        why, since = submit_direct(token_lab, None)
        assert "refused the job" in why, why
        assert "Failed to authenticate" in why, why
        assert jobs_since(token_lab, AP, since) == []
        return
    path = write_token(token_lab, token, name)
    if name == "missing_scope":
        # Verified and mapped to astro, but without a compute scope HTCondor authorises nothing.
        refused(token_lab, path, AUTHZ_DENIED)
    else:  # the token does not verify: authentication fails
        refused(token_lab, path, AUTHN_FAILED)
    # Through the CLI the issuer refuses it first: no job token for a token that is not valid.
    sub = submit(token_lab, path, "--access-point", AP)
    assert sub.proc.returncode == 2, (sub.proc.returncode, sub.proc.stderr)
    assert jobs_since(token_lab, AP, sub.since) == []


@pytest.mark.parametrize(
    ("name", "claims"),
    [
        # WLCG profile: HTCondor grants WRITE only for create + modify + cancel together.
        ("read_modify_cancel", {"scope": "compute.read compute.modify compute.cancel"}),
        ("create_only", {"scope": "compute.create"}),
        # SciTokens profile (no wlcg.ver): no condor:/ scope either, so nothing is granted.
        ("scitoken_profile", {"scope": "compute.modify", "wlcg.ver": None}),
    ],
)
def test_a_token_without_compute_create_may_not_submit(
    token_lab: TokenLab, name: str, claims: dict[str, Any]
) -> None:
    over = {k: v for k, v in claims.items() if v is not None}
    body = good_claims(token_lab, ASTRO, **over)
    for k in [k for k, v in claims.items() if v is None]:
        del body[k]
    token = write_token(token_lab, mint(token_lab.issuer_key(), body), name)
    refused(token_lab, token, AUTHZ_DENIED)


# A token job reads through its site's cache with the token it came with: its group's data and
# embargoed area, never another group's (the cache decides, on the job's own token).
READ = (
    'r() { xrdcp -f "$ESCAPE_CACHE/$1" /dev/null 2>/dev/null && echo "$2=read" '
    '|| echo "$2=denied"; }; '
    'r "$ESCAPE_DATASET_PATH/file-001.dat" dataset; '
    f'r "{ASTRO}/embargoed/{EMBARGOED_FILE}" astro-embargoed; '
    f'r "{HEP}/embargoed/{EMBARGOED_FILE}" hep-embargoed'
)


@pytest.mark.parametrize("group", [ASTRO, HEP])
def test_a_token_job_reads_through_the_cache_as_its_group(token_lab: TokenLab, group: str) -> None:
    account = token_lab.fed.iam.groups[group].account
    token = write_token(token_lab, token_lab.token(group), f"read-{account}")
    proc = cli(
        "submit", str(token_lab.file), "--token", str(token), "--outdir",
        str(token_lab.workdir / "jobs"), "--output", "json", "--wait", "--timeout", "300",
        "--dataset", "sky-survey-dr1", "--", "/bin/sh", "-c", READ,
        timeout=420,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["owner"] == account, result
    got = dict(line.split("=", 1) for line in (result["stdout"] or "").split())
    own, other = ("astro", "hep") if group == ASTRO else ("hep", "astro")
    # The job's own token (tests/e2e/test_tokens_job.py) reads its dataset and nothing else.
    assert got == {
        "dataset": "read",
        f"{own}-embargoed": "denied",
        f"{other}-embargoed": "denied",
    }, result
