"""The authenticated ingress at the gateway, for real: Apache + mod_auth_openidc in the token lab.

The token matrix (tests/tokens.py MATRIX plus a valid token, and for data another group's path)
against both routes of the ingress, over HTTPS from the control machine with the deployment CA:
`/status` (the federation status JSON of the federation_status service) and
`/data/<site>/<path>` (that site's cache, which checks the forwarded token again). Each wrong
token is refused with the ingress's normal answer: 401 with `WWW-Authenticate: Bearer
error="invalid_token"` for a token that does not validate (signature, expiry, nbf), 403 with
`error="insufficient_scope"` for a valid token without the claims the route needs (audience,
group, scope, another group's path), and a cache's own 403 (`permission denied`) for a data path
the token's storage scopes do not cover. Also: TLS only, TLS 1.2 or newer, a status that is the
real pool, nothing secret in the logs, and issuer key rotation without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import pytest

from escape_fed.model.schema import Role
from escape_fed.model.view import datasets_at, hosts_with, pool_central_manager, site_capacity
from tests.e2e.conftest import ISSUER_KEYS, TokenLab
from tests.labfed import cli
from tests.tokens import CASES, case, good_claims, mint

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

A, B = "/escape/astro", "/escape/hep"
A_EMBARGOED = "/escape/astro/embargoed/notes-001.dat"  # group A's, on every origin
ORIGIN_ROOT = "/srv/xrootd"  # xrootd_origin_localroot
SAMPLE_FILE = "file-001.dat"  # xrootd_origin_synthetic_files
PORT = 443  # ingress_port
STATUS_PORT = 8081  # federation_status_port
JWKS_REFRESH_S = 60  # ingress_jwks_refresh_interval_s in the lab
INVALID = 'Bearer realm="escape-fed", error="invalid_token"'
INSUFFICIENT = 'Bearer error="insufficient_scope"'
STATUS_CELLS = ["valid", *CASES, "foreign_group"]
DATA_CELLS = ["valid", *CASES, "other_group_path"]
UNVALIDATED = {"expired", "not_yet_valid", "unknown_issuer", "bad_signature"}
KEYS_TOOL = "escape-fed-issuer-keys"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; the last value of a repeated header
    body: bytes

    @property
    def www_authenticate(self) -> str:
        return self.headers.get("www-authenticate", "")


def gateway(lab: TokenLab) -> str:
    return hosts_with(lab.fed, Role.INGRESS)[0].name


def curl(
    lab: TokenLab,
    path: str,
    token: str | None,
    *options: str,
    scheme: str = "https",
    port: int = PORT,
) -> Reply:
    """One request to the ingress from the control machine (the token in a 0600 header file)."""
    host = gateway(lab)
    fqdn = lab.fqdn(host)
    out = lab.workdir / "ingress-reply"
    head = lab.workdir / "ingress-headers"
    argv = [
        "curl",
        "-sS",
        "--cacert",
        str(lab.ca),
        "--resolve",
        f"{fqdn}:{port}:{lab.address(host)}",
    ]
    if token is not None:
        auth = lab.workdir / "ingress-auth"
        auth.touch(mode=0o600)
        auth.write_text(f"Authorization: Bearer {token}\n")
        argv += ["-H", f"@{auth}"]
    argv += [*options, "-D", str(head), "-o", str(out), "-w", "%{http_code}"]
    proc = subprocess.run(
        [*argv, f"{scheme}://{fqdn}:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    headers: dict[str, str] = {}
    for line in head.read_text(errors="replace").splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Reply(int(proc.stdout), headers, out.read_bytes())


def sample(lab: TokenLab, group: str) -> tuple[str, str, str]:
    """(site, path, origin host) of a dataset file of GROUP's, at a site with a cache."""
    for site, spec in lab.fed.sites.items():
        if spec.cache is None or not hosts_with(lab.fed, Role.ORIGIN, site):
            continue
        for name in datasets_at(lab.fed, site):
            path = lab.fed.datasets[name].path
            if path.startswith(group + "/"):
                return site, f"{path}/{SAMPLE_FILE}", hosts_with(lab.fed, Role.ORIGIN, site)[0].name
    raise AssertionError(f"no dataset of {group} at a site with a cache and an origin")


