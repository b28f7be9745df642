"""Token authorisation on the data layer, for real: the XRootD origins and caches of the token lab.

The token matrix (tests/tokens.py MATRIX, plus a valid token and another group's path) against an
origin and a cache, over HTTPS (curl from the control machine with the deployment CA) and over
root:// (xrdcp on an access point, the token in BEARER_TOKEN_FILE: XRootD's ztn, over TLS). A
valid token reads the origin's bytes; every wrong one is refused with the component's normal
error: HTTP 403 from XrdHttp, `[3010] Unable to open ...; permission denied` over root://.

Tenant separation: group B's valid token never reads group A's embargoed area, at any origin or
through any cache, while it reads its own. The caches read from their origin with their own
credential (an XRootD sss key the origins accept from the cache hosts only, for reading only),
not the user's token. Issuer key rotation: a key added to the issuer is trusted, and a removed
one refused, without restarting XRootD, within the key refresh interval or at once after
`flush_key_cache.yml`'s refresh.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from escape_fed.lab.runtime import ssh_command
from tests.e2e.conftest import ISSUER_KEYS, TokenLab
from tests.tokens import CASES, case, good_claims, mint

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

A, B = "/escape/astro", "/escape/hep"
A_EMBARGOED = "/escape/astro/embargoed/notes-001.dat"  # group A's, on every origin
B_EMBARGOED = "/escape/hep/embargoed/notes-001.dat"
ORIGIN_ROOT = "/srv/xrootd"  # xrootd_origin_localroot
CACHE_ROOT = "/var/cache/xrootd"  # the lab's cache.path
CLIENT = "ap-a"  # where root:// requests come from (an access point, as a user's would)
TOKEN_FILE = "/root/escape-fed-test.token"
CA_DIR = "X509_CERT_DIR=/etc/ssl/certs"  # the system store, where tls_ca puts the CA
HTTPS_PORT = 8443  # xrootd_origin_https_port; the lab caches' https_port
CELLS = ["valid", *CASES, "other_group_path"]
MATRIX_HOSTS = ["origin-a", "cache-a"]
DATA_HOSTS = ["origin-a", "cache-a", "origin-b", "cache-b"]
KEYS_UNIT = {"origin": "xrootd-origin-token-keys", "cache": "xrootd-xcache-token-keys"}
SERVICE = {"origin": "xrootd@origin", "cache": "xrootd@xcache"}
REFRESH_S = 60  # xrootd_origin_token_key_refresh_s / xcache_token_key_refresh_s in the lab


def kind(host: str) -> str:
    return "cache" if host.startswith("cache") else "origin"


def origin_sha256(lab: TokenLab, path: str, host: str = "origin-a") -> str:
    """sha256 of PATH as the origin behind HOST stores it (a site's cache fronts the site's
    origin; every origin holds its own, different, embargoed files)."""
    origin = host.replace("cache-", "origin-")
    return lab.ssh(origin, f"sha256sum {ORIGIN_ROOT}{path}").stdout.split()[0]


def https_get(lab: TokenLab, host: str, path: str, token: str | None) -> tuple[int, bytes]:
    """GET https://HOST:8443/PATH from the control machine: (status, body)."""
    fqdn = lab.fqdn(host)
    argv = [
        "curl",
        "-sS",
        "--cacert",
        str(lab.ca),
        "--resolve",
        f"{fqdn}:{HTTPS_PORT}:{lab.address(host)}",
        "-w",
        "\n%{http_code}",
        f"https://{fqdn}:{HTTPS_PORT}{path}",
    ]
    if token is not None:
        argv[1:1] = ["-H", f"Authorization: Bearer {token}"]
    proc = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    body, _, code = proc.stdout.rpartition(b"\n")
    return int(code), body


