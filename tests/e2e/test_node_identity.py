"""An execute node's HTCondor identity is that node (issue 11), on the shared global-pool lab.

wn-a1's real token, copied off wn-a1 (a stolen token), authenticates, but the central
manager's collector accepts an ad sent with it only when the ad names wn-a1 (``Machine``) and
site-a (``ESCAPE_SITE``): a startd run with it on another host, or an ad claiming another
site, is refused (COLLECTOR_REQUIREMENTS) and never matched, while the real wn-a1 runs jobs.
The token carries only ADVERTISE_STARTD, ADVERTISE_MASTER and READ: it cannot advertise a schedd
or negotiator, nor administer the central manager. `escape-fed revoke-node` revokes it at the
central manager within seconds; wn-a1 gets a new token and stays, every other node too.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator

import pytest

from escape_fed.model.view import pool_central_manager
from tests.e2e.conftest import TokenLab
from tests.labfed import cli

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

NODE, SITE = "wn-a1", "site-a"
THIEF = "origin-b"  # a lab host of site-b that is no HTCondor host of the model
AP = "ap-a"
# The client side of a thief on THIEF: the stolen token in a directory of its own, IDTOKENS only.
THIEF_ENV = (
    "_CONDOR_SEC_TOKEN_DIRECTORY=/root/stolen _CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY=/root/stolen "
    "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS "
    "_CONDOR_SEC_DEFAULT_AUTHENTICATION_METHODS=IDTOKENS"
)
ROGUE_CONFIG = """\
CONDOR_HOST = {cm}
use ROLE: Execute
TRUST_DOMAIN = {trust}
SEC_DEFAULT_AUTHENTICATION = REQUIRED
SEC_DEFAULT_AUTHENTICATION_METHODS = IDTOKENS
SEC_DEFAULT_ENCRYPTION = REQUIRED
SEC_DEFAULT_INTEGRITY = REQUIRED
SEC_TOKEN_SYSTEM_DIRECTORY = /root/stolen
ALLOW_ADMINISTRATOR = condor@$(TRUST_DOMAIN)
NUM_CPUS = 1
START = True
ESCAPE_SITE = "site-a"
STARTD_ATTRS = $(STARTD_ATTRS) ESCAPE_SITE
"""


def cm_fqdn(lab: TokenLab) -> str:
    cm = pool_central_manager(lab.fed, SITE)
    assert cm is not None
    return cm.fqdn


def cm_name(lab: TokenLab) -> str:
    cm = pool_central_manager(lab.fed, SITE)
    assert cm is not None
    return cm.name


def node_token(lab: TokenLab) -> str:
    """wn-a1's token as it lies on wn-a1 (what a thief with root there would copy)."""
    token = lab.ssh(NODE, f"cat /etc/condor/tokens.d/{cm_fqdn(lab)}").stdout.strip()
    assert token.count(".") == 2
    return token


def claims(token: str) -> dict[str, object]:
    import base64

    part = token.split(".")[1]
    data: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def plant(lab: TokenLab, token: str) -> None:
    """The stolen token on THIEF, in /root/stolen (0600)."""
    lab.ssh(
        THIEF,
        "mkdir -p /root/stolen && chmod 700 /root/stolen && "
        f"printf '%s\\n' {shlex.quote(token)} > /root/stolen/t && chmod 600 /root/stolen/t",
    )


def collector(lab: TokenLab, args: str) -> str:
    """condor_status at the pool's central manager, run there (its own READ)."""
    return lab.ssh(cm_name(lab), f"condor_status {args}").stdout


def submit(lab: TokenLab, requirements: str) -> str:
    """A 1-core /bin/true job at ap-a as its local user, limited by REQUIREMENTS; its cluster."""
    sub = (
        "universe = vanilla\nexecutable = /bin/true\ntransfer_executable = false\n"
        f"requirements = {requirements}\nrequest_cpus = 1\nrequest_memory = 64\nqueue\n"
    )
    out = lab.ssh(
        AP,
        f"printf '%s' {shlex.quote(sub)} | "
        "runuser -u escape -- sh -c 'cd && condor_submit -terse -'",
    ).stdout
    return out.split()[0].split(".")[0]


def job(lab: TokenLab, cluster: str) -> tuple[int, int, str]:
    """(JobStatus, NumJobMatches, RemoteHost) of a job, in the queue or in the history."""
    attrs = "JobStatus NumJobMatches LastRemoteHost"
    for tool in ("condor_q", "condor_history -limit 1"):
        out = lab.ssh(AP, f"{tool} {cluster} -af {attrs}", check=False).stdout.split()
        if out:
            matches = int(out[1]) if out[1].isdigit() else 0
            return int(out[0]), matches, out[2] if len(out) > 2 else ""
    raise AssertionError(f"job {cluster} is neither queued nor in the history")