def origin_sha256(lab: TokenLab, origin: str, path: str) -> str:
    return lab.ssh(origin, f"sha256sum {ORIGIN_ROOT}{path}").stdout.split()[0]


def header(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def claims_token(lab: TokenLab, group: str, **over: Any) -> str:
    """A token signed with the issuer's active key: valid but for the claims in OVER."""
    return mint(lab.issuer_key(), good_claims(lab, group, **over))


def status_token(lab: TokenLab, cell: str) -> str | None:
    if cell == "valid":
        return lab.token(A)
    if cell == "foreign_group":  # signed by the issuer, for a group the federation does not know
        return claims_token(lab, A, **{"wlcg.groups": ["/escape/unknown"]})
    return case(cell).build(lab, A)


def data_token(lab: TokenLab, cell: str) -> str | None:
    if cell == "valid":
        return lab.token(A)
    if cell == "other_group_path":
        return lab.token(B)
    return case(cell).build(lab, A)


def assert_refused(reply: Reply, cell: str) -> None:
    """The ingress's own refusal for a wrong-token cell (RFC 6750 wording of mod_auth_openidc)."""
    if cell in UNVALIDATED:
        assert reply.status == 401, (cell, reply.status, reply.body[:300])
        assert reply.www_authenticate.startswith(INVALID), (cell, reply.www_authenticate)
    elif cell == "no_token":
        assert reply.status == 401, (cell, reply.status)
        assert reply.www_authenticate.startswith('Bearer realm="escape-fed"'), (
            reply.www_authenticate
        )
        assert "No bearer token found" in reply.www_authenticate, reply.www_authenticate
    else:
        assert reply.status == 403, (cell, reply.status, reply.body[:300])
        assert reply.www_authenticate.startswith(INSUFFICIENT), (cell, reply.www_authenticate)


# --- /status ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", STATUS_CELLS)
def test_status_token_matrix(token_lab: TokenLab, cell: str) -> None:
    reply = curl(token_lab, "/status", status_token(token_lab, cell))
    if cell == "valid":
        assert reply.status == 200, reply.body[:300]
        assert reply.headers.get("content-type", "").startswith("application/json")
        status = json.loads(reply.body)
        assert status["pool"]["federation"] == token_lab.fed.federation.name
        assert status["pool"]["mode"] == token_lab.fed.federation.mode.value
    else:
        assert_refused(reply, cell)
        assert b'"pool"' not in reply.body


def wait_for_full_pool(lab: TokenLab, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        reply = curl(lab, "/status", lab.token(A))
        assert reply.status == 200, reply.body[:300]
        status: dict[str, Any] = json.loads(reply.body)
        missing = [m for s in status["sites"].values() for m in s["missing"]]
        if not missing or time.monotonic() > deadline:
            return status
        time.sleep(5)


def test_status_is_the_real_pool(token_lab: TokenLab) -> None:
    """Per site: the execute nodes' declared capacity, and what the collector says (escape-fed
    status from the control machine, another identity and another code path)."""
    status = wait_for_full_pool(token_lab)
    now = time.time()
    assert abs(status["generated_at_epoch"] - now) < 60, status["generated_at"]
    control = cli("status", str(token_lab.file), "--output", "json")
    assert control.returncode == 0, control.stderr
    seen = json.loads(control.stdout)
    for site in token_lab.fed.sites:
        execute = hosts_with(token_lab.fed, Role.EXECUTE, site)
        if not execute:
            continue
        declared = site_capacity(token_lab.fed, site)
        got = status["sites"][site]
        assert got["missing"] == [], got
        assert got["machines"] == sorted(h.fqdn for h in execute)
        assert got["nodes"] == declared["nodes"] == len(execute)
        assert got["cpus"] == declared["cpus"], (site, got["cpus"], declared)
        assert got["memory_mb"] == declared["memory_mb"], (site, got["memory_mb"], declared)
        assert got["gpus"] == declared["gpus"]
        assert got["declared"] == declared
        for key in ("nodes", "cpus", "memory_mb", "gpus", "slots"):
            assert got[key] == seen["sites"][site][key], (site, key)
        slots = got["slot_list"]
        assert len(slots) == got["slots"] > 0
        assert {s["machine"] for s in slots} == {h.fqdn for h in execute}
        assert all(s["state"] in {"Unclaimed", "Claimed", "Owner", "Matched"} for s in slots), slots
    aps = {h.fqdn for h in hosts_with(token_lab.fed, Role.ACCESS_POINT)}
    listed = {name for s in status["sites"].values() for name in s["access_points"]}
    assert listed == aps, (listed, aps)
    assert status["pool"]["slots"] == seen["pool"]["slots"]
    pools = set()
    for site in token_lab.fed.sites:
        cm = pool_central_manager(token_lab.fed, site)
        if cm is not None and hosts_with(token_lab.fed, Role.EXECUTE, site):
            pools.add(cm.fqdn)
    assert {p["central_manager"] for p in status["pools"]} == pools
    assert all(p["ok"] for p in status["pools"]), status["pools"]


# --- /data --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", DATA_CELLS)
def test_data_token_matrix(token_lab: TokenLab, cell: str) -> None:
    site, path, origin = sample(token_lab, A)
    if cell == "other_group_path":
        path = A_EMBARGOED  # group B's valid token, group A's embargoed area
    reply = curl(token_lab, f"/data/{site}{path}", data_token(token_lab, cell))
    if cell == "valid":
        assert reply.status == 200, reply.body[:300]
        assert hashlib.sha256(reply.body).hexdigest() == origin_sha256(token_lab, origin, path)
    elif cell == "missing_scope":
        # Group and audience are right, so the ingress forwards it; the cache refuses the path
        # its storage scopes do not cover (XrdHttp's own 403, not the ingress's).
        assert reply.status == 403, (reply.status, reply.body[:300])
        assert b"permission denied" in reply.body.lower(), reply.body[:300]
        assert INSUFFICIENT not in reply.www_authenticate
    else:
        assert_refused(reply, cell)


def test_group_a_reads_its_embargoed_data_through_the_ingress(token_lab: TokenLab) -> None:
    site, _, origin = sample(token_lab, A)
    reply = curl(token_lab, f"/data/{site}{A_EMBARGOED}", token_lab.token(A))
    assert reply.status == 200, reply.body[:300]
    assert hashlib.sha256(reply.body).hexdigest() == origin_sha256(token_lab, origin, A_EMBARGOED)


@pytest.mark.parametrize(
    "spelling",
    [
        "{p}",
        "/escape/hep/../astro/embargoed/notes-001.dat",
        "//escape//astro/embargoed/notes-001.dat",
        "/escape/astro/%65mbargoed/notes-001.dat",
    ],
)
def test_group_b_cannot_reach_group_a_embargoed_data_by_any_spelling(
    token_lab: TokenLab, spelling: str
) -> None:
    for site in token_lab.fed.sites:
        if token_lab.fed.sites[site].cache is None:
            continue
        reply = curl(token_lab, f"/data/{site}{spelling.format(p=A_EMBARGOED)}", token_lab.token(B))
        assert reply.status == 403, (site, spelling, reply.status)
        assert reply.www_authenticate.startswith(INSUFFICIENT)


def test_the_cache_checks_the_forwarded_token_too(token_lab: TokenLab) -> None:
    """Defense in depth: a group-A token whose scopes leave out A's embargoed area passes the
    ingress (right group) and is refused by the cache, while it reads what its scopes cover."""
    site, path, origin = sample(token_lab, A)
    narrow = claims_token(token_lab, A, scope=f"storage.read:{path.rsplit('/', 1)[0]}")
    refused = curl(token_lab, f"/data/{site}{A_EMBARGOED}", narrow)
    assert refused.status == 403, refused.body[:300]
    assert b"permission denied" in refused.body.lower(), refused.body[:300]
    assert INSUFFICIENT not in refused.www_authenticate
    read = curl(token_lab, f"/data/{site}{path}", narrow)
    assert read.status == 200, read.body[:300]
    assert hashlib.sha256(read.body).hexdigest() == origin_sha256(token_lab, origin, path)


def test_data_is_read_only_and_other_paths_are_closed(token_lab: TokenLab) -> None:
    site, path, _ = sample(token_lab, A)
    token = token_lab.token(A)
    put = curl(token_lab, f"/data/{site}{path}.new", token, "-X", "PUT", "--data-binary", "x")
    assert put.status == 405, put.status
    for other in ("/", "/data/", "/data/no-such-site/escape/x", "/server-status", "/index.html"):
        reply = curl(token_lab, other, token)
        assert reply.status in (403, 404), (other, reply.status)
        assert b"Index of" not in reply.body


# --- TLS and hardening ----------------------------------------------------------------------------


def test_plain_http_is_refused(token_lab: TokenLab) -> None:
    host = gateway(token_lab)
    fqdn, address = token_lab.fqdn(host), token_lab.address(host)
    on_80 = subprocess.run(
        ["curl", "-sS", "--resolve", f"{fqdn}:80:{address}", f"http://{fqdn}/status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert on_80.returncode == 7, (on_80.returncode, on_80.stderr)  # connection refused
    plain = curl(token_lab, "/status", token_lab.token(A), scheme="http")
    assert plain.status == 400, plain.status  # plain HTTP to the TLS port
    assert b'"pool"' not in plain.body


@pytest.mark.parametrize(
    ("version", "accepted"), [("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)]
)
def test_tls_versions(token_lab: TokenLab, version: str, accepted: bool) -> None:
    host = gateway(token_lab)
    proc = subprocess.run(
        [
            "openssl",
            "s_client",
            version,
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-connect",
            f"{token_lab.address(host)}:{PORT}",
            "-servername",
            token_lab.fqdn(host),
            "-CAfile",
            str(token_lab.ca),
            "-verify_return_error",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode == 0) == accepted, (version, proc.returncode, proc.stderr[-500:])
    if accepted:
        assert "Verify return code: 0 (ok)" in proc.stdout


def test_the_server_says_nothing_about_itself(token_lab: TokenLab) -> None:
    """Not its version, nor the backends' (gunicorn, XrdHttp name themselves otherwise)."""
    site, path, _ = sample(token_lab, A)
    token = token_lab.token(A)
    for reply in (
        curl(token_lab, "/status", None),
        curl(token_lab, "/status", token),
        curl(token_lab, f"/data/{site}{path}", token),
        curl(token_lab, f"/data/{site}/escape/no-such-file", token),
    ):
        assert reply.headers.get("server") == "Apache", reply.headers
        assert reply.headers.get("strict-transport-security", "").startswith("max-age=")
    refused = curl(token_lab, "/status", None)
    assert b"Apache/" not in refused.body and b"Debian" not in refused.body


def test_only_the_needed_apache_modules_are_loaded(token_lab: TokenLab) -> None:
    loaded = token_lab.ssh(gateway(token_lab), "apache2ctl -M 2>/dev/null").stdout
    names = set(re.findall(r"^\s*(\w+)_module", loaded, re.M))
    for needed in ("auth_openidc", "ssl", "proxy", "proxy_http", "headers", "lua", "authz_core"):
        assert needed in names, (needed, sorted(names))
    for unwanted in (
        "autoindex",
        "status",
        "cgi",
        "cgid",
        "userdir",
        "dir",
        "alias",
        "deflate",
        "negotiation",
    ):
        assert unwanted not in names, (unwanted, sorted(names))


def test_apache_runs_sandboxed_and_unprivileged(token_lab: TokenLab) -> None:
    host = gateway(token_lab)
    shown = token_lab.ssh(
        host, "systemctl show -p NoNewPrivileges -p ProtectSystem -p CapabilityBoundingSet apache2"
    ).stdout
    props = dict(line.split("=", 1) for line in shown.strip().splitlines())
    assert props["NoNewPrivileges"] == "yes" and props["ProtectSystem"] == "full", props
    caps = set(props["CapabilityBoundingSet"].split())
    assert "cap_net_bind_service" in caps and "cap_sys_admin" not in caps, caps
    assert "cap_dac_override" not in caps, caps
    users = token_lab.ssh(host, "ps -o user= -C apache2").stdout.split()
    assert users.count("root") == 1 and set(users) == {"root", "www-data"}, users


def test_the_status_service_is_loopback_only_and_its_token_private(token_lab: TokenLab) -> None:
    host = gateway(token_lab)
    listening = token_lab.ssh(host, f"ss -Hltn 'sport = :{STATUS_PORT}'").stdout.split("\n")
    local = {line.split()[3] for line in listening if line.strip()}
    assert local == {f"127.0.0.1:{STATUS_PORT}"}, local
    direct = subprocess.run(
        ["curl", "-sS", "-m", "5", f"http://{token_lab.address(host)}:{STATUS_PORT}/status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert direct.returncode != 0  # not reachable from outside the gateway
    stat = token_lab.ssh(host, "stat -c '%a %U %n' /etc/escape-fed-status/tokens.d/*").stdout
    lines = stat.strip().splitlines()
    assert lines, stat
    assert all(line.startswith("600 escape-fed-status ") for line in lines), stat
    user = token_lab.ssh(host, "ps -o user= -C gunicorn | sort -u").stdout.split()
    assert "escape-fed-status" in user and "root" not in user, user


def test_no_token_in_the_ingress_or_status_logs(token_lab: TokenLab) -> None:
    tokens = token_lab.fetched_tokens()
    assert tokens, "the tests above fetched tokens"
    host = gateway(token_lab)
    logs = token_lab.ssh(
        host,
        "cat /var/log/apache2/*.log; journalctl -u escape-fed-status -u apache2 --no-pager",
    ).stdout
    for token in tokens:
        assert token not in logs
        assert token.split(".")[2] not in logs  # not even the signature part


# --- issuer key rotation ------------------------------------------------------------------------


@pytest.mark.destructive(order=3)
def test_key_rotation_without_restarting_the_ingress(token_lab: TokenLab) -> None:
    """A new issuer key is trusted at once (mod_auth_openidc refetches the JWKS for an unknown
    key id); a removed one is refused within the JWKS refresh interval (the expiry timer), with
    the same Apache process throughout."""
    host = gateway(token_lab)
    issuer = token_lab.issuer_host
    main_pid = token_lab.ssh(host, "systemctl show -p MainPID --value apache2").stdout.strip()
    before = curl(token_lab, "/status", token_lab.token(A))
    assert before.status == 200
    old_key = token_lab.issuer_key()
    new = token_lab.ssh(issuer, f"{KEYS_TOOL} add --activate").stdout.strip()
    assert new and new != old_key["kid"]
    fresh = token_lab.token(A)
    assert header(fresh)["kid"] == new
    assert curl(token_lab, "/status", fresh).status == 200  # at once

    token_lab.ssh(issuer, f"{KEYS_TOOL} remove {old_key['kid']}")
    stale = mint(old_key, good_claims(token_lab, A))
    start = time.monotonic()
    while True:
        reply = curl(token_lab, "/status", stale)
        if reply.status != 200:
            break
        assert time.monotonic() - start < JWKS_REFRESH_S * 1.25 + 30, "removed key still trusted"
        time.sleep(3)
    assert reply.status == 401 and reply.www_authenticate.startswith(INVALID)
    assert curl(token_lab, "/status", token_lab.token(A)).status == 200
    after = token_lab.ssh(host, "systemctl show -p MainPID --value apache2").stdout.strip()
    assert after == main_pid  # no restart
    gone = token_lab.ssh(issuer, f"test -e {ISSUER_KEYS}/{old_key['kid']}.jwk", check=False)
    assert gone.returncode != 0