def on_host(
    lab: TokenLab, host: str, command: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """COMMAND on a lab host with STDIN (tokens go on stdin, never on a command line)."""
    return subprocess.run(
        ssh_command(lab.state_dir, host, command),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def root_read(lab: TokenLab, host: str, path: str, token: str | None) -> tuple[int, str, str]:
    """xrdcp root://HOST//PATH on CLIENT, TOKEN sent by ztn (BEARER_TOKEN_FILE): (rc, sha, err)."""
    url = f"root://{lab.fqdn(host)}:1094/{path}"
    if token is None:
        command = f"rm -f {TOKEN_FILE}; {CA_DIR} xrdcp -f -s {url} /tmp/ef-read"
    else:
        command = (
            f"umask 077 && cat > {TOKEN_FILE} && "
            f"{CA_DIR} BEARER_TOKEN_FILE={TOKEN_FILE} xrdcp -f -s {url} /tmp/ef-read"
        )
    proc = on_host(lab, CLIENT, f"rm -f /tmp/ef-read; {command}", token or "")
    digest = ""
    if proc.returncode == 0:
        digest = on_host(lab, CLIENT, "sha256sum /tmp/ef-read").stdout.split()[0]
    return proc.returncode, digest, proc.stderr


def token_for(lab: TokenLab, cell: str) -> str | None:
    """The token a cell sends: a real one (valid; group B's for other_group_path) or a wrong one."""
    if cell == "valid":
        return lab.token(A)
    if cell == "other_group_path":
        return lab.token(B)
    return case(cell).build(lab, A)


# --- the token matrix, per component and protocol ---------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("host", MATRIX_HOSTS)
def test_https_token_matrix(token_lab: TokenLab, host: str, cell: str) -> None:
    token = token_for(token_lab, cell)
    code, body = https_get(token_lab, host, A_EMBARGOED, token)
    if cell == "valid":
        assert code == 200, body[:300]
        assert hashlib.sha256(body).hexdigest() == origin_sha256(token_lab, A_EMBARGOED)
    else:
        # XrdHttp's answer to a request its authorisation refuses.
        assert code == 403, (code, body[:300])
        assert b"permission denied" in body.lower(), body[:300]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("host", MATRIX_HOSTS)
def test_root_token_matrix(token_lab: TokenLab, host: str, cell: str) -> None:
    token = token_for(token_lab, cell)
    rc, digest, err = root_read(token_lab, host, A_EMBARGOED, token)
    if cell == "valid":
        assert rc == 0, err
        assert digest == origin_sha256(token_lab, A_EMBARGOED)
    else:
        assert rc != 0
        assert f"[3010] Unable to open {A_EMBARGOED}; permission denied" in err, err


def test_root_token_in_the_url_works_too(token_lab: TokenLab) -> None:
    """`?authz=Bearer%20TOKEN`: the other way XRootD takes a token over root://."""
    for host in MATRIX_HOSTS:
        url = f"root://{token_lab.fqdn(host)}:1094/{A_EMBARGOED}"
        read = (
            f'rm -f {TOKEN_FILE}; {CA_DIR} xrdcp -f -s "{url}?authz=Bearer%20$(cat)" - | sha256sum'
        )
        good = on_host(token_lab, CLIENT, read, token_lab.token(A))
        assert good.returncode == 0, good.stderr
        assert good.stdout.split()[0] == origin_sha256(token_lab, A_EMBARGOED)
        wrong = on_host(token_lab, CLIENT, read.replace("| sha256sum", ""), token_lab.token(B))
        assert wrong.returncode != 0
        assert "permission denied" in wrong.stderr, wrong.stderr


# --- tenant separation ---------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["https", "root"])
@pytest.mark.parametrize("host", DATA_HOSTS)
def test_group_b_cannot_read_group_a_embargoed_data_anywhere(
    token_lab: TokenLab, host: str, proto: str
) -> None:
    token_b = token_lab.token(B)
    if proto == "https":
        own, _ = https_get(token_lab, host, B_EMBARGOED, token_b)
        other, body = https_get(token_lab, host, A_EMBARGOED, token_b)
        assert own == 200  # B's token works here: the refusal below is about the path
        assert other == 403, body[:300]
    else:
        rc_own, digest, err = root_read(token_lab, host, B_EMBARGOED, token_b)
        assert rc_own == 0, err
        assert digest == origin_sha256(token_lab, B_EMBARGOED, host)
        rc, _, err = root_read(token_lab, host, A_EMBARGOED, token_b)
        assert rc != 0
        assert "permission denied" in err, err


def test_a_cache_refuses_what_it_already_holds_to_a_token_that_does_not_cover_it(
    token_lab: TokenLab,
) -> None:
    """The cache authorises every read itself: holding A's file does not open it to B."""
    token_a, token_b = token_lab.token(A), token_lab.token(B)
    assert root_read(token_lab, "cache-a", A_EMBARGOED, token_a)[0] == 0
    held = token_lab.ssh("cache-a", f"ls {CACHE_ROOT}{A_EMBARGOED}", check=False)
    assert held.returncode == 0, "cache-a does not hold the file it just served"
    rc, _, err = root_read(token_lab, "cache-a", A_EMBARGOED, token_b)
    assert rc != 0 and "permission denied" in err, err
    assert https_get(token_lab, "cache-a", A_EMBARGOED, token_b)[0] == 403


# --- the cache's own credential towards its origin ---------------------------------------------


def origin_log_lines(lab: TokenLab, origin: str, needle: str) -> list[str]:
    log = lab.ssh(origin, "cat /var/log/xrootd/origin/xrootd.log").stdout
    return [line for line in log.splitlines() if needle in line]


def test_the_cache_reads_from_its_origin_with_its_own_sss_credential(token_lab: TokenLab) -> None:
    path = "/escape/astro/embargoed/notes-002.dat"  # read by no other test
    token_lab.ssh("cache-a", f"rm -f {CACHE_ROOT}{path} {CACHE_ROOT}{path}.cinfo")
    cache = token_lab.fqdn("cache-a")
    before = len(origin_log_lines(token_lab, "origin-a", f"read {path}"))
    rc, digest, err = root_read(token_lab, "cache-a", path, token_lab.token(A))
    assert rc == 0, err
    assert digest == origin_sha256(token_lab, path)
    grants = origin_log_lines(token_lab, "origin-a", f"read {path}")[before:]
    # acc.audit: the origin's authorisation database let the cache's sss identity read it.
    assert any(f"grant sss xcache@{cache} read {path}" in g for g in grants), grants


def sss(keytab: str) -> str:
    return f"XrdSecPROTOCOL=sss XrdSecSSSKT={keytab} {CA_DIR}"


def test_the_origin_lets_the_cache_credential_read_only(token_lab: TokenLab) -> None:
    origin = f"{token_lab.fqdn('origin-a')}:1094"
    as_cache = f"runuser -u xrootd -- env {sss('/etc/xrootd/sss-xcache.keytab')} xrdfs {origin}"
    read = token_lab.ssh("cache-a", f"{as_cache} stat {A_EMBARGOED}", check=False)
    assert read.returncode == 0, read.stderr
    write = token_lab.ssh("cache-a", f"{as_cache} mkdir /escape/astro/embargoed/new", check=False)
    assert write.returncode != 0
    assert "permission denied" in write.stderr.lower(), write.stderr


def test_the_origin_refuses_a_cache_key_from_another_host(token_lab: TokenLab) -> None:
    """sss is bound to the caches' own hosts: a copied key is useless elsewhere."""
    keytab = token_lab.ssh("cache-a", "cat /etc/xrootd/sss-xcache.keytab").stdout
    origin = f"{token_lab.fqdn('origin-a')}:1094"
    try:
        proc = on_host(
            token_lab,
            CLIENT,
            f"umask 077 && cat > /root/ef-stolen.keytab && "
            f"{sss('/root/ef-stolen.keytab')} xrdfs {origin} stat {A_EMBARGOED}",
            keytab,
        )
    finally:
        token_lab.ssh(CLIENT, "rm -f /root/ef-stolen.keytab")
    assert proc.returncode != 0
    # The origin does not even offer sss to this host (sec.protbind), so the client has no way in.
    assert "Auth failed: No protocols left to try" in proc.stderr, proc.stderr


def test_keys_are_owner_only_on_every_data_host_and_on_the_control_machine(
    token_lab: TokenLab,
) -> None:
    for host in DATA_HOSTS:
        keytab = (
            "/etc/xrootd/sss-xcache.keytab"
            if kind(host) == "cache"
            else ("/etc/xrootd/sss-origin.keytab")
        )
        mode = token_lab.ssh(host, f"stat -c '%a %U' {keytab}").stdout.strip()
        assert mode == "600 xrootd", (host, mode)
    keys = Path(token_lab.fed.security.secrets_dir) / token_lab.fed.federation.name / "xrootd"
    files = sorted((keys / "sss").iterdir())
    assert {f.name for f in files} == {
        f"{token_lab.fqdn(h)}.keytab" for h in ("cache-a", "cache-b")
    }
    for f in files:
        assert oct(f.stat().st_mode & 0o777) == "0o600", f
    assert oct((keys / "sss").stat().st_mode & 0o777) == "0o700"
    # The origin holds every cache's key; a cache only its own.
    for origin in ("origin-a", "origin-b"):
        names = token_lab.ssh(origin, "cut -d' ' -f4 /etc/xrootd/sss-origin.keytab").stdout.split()
        assert sorted(names) == sorted(f"n:{token_lab.fqdn(h)}" for h in ("cache-a", "cache-b"))
    for cache in ("cache-a", "cache-b"):
        names = token_lab.ssh(cache, "cut -d' ' -f4 /etc/xrootd/sss-xcache.keytab").stdout.split()
        assert names == [f"n:{token_lab.fqdn(cache)}"]


def test_no_key_appears_in_the_deploy_logs(token_lab: TokenLab) -> None:
    keys = Path(token_lab.fed.security.secrets_dir) / token_lab.fed.federation.name / "xrootd"
    secrets = [f.read_text().split("k:")[1].strip() for f in (keys / "sss").iterdir()]
    logs = Path(token_lab.fed.control.state_dir) / token_lab.fed.federation.name / "logs"
    texts = [p.read_text(errors="replace") for p in logs.glob("*.log")]
    assert texts, f"no deploy log under {logs}"
    for secret in secrets:
        assert len(secret) == 64
        assert not any(secret in t for t in texts)


# --- issuer key rotation ------------------------------------------------------------------------


def keys_tool(lab: TokenLab, *args: str) -> str:
    return lab.ssh(lab.issuer_host, f"escape-fed-issuer-keys {' '.join(args)}").stdout


def kids(lab: TokenLab) -> set[str]:
    out = lab.ssh(lab.issuer_host, f"ls {ISSUER_KEYS}").stdout.split()
    return {name.removesuffix(".jwk") for name in out if name.endswith(".jwk")}


def main_pids(lab: TokenLab) -> dict[str, str]:
    return {
        h: lab.ssh(h, f"systemctl show -P MainPID {SERVICE[kind(h)]}").stdout.strip()
        for h in DATA_HOSTS
    }


def flush(lab: TokenLab, host: str) -> None:
    lab.ssh(host, f"systemctl start {KEYS_UNIT[kind(host)]}.service")


def wait_for(check: Callable[[], bool], seconds: float) -> float:
    """Seconds until CHECK holds (polling); fails after SECONDS."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        time.sleep(3)
    return time.monotonic() - start


def test_a_new_issuer_key_is_trusted_and_a_removed_one_refused_without_a_restart(
    token_lab: TokenLab,
) -> None:
    """Rotation with a second, non-active key (the issuer keeps signing with its active key, so
    other relying parties of the shared lab are not disturbed): tokens signed with it are
    refused while the caches do not know it, accepted after a refresh; once it is removed from
    the issuer, fresh tokens signed with it are refused again after a refresh."""
    pids = main_pids(token_lab)
    before = kids(token_lab)
    keys_tool(token_lab, "add")
    [kid] = kids(token_lab) - before
    key: dict[str, Any] = json.loads(
        token_lab.ssh(token_lab.issuer_host, f"cat {ISSUER_KEYS}/{kid}.jwk").stdout
    )

    def answer(host: str) -> int:
        """HTTP status of a read at HOST with a fresh token signed by the new key."""
        return https_get(token_lab, host, A_EMBARGOED, mint(key, good_claims(token_lab, A)))[0]

    try:
        # Site a: flush_key_cache.yml's refresh, at once.
        for host in ("origin-a", "cache-a"):
            flush(token_lab, host)
            assert answer(host) == 200, f"{host} refuses the new key right after a refresh"
        # Site b: the refresh timer, within its interval.
        for host in ("origin-b", "cache-b"):
            waited = wait_for(partial(lambda h: answer(h) == 200, host), REFRESH_S + 30)
            print(f"{host}: new key trusted after {waited:.0f} s")
    finally:
        keys_tool(token_lab, "remove", kid)
    for host in ("origin-a", "cache-a"):
        flush(token_lab, host)
        assert answer(host) == 403, f"{host} accepts a removed key right after a refresh"
    for host in ("origin-b", "cache-b"):
        waited = wait_for(partial(lambda h: answer(h) == 403, host), REFRESH_S + 30)
        print(f"{host}: removed key refused after {waited:.0f} s")
    assert main_pids(token_lab) == pids  # no XRootD server was restarted
