"""The lab issuer (role token_issuer) for real: discovery, JWKS, tokens and their claims, refusals,
key rotation without a restart, secrets never readable by others, a second deploy changes nothing.

Runs on the shared global-pool lab (`token_lab`; ESCAPE_FED_SHARED_LAB=FED.yaml to reuse a
deployed one). Every request goes over TLS checked against the deployment CA, to the issuer's
real name.
"""

from __future__ import annotations

import json
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from escape_fed.backends.ansible import run_playbook
from escape_fed.ops.deploy import prepare, secrets_dir
from escape_fed.ops.tokens import ca_file, client_id, clients_dir, issuer_http
from tests.e2e.conftest import ISSUER_KEYS, TokenLab
from tests.labfed import cli
from tests.tokens import group_scopes

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

ASTRO, HEP = "/escape/astro", "/escape/hep"
SERVICE = "escape-fed-issuer.service"
KEYS_TOOL = "escape-fed-issuer-keys"


# --- helpers ----------------------------------------------------------------------------------


def http(lab: TokenLab) -> requests.Session:
    return issuer_http(lab.fed)


def get(lab: TokenLab, url: str) -> requests.Response:
    with http(lab) as session:
        return session.get(url, verify=session.verify, timeout=20, allow_redirects=False)


def jwks(lab: TokenLab) -> dict[str, Any]:
    resp = get(lab, lab.fed.iam.issuer + "jwks")
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def kids(lab: TokenLab) -> set[str]:
    return {k["kid"] for k in jwks(lab)["keys"]}


def secret(lab: TokenLab, group: str) -> str:
    return (clients_dir(lab.fed) / f"{client_id(lab.fed, group)}.secret").read_text().strip()


def post_token(lab: TokenLab, auth: tuple[str, str] | None, **form: str) -> requests.Response:
    with http(lab) as session:
        return session.post(
            lab.fed.iam.issuer + "token",
            data={"grant_type": "client_credentials", **form},
            auth=auth,
            verify=session.verify,
            timeout=20,
        )


def verify(lab: TokenLab, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of TOKEN, its signature checked against the issuer's published JWKS."""
    keys = KeySet.import_key_set(jwks(lab))  # type: ignore[arg-type]
    decoded = jwt.decode(token, keys, algorithms=["ES256"])
    return dict(decoded.header), dict(decoded.claims)


def active_kid(lab: TokenLab) -> str:
    return lab.ssh(lab.issuer_host, f"cat {ISSUER_KEYS}/active").stdout.strip()


def main_pid(lab: TokenLab) -> tuple[str, str]:
    out = lab.ssh(lab.issuer_host, f"systemctl show -p MainPID -p NRestarts {SERVICE}").stdout
    props = dict(line.split("=", 1) for line in out.split())
    assert props["MainPID"] != "0", out
    return props["MainPID"], props["NRestarts"]


def fetch(lab: TokenLab, out: Path, group: str, *extra: str) -> Any:
    return cli("token", str(out), "-f", str(lab.file), "--group", group, *extra, timeout=120)


# --- discovery and JWKS -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["openid-configuration", "double-slash", "oauth-authorization-server"],
)
def test_discovery_document(token_lab: TokenLab, where: str) -> None:
    iss = token_lab.fed.iam.issuer
    url = {
        "openid-configuration": f"{iss}.well-known/openid-configuration",
        # what scitokens-cpp asks for: issuer + "/.well-known/...", a double slash for our URL
        "double-slash": f"{iss}/.well-known/openid-configuration",
        "oauth-authorization-server": f"{iss.rstrip('/')}/.well-known/oauth-authorization-server",
    }[where]
    resp = get(token_lab, url)
    assert resp.status_code == 200, (url, resp.status_code)  # served, not redirected
    assert resp.headers["Content-Type"].startswith("application/json")
    meta = resp.json()
    assert meta["issuer"] == iss
    assert meta["jwks_uri"] == f"{iss}jwks"
    assert meta["token_endpoint"] == f"{iss}token"
    assert meta["grant_types_supported"] == [
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:token-exchange",  # job tokens (RFC 8693)
    ]
    assert meta["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "none"]
    # Scope names only: no group's paths (embargoed or not), no group names.
    assert meta["scopes_supported"] == [
        "wlcg.groups", "compute.read", "compute.create", "compute.modify", "compute.cancel",
        "storage.read",
    ]  # fmt: skip
    text = resp.text
    for name, group in token_lab.fed.iam.groups.items():
        assert name not in text
        for path in group.paths:
            assert path not in text, path
    assert {"wlcg.ver", "wlcg.groups", "scope", "aud"} <= set(meta["claims_supported"])


def test_jwks_publishes_public_keys_only(token_lab: TokenLab) -> None:
    keys = jwks(token_lab)["keys"]
    assert keys, "empty JWKS"
    for key in keys:
        assert key["kty"] == "EC" and key["crv"] == "P-256"
        assert key["alg"] == "ES256" and key["use"] == "sig" and key["kid"]
        assert "d" not in key, f"private part of {key['kid']} published"
    assert active_kid(token_lab) in {k["kid"] for k in keys}
    on_host = token_lab.ssh(token_lab.issuer_host, f"ls {ISSUER_KEYS}").stdout.split()
    assert sorted(k["kid"] + ".jwk" for k in keys) == sorted(n for n in on_host if n != "active")


# --- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [ASTRO, HEP])
def test_token_claims_and_header(token_lab: TokenLab, group: str) -> None:
    fed = token_lab.fed
    before = int(time.time())
    token = token_lab.token(group)
    header, claims = verify(token_lab, token)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": active_kid(token_lab)}
    cid = client_id(fed, group)
    assert claims["iss"] == fed.iam.issuer
    assert claims["sub"] == cid and claims["client_id"] == cid
    assert claims["aud"] == fed.iam.audience
    assert claims["wlcg.ver"] == "1.0"
    assert claims["wlcg.groups"] == [group]
    assert claims["scope"].split() == group_scopes(token_lab, group)
    others = [p for g, v in fed.iam.groups.items() if g != group for p in v.paths]
    assert others and not [p for p in others if p in claims["scope"]]
    assert before - 5 <= claims["iat"] <= time.time() + 5
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == fed.iam.token_lifetime_s
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,}", claims["jti"])