def violations_from(lab: TokenLab, host: str) -> int:
    """COLLECTOR_REQUIREMENTS refusals the central manager logged for ads from HOST."""
    log = lab.ssh(
        cm_name(lab),
        f"grep -c 'COLLECTOR_REQUIREMENTS VIOLATION.*<{lab.address(host)}:' "
        "/var/log/condor/CollectorLog",
        check=False,
    )
    return int(log.stdout.strip() or 0)


@pytest.fixture
def rogue(token_lab: TokenLab) -> Iterator[str]:
    """A startd on THIEF holding wn-a1's stolen token and claiming site-a; stopped after."""
    lab = token_lab
    trust = lab.ssh(NODE, "condor_config_val TRUST_DOMAIN").stdout.strip()
    plant(lab, node_token(lab))
    config = ROGUE_CONFIG.format(cm=cm_fqdn(lab), trust=trust)
    lab.ssh(
        THIEF,
        f"printf '%s' {shlex.quote(config)} > /etc/condor/config.d/99-rogue.conf && "
        "systemctl restart condor",
    )
    yield lab.fqdn(THIEF)
    lab.ssh(
        THIEF,
        "systemctl stop condor; rm -rf /etc/condor/config.d/99-rogue.conf /root/stolen",
        check=False,
    )


@pytest.mark.destructive(order=6)
def test_a_startd_with_a_stolen_node_token_elsewhere_or_for_another_site_is_never_matched(
    token_lab: TokenLab, rogue: str
) -> None:
    lab = token_lab
    node = lab.fqdn(NODE)
    before = violations_from(lab, THIEF)
    # A second rogue: an ad in wn-a1's name and with its token, but claiming site-b.
    ad = (
        'MyType = "Machine"\nTargetType = "Job"\n'
        f'Name = "rogue@{node}"\nMachine = "{node}"\nESCAPE_SITE = "site-b"\n'
        'Cpus = 1\nMemory = 1024\nDisk = 1000000\nState = "Unclaimed"\nActivity = "Idle"\n'
        'Start = true\nRequirements = true\nRank = 0\nArch = "X86_64"\nOpSys = "LINUX"\n'
        f'MyAddress = "<{lab.address(THIEF)}:9618>"\nStartdIpAddr = "<{lab.address(THIEF)}:9618>"\n'
    )
    advertise = (
        f"printf '%s' {shlex.quote(ad)} > /root/stolen/slot.ad && {THIEF_ENV} "
        f"condor_advertise -pool {cm_fqdn(lab)} UPDATE_STARTD_AD /root/stolen/slot.ad"
    )
    lab.ssh(THIEF, advertise, check=False)
    elsewhere = submit(lab, f'Machine == "{rogue}"')
    other_site = submit(lab, f'Machine == "{node}" && ESCAPE_SITE == "site-b"')
    real = submit(lab, f'Machine == "{node}" && ESCAPE_SITE == "{SITE}"')  # positive control
    started = time.monotonic()
    while True:  # the real wn-a1 runs its job; watch the rogues for at least 45 s
        status, _, host = job(lab, real)
        if status == 4 and time.monotonic() - started > 45:
            break
        assert time.monotonic() - started < 240, f"the real {NODE}'s job did not run: {status}"
        lab.ssh(THIEF, advertise, check=False)  # keeps trying
        time.sleep(5)
    assert host.endswith(f"@{node}"), host
    for cluster in (elsewhere, other_site):
        status, matches, _ = job(lab, cluster)
        assert (status, matches) == (1, 0), (cluster, status, matches)  # idle, never matched
    machines = collector(lab, "-af Machine ESCAPE_SITE").splitlines()
    assert f"{node} {SITE}" in machines  # the real wn-a1 is in the pool
    assert not any(m.startswith(rogue) for m in machines), machines
    assert f"{node} site-b" not in machines, machines
    # The rogues authenticated (the token is real) and were refused for what their ads claim.
    assert violations_from(lab, THIEF) > before
    assert lab.ssh(THIEF, "systemctl is-active condor").stdout.strip() == "active"
    lab.ssh(AP, f"condor_rm {elsewhere} {other_site}", check=False)


