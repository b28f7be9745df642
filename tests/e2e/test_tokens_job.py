"""A token job's own token, for real: `escape-fed submit --token` exchanges the user's token at
the lab issuer (RFC 8693 token exchange) for a read-only token of the job, and sends that one
with the job (BEARER_TOKEN_FILE), never the user's.

The job reads its dataset through its site's cache with it, and nothing else: not another
group's embargoed area, not even its own group's (the job did not ask for it). It cannot submit
at any access point of the federation, while the user's own token can, at each. The issuer
never widens: a job token is not exchanged again, and an exchange may not ask for a compute
scope or a path the user's token lacks.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests

from escape_fed.backends import condor
from escape_fed.model.schema import Role
from escape_fed.model.view import hosts_with, pool_central_manager
from escape_fed.ops.deploy import secrets_dir
from escape_fed.ops.tokens import issuer_http
from tests.e2e.conftest import TokenLab
from tests.e2e.test_tokens_data import https_get
from tests.labfed import cli
from tests.roles.xrootd_lab import EMBARGOED_FILE

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

A, B = "/escape/astro", "/escape/hep"
DATASET = "sky-survey-dr1"  # group A's, at site-a
CACHE = "cache-a"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
AUTHZ_DENIED = 'Received "DENIED" from server'
NEVER_RUNS = "executable = /bin/true\ntransfer_executable = false\nrequirements = false\nqueue\n"
# On the execute node: read the dataset, each group's embargoed file, through the site's cache
# with the job's token; then show the token (the test's own workdir) so that it can be tried.
READ = (
    'r() { xrdcp -f "$ESCAPE_CACHE/$1" /dev/null 2>/dev/null && echo "$2=read" '
    '|| echo "$2=denied"; }; '
    'r "$ESCAPE_DATASET_PATH/file-001.dat" dataset; '
    f'r "{A}/embargoed/{EMBARGOED_FILE}" astro-embargoed; '
    f'r "{B}/embargoed/{EMBARGOED_FILE}" hep-embargoed; '
    'echo "token=$(cat "$BEARER_TOKEN_FILE")"'
)


def claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def submit_at(lab: TokenLab, ap: str, token: str) -> tuple[bool, str]:
    """Submit a never-matching /bin/true at access point AP with TOKEN itself (SCITOKENS, no
    token exchange): (accepted, job id or the refusal). An accepted job is removed at once."""
    host = next(h for h in hosts_with(lab.fed, Role.ACCESS_POINT) if h.name == ap)
    cm = pool_central_manager(lab.fed, host.site)
    assert cm is not None
    path = lab.workdir / f"submit-{ap}.tok"
    path.write_text(token + "\n")
    path.chmod(0o600)
    try:
        got = condor.submit_with_token(
            condor.TokenSubmission(
                collector=f"{cm.address or cm.fqdn}:9618",
                schedd=host.fqdn,
                description=NEVER_RUNS,
                token_file=path,
                ca_file=lab.ca,
                control_tokens=secrets_dir(lab.fed) / "tokens.d",
                initialdir=lab.workdir,
            )
        )
    except Exception as exc:  # the bindings' refusal, whatever its class
        return False, str(exc)[-300:]
    lab.ssh(ap, f"condor_rm {got['job']}", check=False)
    return True, str(got["job"])


def exchange(lab: TokenLab, subject: str, scope: str) -> requests.Response:
    with issuer_http(lab.fed) as session:
        return session.post(
            f"{lab.fed.iam.issuer}token",
            data={
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": subject,
                "subject_token_type": ACCESS_TOKEN,
                "scope": scope,
            },
            timeout=30,
            verify=session.verify,
        )


def test_a_job_token_reads_its_dataset_only_and_cannot_submit(token_lab: TokenLab) -> None:
    lab = token_lab
    user = lab.token(A)
    user_file = lab.workdir / "job-user.tok"
    user_file.write_text(user + "\n")
    user_file.chmod(0o600)
    started = time.monotonic()
    proc = cli(
        "submit", str(lab.file), "--token", str(user_file), "--outdir",
        str(lab.workdir / "jobs"), "--output", "json", "--wait", "--timeout", "300",
        "--dataset", DATASET, "--", "/bin/sh", "-c", READ,
        timeout=420,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    print(f"\n  token job {result['job']}: {time.monotonic() - started:.1f} s")
    got = dict(line.split("=", 1) for line in (result["stdout"] or "").split())
    job = got.pop("token")
    dataset_path = lab.fed.datasets[DATASET].path

    # Through the cache, on the execute node: its dataset, nothing embargoed.
    assert got == {"dataset": "read", "astro-embargoed": "denied", "hep-embargoed": "denied"}

    # The job's token is its own: read-only, on the dataset, a lifetime within the maximum.
    assert job != user
    jc, uc = claims(job), claims(user)
    assert jc["scope"].split() == [f"storage.read:{dataset_path}"], jc
    assert result["job_token_scope"] == jc["scope"]
    assert not any(s.startswith("compute.") for s in jc["scope"].split()), jc
    assert "compute.create" in uc["scope"].split(), uc  # the user's could submit
    assert jc["iss"] == uc["iss"] and jc["sub"] == uc["sub"] and jc["aud"] == uc["aud"], jc
    assert jc["wlcg.groups"] == [A], jc
    assert jc["jti"] != uc["jti"]
    assert 0 < jc["exp"] - jc["iat"] <= lab.fed.iam.token_lifetime_s, jc
    assert jc["exp"] > time.time(), jc

    # Read from the control machine too, at the cache: its dataset yes, embargoed no; the
    # other group's own token reads the other group's embargoed file (positive control).
    sample = f"{dataset_path}/file-001.dat"
    assert https_get(lab, CACHE, sample, job)[0] == 200
    b_embargoed = f"{B}/embargoed/{EMBARGOED_FILE}"
    assert https_get(lab, CACHE, b_embargoed, job)[0] == 403
    assert https_get(lab, CACHE, b_embargoed, lab.token(B))[0] == 200

    # It cannot submit at any access point; the user's token can, at each (positive control).
    for ap in hosts_with(lab.fed, Role.ACCESS_POINT):
        ok, why = submit_at(lab, ap.name, user)
        assert ok, f"the user's token was refused at {ap.name}: {why}"
        ok, why = submit_at(lab, ap.name, job)
        print(f"  job token at {ap.name}: {why}")
        assert not ok, f"the job token submitted job {why} at {ap.name}"
        assert AUTHZ_DENIED in why, why


def test_the_issuer_never_widens_a_job_token(token_lab: TokenLab) -> None:
    user = token_lab.token(A)
    dataset = f"storage.read:{token_lab.fed.datasets[DATASET].path}"
    ok = exchange(token_lab, user, dataset)  # positive control
    assert ok.status_code == 200, ok.text
    assert ok.json()["scope"] == dataset
    assert ok.json()["issued_token_type"] == ACCESS_TOKEN
    job = ok.json()["access_token"]
    for subject, scope, error in [
        (user, "compute.create", "invalid_scope"),  # a compute scope
        (user, f"storage.modify:{A}", "invalid_scope"),  # a write
        (user, f"storage.read:{B}/embargoed", "invalid_scope"),  # another group's path
        (job, dataset, "invalid_grant"),  # a job token is not exchanged again
        (user[:-4] + "AAAA", dataset, "invalid_grant"),  # a forged subject
    ]:
        resp = exchange(token_lab, subject, scope)
        assert resp.status_code == 400, (scope, resp.status_code, resp.text)
        assert resp.json()["error"] == error, (scope, resp.text)