def test_token_file_is_private_and_never_printed(token_lab: TokenLab, tmp_path: Path) -> None:
    out = tmp_path / "astro.tok"
    proc = fetch(token_lab, out, ASTRO, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    token = out.read_text().strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert token not in proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert "access_token" not in summary and "token" not in summary
    assert summary["group"] == ASTRO and summary["client_id"] == client_id(token_lab.fed, ASTRO)
    assert summary["scopes"] == group_scopes(token_lab, ASTRO)
    assert summary["expires_in"] == token_lab.fed.iam.token_lifetime_s
    text = fetch(token_lab, out, ASTRO)
    assert text.returncode == 0 and out.read_text().strip() not in text.stdout + text.stderr
    assert "expires" in text.stdout and ASTRO in text.stdout


def test_scope_subset_and_narrower_path(token_lab: TokenLab, tmp_path: Path) -> None:
    own = token_lab.fed.iam.groups[ASTRO].paths[0]
    out = tmp_path / "t"
    proc = fetch(
        token_lab, out, ASTRO, "--scope", "compute.read", "--scope", f"storage.read:{own}/x"
    )
    assert proc.returncode == 0, proc.stderr
    _, claims = verify(token_lab, out.read_text().strip())
    assert claims["scope"] == f"compute.read storage.read:{own}/x"
    assert claims["wlcg.groups"] == [ASTRO]


def test_explicit_audience(token_lab: TokenLab) -> None:
    aud = token_lab.fed.iam.audience
    resp = post_token(
        token_lab, (client_id(token_lab.fed, HEP), secret(token_lab, HEP)), audience=aud
    )
    assert resp.status_code == 200, resp.text
    assert verify(token_lab, resp.json()["access_token"])[1]["aud"] == aud


# --- refusals ---------------------------------------------------------------------------------


def test_wrong_client_secret_is_401(token_lab: TokenLab) -> None:
    resp = post_token(token_lab, (client_id(token_lab.fed, ASTRO), secret(token_lab, HEP)))
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert "access_token" not in resp.text
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


BURST = 50
CLIENT_BURST = 10  # token_issuer_rate_client_burst (role default)
RESPONSIVE_S = 5.0  # a valid client right after the burst is answered within this


def test_a_burst_of_wrong_secrets_is_rate_limited_and_the_issuer_stays_responsive(
    token_lab: TokenLab,
) -> None:
    lab = token_lab
    astro, hep = client_id(lab.fed, ASTRO), client_id(lab.fed, HEP)
    wrong = (astro, secret(lab, HEP))
    # Positive controls first: a wrong secret is a 401 (not a 429), a right one a 200.
    assert post_token(lab, wrong).status_code == 401
    assert post_token(lab, (astro, secret(lab, ASTRO))).status_code == 200

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        replies = list(pool.map(lambda _: post_token(lab, wrong), range(BURST)))
    burst_s = time.monotonic() - started
    codes = [r.status_code for r in replies]
    print(f"\n  {BURST} wrong secrets in {burst_s:.1f} s: {codes.count(401)} x 401, "
          f"{codes.count(429)} x 429")  # fmt: skip
    assert set(codes) == {401, 429}, codes
    assert codes.count(401) <= CLIENT_BURST + 1, codes  # + the refill during the burst
    for r in replies:
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1, r.headers
            assert r.json()["error"] == "too_many_requests"
            assert "access_token" not in r.text

    # Right after: another client is answered at once; the flooded client is answered again
    # once its Retry-After has passed.
    started = time.monotonic()
    ok = post_token(lab, (hep, secret(lab, HEP)))
    took = time.monotonic() - started
    print(f"  a valid client right after: HTTP {ok.status_code} in {took:.2f} s")
    assert ok.status_code == 200 and "access_token" in ok.json(), ok.text
    assert took < RESPONSIVE_S, took
    time.sleep(max(int(r.headers.get("Retry-After", 0)) for r in replies))
    again = post_token(lab, (astro, secret(lab, ASTRO)))
    assert again.status_code == 200, again.text
    time.sleep(CLIENT_BURST)  # the client's bucket full again for the tests that follow


def test_unknown_client_is_401(token_lab: TokenLab) -> None:
    resp = post_token(token_lab, ("escape-lab-nobody", secret(token_lab, ASTRO)))
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


def test_secret_in_the_body_is_refused(token_lab: TokenLab) -> None:
    # client_secret_post is not offered: only client_secret_basic
    cid = client_id(token_lab.fed, ASTRO)
    resp = post_token(token_lab, None, client_id=cid, client_secret=secret(token_lab, ASTRO))
    assert resp.status_code in (400, 401) and resp.json()["error"] == "invalid_client"


@pytest.mark.parametrize("ask", ["group", "embargoed_path", "write_scope"])
def test_other_group_is_refused(token_lab: TokenLab, ask: str) -> None:
    hep_path = token_lab.fed.iam.groups[HEP].paths[0]
    scope = {
        "group": f"wlcg.groups:{HEP}",
        "embargoed_path": f"storage.read:{hep_path}",
        "write_scope": "storage.create:/escape/astro",
    }[ask]
    resp = post_token(
        token_lab, (client_id(token_lab.fed, ASTRO), secret(token_lab, ASTRO)), scope=scope
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_scope", resp.text


def test_other_group_through_the_cli(token_lab: TokenLab, tmp_path: Path) -> None:
    hep_path = token_lab.fed.iam.groups[HEP].paths[0]
    out = tmp_path / "t"
    proc = fetch(token_lab, out, ASTRO, "--scope", f"storage.read:{hep_path}")
    assert proc.returncode == 2 and "invalid_scope" in proc.stderr, proc.stderr
    assert not out.exists()


def test_other_audience_is_refused(token_lab: TokenLab) -> None:
    resp = post_token(
        token_lab,
        (client_id(token_lab.fed, ASTRO), secret(token_lab, ASTRO)),
        audience="https://other.example.org",
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_target"


# --- secrets ----------------------------------------------------------------------------------


def test_secrets_on_the_issuer_host(token_lab: TokenLab) -> None:
    host = token_lab.issuer_host
    listing = token_lab.ssh(
        host,
        "stat -c '%a %U:%G %n' /var/lib/escape-fed-issuer/keys /var/lib/escape-fed-issuer/keys/* "
        "/etc/escape-fed-issuer/config.json /etc/escape-fed/tls/issuer.key "
        "/usr/local/sbin/escape-fed-issuer-keys",
    ).stdout
    modes = {line.split()[2]: tuple(line.split()[:2]) for line in listing.splitlines()}
    assert modes["/var/lib/escape-fed-issuer/keys"] == ("700", "escape-issuer:escape-issuer")
    keyfiles = [p for p in modes if p.startswith(f"{ISSUER_KEYS}/")]
    assert len(keyfiles) >= 2  # active + at least one key
    for path in keyfiles:
        assert modes[path] == ("600", "escape-issuer:escape-issuer"), path
    assert modes["/etc/escape-fed-issuer/config.json"] == ("640", "root:escape-issuer")
    assert modes["/etc/escape-fed/tls/issuer.key"] == ("600", "escape-issuer:escape-issuer")
    assert modes["/usr/local/sbin/escape-fed-issuer-keys"] == ("700", "root:root")
    loose = token_lab.ssh(
        host,
        "find /var/lib/escape-fed-issuer /etc/escape-fed-issuer /opt/escape-fed-issuer "
        "/etc/escape-fed/tls/issuer.key -perm /o+w -o -path '/var/lib/escape-fed-issuer/keys*' "
        "-perm /o+r -o -name issuer.key -perm /o+r "
        "-o -name config.json -perm /o+r",
    ).stdout
    assert loose == "", loose
    config = token_lab.ssh(host, "cat /etc/escape-fed-issuer/config.json").stdout
    for group in token_lab.fed.iam.groups:
        assert secret(token_lab, group) not in config  # a hash only
        assert json.loads(config)["clients"][client_id(token_lab.fed, group)]["secret_hash"]


def test_service_runs_unprivileged_and_hardened(token_lab: TokenLab) -> None:
    props = token_lab.ssh(
        token_lab.issuer_host,
        f"systemctl show -p User -p NoNewPrivileges -p ProtectSystem -p PrivateTmp "
        f"-p CapabilityBoundingSet -p ActiveState {SERVICE}",
    ).stdout
    got = dict(line.split("=", 1) for line in props.splitlines())
    assert got["ActiveState"] == "active"
    assert got["User"] == "escape-issuer"
    assert got["NoNewPrivileges"] == "yes" and got["ProtectSystem"] == "strict"
    assert got["PrivateTmp"] == "yes" and got["CapabilityBoundingSet"] == ""
    # the issuer's gunicorn and its workers (the gateway runs other gunicorn services too)
    users = token_lab.ssh(
        token_lab.issuer_host,
        f"pid=$(systemctl show -P MainPID {SERVICE}); ps -o user= -p $pid --ppid $pid",
    ).stdout.split()
    assert users and set(users) == {"escape-issuer"}


def test_client_secrets_on_the_control_machine(token_lab: TokenLab) -> None:
    folder = clients_dir(token_lab.fed)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    for group in token_lab.fed.iam.groups:
        for suffix in (".secret", ".hash"):
            path = folder / f"{client_id(token_lab.fed, group)}{suffix}"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert ca_file(token_lab.fed).is_file()


def test_no_token_in_the_issuer_journal(token_lab: TokenLab) -> None:
    token = token_lab.token(ASTRO)
    log = token_lab.ssh(token_lab.issuer_host, f"journalctl -u {SERVICE} --no-pager -o cat").stdout
    assert "POST /token" in log  # the access log is there...
    assert token not in log and "eyJ" not in log  # ...without tokens
    for group in token_lab.fed.iam.groups:
        assert secret(token_lab, group) not in log


# --- key rotation -----------------------------------------------------------------------------


@pytest.mark.destructive(order=3)
def test_key_rotation_without_restart(token_lab: TokenLab) -> None:
    host = token_lab.issuer_host
    pid = main_pid(token_lab)
    old = active_kid(token_lab)
    assert old in kids(token_lab)

    new = token_lab.ssh(host, f"{KEYS_TOOL} add --activate").stdout.strip()
    assert new and new != old
    assert {old, new} <= kids(token_lab)  # new published at once, old still published
    header, claims = verify(token_lab, token_lab.token(ASTRO))
    assert header["kid"] == new and claims["wlcg.groups"] == [ASTRO]

    refused = token_lab.ssh(host, f"{KEYS_TOOL} remove {new}", check=False)
    assert refused.returncode != 0 and "active" in refused.stderr
    assert new in kids(token_lab)

    token_lab.ssh(host, f"{KEYS_TOOL} remove {old}")
    assert old not in kids(token_lab) and new in kids(token_lab)  # gone at once
    listed = token_lab.ssh(host, f"{KEYS_TOOL} list").stdout
    assert old not in listed and re.search(rf"^{re.escape(new)}\s+ES256\s+active", listed, re.M)
    assert main_pid(token_lab) == pid  # same process, no restart


# --- the role: a second deploy changes nothing --------------------------------------------------


def test_second_deploy_changes_nothing(token_lab: TokenLab, tmp_path: Path) -> None:
    book = tmp_path / "issuer.yml"
    book.write_text(
        "- name: Lab token issuer\n  hosts: iam_issuer\n  gather_facts: false\n"
        "  roles:\n    - escape.fed.token_issuer\n"
    )
    inventory = prepare(token_lab.fed, str(token_lab.file))
    kid, pid = active_kid(token_lab), main_pid(token_lab)
    runs = []
    for n in (1, 2):
        log = tmp_path / f"run{n}.log"
        result = run_playbook(inventory / "hosts.yml", book, lambda _m: None, log=log)
        assert result.ok, log.read_text()[-3000:]
        runs.append((result, log.read_text()))
    assert runs[1][0].changed == 0, runs[1][1][-3000:]
    assert active_kid(token_lab) == kid  # the role never replaces existing keys
    if runs[0][0].changed == 0:
        assert main_pid(token_lab) == pid
    # nothing secret in Ansible's output
    key = token_lab.issuer_key()
    for _, text in runs:
        assert key["d"] not in text
        for group in token_lab.fed.iam.groups:
            assert secret(token_lab, group) not in text
    assert Path(secrets_dir(token_lab.fed)).is_dir()