def test_a_node_token_cannot_advertise_a_schedd_or_negotiator_nor_administer_the_cm(
    token_lab: TokenLab,
) -> None:
    """From wn-a1 with its own token: every such request is refused; the CM's own root can."""
    lab = token_lab
    cm, node = cm_fqdn(lab), lab.fqdn(NODE)
    ads = {
        "UPDATE_SCHEDD_AD": ("schedd", 'MyType = "Scheduler"\nName = "rogue-schedd@{h}"\n'),
        "UPDATE_NEGOTIATOR_AD": ("negotiator", 'MyType = "Negotiator"\nName = "rogue-neg@{h}"\n'),
    }
    for command, (kind, body) in ads.items():
        text = (
            body.format(h=node) + f'Machine = "{node}"\nMyAddress = "<{lab.address(NODE)}:9618>"\n'
        )
        proc = lab.ssh(
            NODE,
            f"printf '%s' {shlex.quote(text)} > /tmp/rogue.ad && "
            f"condor_advertise -pool {cm} {command} /tmp/rogue.ad",
            check=False,
        )
        assert proc.returncode != 0, (command, proc.stdout, proc.stderr)
        time.sleep(1)
        assert "rogue-" not in collector(lab, f"-{kind} -af Name"), command
    for admin in (
        f"condor_reconfig -pool {cm} -name {cm}",
        f"condor_off -pool {cm} -name {cm} -daemon negotiator",
    ):
        proc = lab.ssh(NODE, admin, check=False)
        assert proc.returncode != 0, (admin, proc.stdout, proc.stderr)
        assert "DENIED" in proc.stdout + proc.stderr or "denied" in proc.stdout + proc.stderr, (
            proc.stdout + proc.stderr
        )
    assert collector(lab, "-negotiator -af Name").strip()  # the negotiator still runs
    # Positive control: the central manager's own administrator (root there) can do both.
    text = f'MyType = "Scheduler"\nName = "control-schedd@{cm}"\nMachine = "{cm}"\n'
    lab.ssh(  # raises unless both succeed
        cm_name(lab),
        f"printf '%s' {shlex.quote(text)} > /tmp/control.ad && "
        f"condor_advertise UPDATE_SCHEDD_AD /tmp/control.ad && condor_reconfig",
    )
    assert "control-schedd" in collector(lab, "-schedd -af Name")
    invalidate = 'MyType = "Query"\nTargetType = "Scheduler"\n' + (
        f'Requirements = Name == "control-schedd@{cm}"\n'
    )
    lab.ssh(
        cm_name(lab),
        f"printf '%s' {shlex.quote(invalidate)} > /tmp/control.ad && "
        "condor_advertise INVALIDATE_SCHEDD_ADS /tmp/control.ad",
    )


@pytest.mark.destructive(order=7)
def test_a_revoked_node_token_is_refused_within_seconds_and_the_node_rejoins(
    token_lab: TokenLab,
) -> None:
    """REFUSED_WITHIN: from `revoke-node` starting to the stolen token's first refusal."""
    refused_within = 30.0
    lab = token_lab
    cm, node = cm_fqdn(lab), lab.fqdn(NODE)
    old = node_token(lab)
    plant(lab, old)
    read = f"{THIEF_ENV} condor_status -pool {cm} -af Machine"
    before = lab.ssh(THIEF, read, check=False)
    assert node in before.stdout, before.stderr[-2000:]  # positive control: the token is valid
    others = {lab.fqdn(h) for h in ("wn-a2", "wn-b1")}

    start = time.monotonic()
    proc = cli("revoke-node", "-f", str(lab.file), NODE, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["reissued"] is True and old not in proc.stdout + proc.stderr
    while True:
        after = lab.ssh(THIEF, read, check=False)
        if node not in after.stdout:
            break
        assert time.monotonic() - start < refused_within, "the revoked token still reads"
        time.sleep(1)
    took = time.monotonic() - start
    print(f"\nrevoked token refused {took:.1f} s after revoke-node started")
    assert "Failed to authenticate" in after.stderr or after.returncode != 0, after.stderr[-2000:]

    # wn-a1 holds a new token of the same identity, issued after the revocation.
    new = node_token(lab)
    assert new != old
    assert claims(new)["sub"] == claims(old)["sub"]
    assert int(str(claims(new)["iat"])) > result["revoked_issued_up_to"]
    assert "exp" in claims(new)
    # Every other node stays in the pool; wn-a1 starts afresh with its new token and rejoins:
    # its startd's ad from after the restart reaches the collector.
    restarted = int(lab.ssh(NODE, "date +%s").stdout)
    lab.ssh(NODE, "systemctl restart condor")
    deadline = time.monotonic() + 120
    while True:
        ads = [line.split() for line in collector(lab, "-af Machine DaemonStartTime").splitlines()]
        assert others <= {a[0] for a in ads}, ads
        if any(a[0] == node and int(a[1]) >= restarted for a in ads if len(a) == 2):
            break
        assert time.monotonic() < deadline, f"{NODE} did not rejoin with its new token: {ads}"
        time.sleep(3)
    cluster = submit(lab, f'Machine == "{node}"')
    deadline = time.monotonic() + 180
    while job(lab, cluster)[0] != 4:
        assert time.monotonic() < deadline, f"{NODE} did not run a job with its new token"
        time.sleep(5)
    # The old token stays refused (the revocation is the central manager's own configuration).
    assert node not in lab.ssh(THIEF, read, check=False).stdout
    lab.ssh(THIEF, "rm -rf /root/stolen", check=False)
