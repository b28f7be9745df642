"""The data roles (xrootd_origin, xcache, tls_ca) on real lab hosts: converge, idempotence, verify.

The shared deployed lab (tests/conftest.py): its first deploy is the converge checked here,
and playbooks/data.yml runs again on it with escape-fed's Ansible environment; checks go over
`lab ssh` (host keys checked) and, for HTTPS, from the control machine with the deployment
CA. Clients read with a real token from the issuer. The token matrix itself is
tests/e2e/test_tokens_data.py.
"""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from tests.conftest import DeployedLab
from tests.roles.xrootd_lab import (
    ASTRO,
    CACHE_ROOT,
    CLIENT_ENV,
    COLLISIONS,
    EMBARGOED_FILE,
    HEP,
    ORIGIN_ROOT,
    SKY,
    TOKEN_FILE,
    DataLab,
    PlaybookRun,
    on_shared_lab,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

ORIGINS = ("origin-a", "origin-b")
CACHES = ("cache-a", "cache-b")
HTTPS_PORT = 8443


@pytest.fixture(scope="module")
def lab(shared_lab: DeployedLab) -> DataLab:
    return on_shared_lab(shared_lab)


def _started(lab: DataLab) -> dict[str, str]:
    unit = {h: "xrootd@origin" for h in ORIGINS} | {h: "xrootd@xcache" for h in CACHES}
    return {
        h: lab.out(h, f"systemctl show -P ActiveEnterTimestampMonotonic {u}")
        for h, u in unit.items()
    }


@pytest.fixture(scope="module")
def converged(lab: DataLab, shared_lab: DeployedLab) -> PlaybookRun:
    """The shared lab's first deploy (site.yml, data plays included), read as a converge."""
    syntax = lab.playbook("--syntax-check")
    assert syntax.rc == 0, syntax.output
    first = shared_lab.first_deploy()
    recap = shared_lab.first_recap()
    return PlaybookRun(0 if first["ok"] else 1, float(first.get("seconds", 0)), "", recap)


@pytest.fixture(scope="module")
def second_run(
    lab: DataLab, converged: PlaybookRun
) -> tuple[PlaybookRun, dict[str, str], dict[str, str]]:
    before = _started(lab)
    run = lab.playbook()
    return run, before, _started(lab)


def test_converge_changes_every_data_host(converged: PlaybookRun) -> None:
    for host in (*ORIGINS, *CACHES):
        assert converged.recap[host]["failed"] == 0
        assert converged.recap[host]["changed"] > 0, host


def test_second_run_changes_nothing_and_restarts_nothing(
    second_run: tuple[PlaybookRun, dict[str, str], dict[str, str]],
) -> None:
    run, before, after = second_run
    assert run.rc == 0, run.output[-3000:]
    assert run.changed() == {}, run.output[-3000:]
    assert after == before  # no service was restarted


def test_services_are_active_and_enabled(lab: DataLab, converged: PlaybookRun) -> None:
    for host in ORIGINS:
        assert (
            lab.out(host, "systemctl is-active xrootd@origin; systemctl is-enabled xrootd@origin")
            == "active\nenabled"
        )
    for host in CACHES:
        assert (
            lab.out(host, "systemctl is-active xrootd@xcache; systemctl is-enabled xrootd@xcache")
            == "active\nenabled"
        )


def test_root_and_https_ports_listen_and_the_lab_address_is_the_only_outside_one(
    lab: DataLab, converged: PlaybookRun
) -> None:
    for host in (*ORIGINS, *CACHES):
        listening = lab.out(host, "ss -Htln").split()
        assert {"*:1094", f"*:{HTTPS_PORT}"} <= set(listening), listening
        # XRootD binds the wildcard (it has no bind-address directive); the host's only address
        # besides loopback is its lab address, so that is where it is reachable.
        addrs = lab.out(host, "ip -4 -o addr show scope global").split()
        assert [a for a in addrs if "/" in a] == [f"{lab.address(host)}/24"]


# Known: request signing (sec.level) is off; requests are protected by TLS instead.
KNOWN_WARNINGS = ("Security level is set to none; request protection disabled",)


def _unexpected_warnings(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if ("Config warning" in line or "Config error" in line or "config error" in line)
        and not any(known in line for known in KNOWN_WARNINGS)
    ]


def test_configs_load_as_written(lab: DataLab, converged: PlaybookRun) -> None:
    for host in ORIGINS:
        log = lab.out(host, "cat /var/log/xrootd/origin/xrootd.log")
        assert _unexpected_warnings(log) == []
        assert f"origin@{lab.fqdn(host)}:{HTTPS_PORT} initialization completed" in log
        assert "XrdAccSciTokens: Initialized SciTokens-based authorization" in log
        assert "Parsing configuration file: /etc/xrootd/scitokens-origin.cfg" in log
    for host in CACHES:
        log = lab.out(host, "cat /var/log/xrootd/xcache/xrootd.log")
        assert _unexpected_warnings(log) == []
        assert "initialization completed" in log
        assert "XrdAccSciTokens: Initialized SciTokens-based authorization" in log
        assert "Parsing configuration file: /etc/xrootd/scitokens-xcache.cfg" in log
        # The model's cache: ram_gb 1, disk_gb 2 at watermarks 0.90 / 0.95.
        effective = log.rsplit("pfc configuration:", 1)[1]
        assert "pfc.ram 1g" in effective
        assert "files 1932525568 2039480320 2147483648" in effective


def test_health_check_answers_from_another_host(lab: DataLab, converged: PlaybookRun) -> None:
    for host in (*ORIGINS, *CACHES):
        # root:// requires TLS: the client checks the server with the CA of the system store
        version = lab.out(
            "ap-a", f"X509_CERT_DIR=/etc/ssl/certs xrdfs {lab.fqdn(host)}:1094 query config version"
        )
        assert version.startswith("v5."), version


def test_each_origin_holds_its_own_synthetic_dataset(lab: DataLab, converged: PlaybookRun) -> None:
    lab.give_token("origin-a", HEP)  # a dataset is readable with any group's token
    lab.give_token("origin-b", ASTRO)
    listing = lab.out("origin-a", f"{CLIENT_ENV} xrdfs origin-a.site-a.escape.lab:1094 ls -l {SKY}")
    assert "104857600 " in listing and f"{SKY}/bench-100mib.dat" in listing
    assert listing.count("4194304 ") == 4
    assert lab.ssh("origin-a", f"test -e {ORIGIN_ROOT}{COLLISIONS}").returncode == 1
    listing = lab.out(
        "origin-b", f"{CLIENT_ENV} xrdfs origin-b.site-b.escape.lab:1094 ls {COLLISIONS}"
    )
    assert f"{COLLISIONS}/file-001.dat" in listing
    sums = {
        h: lab.out(h, f"sha256sum {ORIGIN_ROOT}{d}/file-001.dat").split()[0]
        for h, d in (("origin-a", SKY), ("origin-b", COLLISIONS))
    }
    assert sums["origin-a"] != sums["origin-b"]


def test_each_origin_holds_every_groups_embargoed_files(
    lab: DataLab, converged: PlaybookRun
) -> None:
    for host in ORIGINS:
        for group in (ASTRO, HEP):
            path = f"{ORIGIN_ROOT}{group}/embargoed/{EMBARGOED_FILE}"
            assert lab.out(host, f"stat -c '%s %a' {path}") == "1048576 644"
    sums = {
        h: lab.out(h, f"sha256sum {ORIGIN_ROOT}{ASTRO}/embargoed/{EMBARGOED_FILE}") for h in ORIGINS
    }
    assert sums["origin-a"].split()[0] != sums["origin-b"].split()[0]


def test_origin_exports_read_only(lab: DataLab, converged: PlaybookRun) -> None:
    assert "all.export /escape r/o" in lab.out("origin-a", "cat /etc/xrootd/xrootd-origin.cfg")
    lab.give_token("ap-a", ASTRO)  # storage.read only: no token grants writing
    proc = lab.ssh(
        "ap-a",
        f"echo x > /tmp/x && {CLIENT_ENV} xrdcp /tmp/x "
        f"root://origin-a.site-a.escape.lab:1094/{SKY}/new.dat",
    )
    assert proc.returncode != 0
    assert "permission denied" in proc.stderr, proc.stderr
    assert lab.ssh("origin-a", f"test -e {ORIGIN_ROOT}{SKY}/new.dat").returncode == 1


def test_no_token_no_read_at_every_origin_and_cache(lab: DataLab, converged: PlaybookRun) -> None:
    for host, path in (
        ("origin-a", SKY),
        ("cache-a", SKY),
        ("origin-b", COLLISIONS),
        ("cache-b", COLLISIONS),
    ):
        proc = lab.ssh(
            "ap-a",
            f"rm -f {TOKEN_FILE}; X509_CERT_DIR=/etc/ssl/certs xrdcp -f -s "
            f"root://{lab.fqdn(host)}:1094/{path}/file-001.dat /dev/null",
        )
        assert proc.returncode != 0
        assert "permission denied" in proc.stderr, (host, proc.stderr)


def test_a_file_read_through_the_cache_is_the_origins_and_lands_on_the_cache_disk(
    lab: DataLab, converged: PlaybookRun
) -> None:
    path = f"{SKY}/file-001.dat"
    want = lab.out("origin-a", f"sha256sum {ORIGIN_ROOT}{path}").split()[0]
    lab.give_token("wn-a1", ASTRO)
    got = lab.out(
        "wn-a1", f"{CLIENT_ENV} xrdcp -s root://cache-a.site-a.escape.lab:1094/{path} - | sha256sum"
    )
    assert got.split()[0] == want
    files = lab.out("cache-a", f"ls {CACHE_ROOT}{SKY}").split()
    assert {"file-001.dat", "file-001.dat.cinfo"} <= set(files)


def test_https_read_through_the_cache_with_the_deployment_ca(
    lab: DataLab, converged: PlaybookRun
) -> None:
    path = f"{SKY}/file-002.dat"
    want = lab.out("origin-a", f"sha256sum {ORIGIN_ROOT}{path}").split()[0]
    ca = lab.secrets_dir / "ca" / "ca.crt"
    fqdn = lab.fqdn("cache-a")
    token = lab.token(ASTRO)
    proc = subprocess.run(
        [
            "curl",
            "-sSf",
            "-H",
            f"Authorization: Bearer {token}",
            "--cacert",
            str(ca),
            "--resolve",
            f"{fqdn}:{HTTPS_PORT}:{lab.address('cache-a')}",
            f"https://{fqdn}:{HTTPS_PORT}{path}",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(proc.stdout).hexdigest() == want
    # Without the CA the certificate is not trusted.
    bare = subprocess.run(
        [
            "curl",
            "-sS",
            "--resolve",
            f"{fqdn}:{HTTPS_PORT}:{lab.address('cache-a')}",
            f"https://{fqdn}:{HTTPS_PORT}{path}",
            "-o",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bare.returncode == 60, bare.stderr  # CURLE_PEER_FAILED_VERIFICATION


def test_execute_nodes_trust_the_deployment_ca(lab: DataLab, converged: PlaybookRun) -> None:
    lab.give_token("wn-b1", HEP)
    script = (
        "import sys, urllib.request as u\n"
        "token = open(sys.argv[2]).read().strip()\n"
        "req = u.Request(sys.argv[1], headers={'Authorization': 'Bearer ' + token})\n"
        "print(len(u.urlopen(req).read()))"
    )
    url = f"https://cache-b.site-b.escape.lab:{HTTPS_PORT}{COLLISIONS}/file-001.dat"
    assert lab.python("wn-b1", script, url, TOKEN_FILE) == "4194304"


def test_secrets_are_owner_only_and_the_ca_key_stays_on_the_control_machine(
    lab: DataLab, converged: PlaybookRun
) -> None:
    ca = lab.secrets_dir / "ca"
    assert oct(ca.stat().st_mode & 0o777) == "0o700"
    assert oct((ca / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct((ca / "issued").stat().st_mode & 0o777) == "0o700"
    for host in (*ORIGINS, *CACHES):
        mode = lab.out(host, "stat -c '%a %U' /etc/escape-fed/tls/xrootd.key")
        assert mode == "600 xrootd"
        assert lab.ssh(
            host, "grep -rl 'PRIVATE KEY' /etc/escape-fed /usr/local/share/ca-certificates"
        ).stdout.split() == ["/etc/escape-fed/tls/xrootd.key"]
    # The host key never left the host: the control machine holds only requests and certificates.
    issued = sorted(p.suffix for p in (ca / "issued").iterdir())
    assert set(issued) == {".crt", ".csr", ".ext"}
    assert not any("PRIVATE KEY" in p.read_text() for p in (ca / "issued").iterdir())


def test_preflight_fails_before_any_change_naming_the_variable(
    lab: DataLab, second_run: tuple[PlaybookRun, dict[str, str], dict[str, str]]
) -> None:
    cases = {
        '{"xcache_ram_gb": 0.5}': "xcache_ram_gb",
        '{"xcache_low_watermark": 0.96}': "low_watermark",
        '{"xcache_path": "var/cache"}': "xcache_path",
        '{"xrootd_origin_paths": ["escape"]}': "xrootd_origin_paths",
        '{"xcache_token_key_refresh_s": 5}': "xcache_token_key_refresh_s",
        '{"xrootd_origin_token_issuer": "http://gateway"}': "xrootd_origin_token_issuer",
    }
    for extra, name in cases.items():
        run = lab.playbook("--limit", "cache-a,origin-a", "--extra-vars", extra)
        assert run.rc != 0
        assert name in run.output, run.output[-2000:]
        assert run.changed() == {}, (extra, run.changed())
