"""The federation for real, in both modes: demo/deploy, pool, cross-site jobs, trust, redeploy.

Each mode runs on its shared deployed lab (tests/conftest.py): global-pool brought up by
`escape-fed demo` (the README's main command), flock by `escape-fed deploy`. Everything goes
through the CLI a user runs. Tests that change the lab for the ones after them are marked
``destructive`` and run last on it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from escape_fed.lab import lab_leftovers
from escape_fed.model import load_federation
from escape_fed.model.view import hosts, pool_central_manager
from tests.conftest import DeployedLab
from tests.labfed import cli

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1500)]

LABS = {"global-pool": "shared_lab", "flock": "flock_lab"}


@pytest.fixture(scope="module", params=list(LABS))
def fed(request: pytest.FixtureRequest) -> Path:
    """The federation file of the shared deployed lab of one mode."""
    lab: DeployedLab = request.getfixturevalue(LABS[request.param])
    return lab.file


def status(path: Path, wait: int = 90) -> dict[str, Any]:
    proc = cli("status", str(path), "--wait", str(wait), "--output", "json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_demo_ran_the_main_job_on_every_host(shared_lab: DeployedLab) -> None:
    first = shared_lab.first
    assert shared_lab.home is None or list(shared_lab.home.iterdir()) == [], (
        "an Ansible run left files in $HOME"
    )
    assert first["ok"] and first["deploy"]["changed"] > 0
    names = {h.name for h in hosts(shared_lab.fed)}
    assert first["reachable"] == dict.fromkeys(sorted(names), True)
    assert {row["host"] for row in first["lab"]} == names
    assert all(row["state"] == "running" for row in first["lab"])
    assert {s["site"]: s["ok"] for s in first["smoke"]} == {"site-a": True, "site-b": True}
    assert first["status"]["pool"]["nodes"] == 3


def test_the_first_flock_deploy_configured_every_host(flock_lab: DeployedLab) -> None:
    first = flock_lab.first
    assert first["ok"] and first["changed"] > 0
    assert set(first["hosts"]) == {h.name for h in hosts(flock_lab.fed)}
    assert all(s["changed"] > 0 for s in first["hosts"].values()), first["hosts"]


def test_every_host_answers_with_its_own_name_and_address(fed: Path) -> None:
    for h in hosts(load_federation(fed)):
        # ssh runs the command as one command line
        proc = cli(
            "lab", "ssh", "-f", str(fed), h.name, "--", "hostname -f; ip -4 -o addr show eth0"
        )
        assert proc.returncode == 0, proc.stderr
        fqdn, addr = proc.stdout.splitlines()[:2]
        assert fqdn == h.fqdn
        assert f" {h.address}/24 " in addr


def test_hosts_resolve_each_other_by_name_across_sites(fed: Path) -> None:
    wn_b1 = next(h for h in hosts(load_federation(fed)) if h.name == "wn-b1")
    proc = cli("lab", "ssh", "-f", str(fed), "ap-a", "--", "ping -c1 -W2 wn-b1.site-b.escape.lab")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"({wn_b1.address})" in proc.stdout


def test_lab_up_again_is_a_no_op(fed: Path) -> None:
    before = {
        r["host"]: r["pid"] for r in json.loads(cli("lab", "status", str(fed), "-o", "json").stdout)
    }
    assert {r for r in before} == {h.name for h in hosts(load_federation(fed))}
    proc = cli("lab", "up", str(fed), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert {r["host"]: r["pid"] for r in json.loads(proc.stdout)} == before


def test_status_counts_every_sites_slots(fed: Path) -> None:
    data = status(fed)
    a, b = data["sites"]["site-a"], data["sites"]["site-b"]
    assert a["missing"] == [] and b["missing"] == []
    assert (a["nodes"], a["cpus"], a["memory_mb"], a["gpus"]) == (2, 3, 3072, 0)
    assert (b["nodes"], b["cpus"], b["memory_mb"], b["gpus"]) == (1, 2, 2048, 0)
    assert a["slots"] >= 2 and b["slots"] >= 1
    assert data["pool"]["nodes"] == 3
    assert data["pool"]["schedds"] == 2
    for site, cache in (("site-a", "cache-a"), ("site-b", "cache-b")):
        health = data["sites"][site]["cache"]
        assert health["host"] == cache and health["ok"], health  # the cache answers root://


def test_a_job_from_site_a_runs_at_site_b_when_it_asks_for_it(fed: Path) -> None:
    proc = cli("smoke", str(fed), "--access-point", "ap-a", "--site", "site-b", "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [result] = json.loads(proc.stdout)
    assert result["access_point"] == "ap-a"
    assert result["ran_on"] == "wn-b1.site-b.escape.lab"
    assert result["exit_code"] == 0
    assert result["cache"] == "root://cache-b.site-b.escape.lab:1094"  # the job knows its cache


def test_smoke_passes_at_every_site(fed: Path) -> None:
    proc = cli("smoke", str(fed), "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout)
    assert {r["site"] for r in results} == {"site-a", "site-b"}
    for r in results:
        assert r["ok"] and r["ran_on"].endswith(f".{r['site']}.escape.lab")


def test_a_second_deploy_changes_nothing(flock_lab: DeployedLab) -> None:
    # Global-pool: the same check is tests/install's deploy --converge by the installed package
    # on the shared lab (one full re-run per lab: they are the suite's most expensive steps).
    fed = flock_lab.file
    proc = cli("deploy", str(fed), "--converge", "--output", "json")  # every role, for real
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(proc.stdout)
    assert not again["skipped"]
    assert again["changed"] == 0, [h for h, s in again["hosts"].items() if s["changed"]]
    plan = json.loads(cli("plan", str(fed), "-o", "json").stdout)
    assert plan["counts"]["create"] == plan["counts"]["change"] == 0


def test_an_unchanged_deploy_checks_health_and_repairs_a_stopped_service(
    shared_lab: DeployedLab,
) -> None:
    # The health path (playbooks/health.yml) is the same in both modes: once is enough.
    fed = shared_lab.file
    quick = json.loads(cli("deploy", str(fed), "-o", "json").stdout)
    assert quick["ok"] and quick["skipped"] and quick["changed"] == 0
    assert set(quick["hosts"]) == {h.name for h in hosts(load_federation(fed))}  # all checked
    stop = cli("lab", "ssh", "-f", str(fed), "wn-a1", "--", "systemctl stop condor")
    assert stop.returncode == 0, stop.stderr
    proc = cli("deploy", str(fed), "-o", "json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    repaired = json.loads(proc.stdout)
    assert not repaired["skipped"] and repaired["hosts"]["wn-a1"]["changed"] >= 1
    assert status(fed)["sites"]["site-a"]["missing"] == []  # wn-a1 is back in the pool


def test_a_job_asking_for_gpus_is_refused_with_what_the_sites_offer(fed: Path) -> None:
    proc = cli("submit", str(fed), "--gpus", "1", "--", "/bin/true")
    assert proc.returncode == 2
    assert "no facility offers 1 cpus, 512 MB and 1 GPUs" in proc.stderr
    assert proc.stdout == ""  # nothing was submitted


def _ap(path: Path, user_cmd: str) -> str:
    proc = cli("lab", "ssh", "-f", str(path), "ap-a", "--", f"runuser -u escape -- {user_cmd}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_dataset_job_runs_where_the_data_is_and_reads_through_that_sites_cache(
    fed: Path, tmp_path: Path
) -> None:
    # collisions-2026 is held at site-b only; submit it at site-a's access point, as a scientist
    # of /escape/hep with an IAM token (caches serve token holders only; the job carries it).
    token = tmp_path / "hep.tok"
    got = cli("token", str(token), "-f", str(fed), "--group", "/escape/hep")
    assert got.returncode == 0, got.stderr
    read = (
        'hostname -f; echo "$ESCAPE_CACHE"; '
        'xrdcp -s -f "$ESCAPE_CACHE/$ESCAPE_DATASET_PATH/file-002.dat" - | md5sum'
    )
    proc = cli(
        "submit",
        str(fed),
        "--token",
        str(token),
        "--outdir",
        str(tmp_path / "jobs"),
        "--wait",
        "--timeout",
        "300",
        "--output",
        "json",
        "--access-point",
        "ap-a",
        "--dataset",
        "collisions-2026",
        "--",
        "/bin/sh",
        "-c",
        read,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["owner"] == "hep", result
    out = (result["stdout"] or "").splitlines()
    assert out[0] == "wn-b1.site-b.escape.lab"  # ran at the site holding the dataset
    assert out[1] == "root://cache-b.site-b.escape.lab:1094"  # ... with that site's cache
    origin = cli(
        "lab",
        "ssh",
        "-f",
        str(fed),
        "origin-b",
        "--",
        "md5sum /srv/xrootd/escape/hep/collisions-2026/file-002.dat",
    )
    assert out[2].split()[0] == origin.stdout.split()[0]  # the origin's bytes, through the cache
    cached = cli(
        "lab",
        "ssh",
        "-f",
        str(fed),
        "cache-b",
        "--",
        "find / -xdev -path '*collisions-2026/file-002.dat*' -newer /etc/hostname "
        "-not -path '/proc/*' 2>/dev/null",
    )
    assert "file-002.dat" in cached.stdout, "the read did not go through cache-b's disk"


def test_a_periodic_job_runs_at_least_twice(shared_lab: DeployedLab) -> None:
    # cron scheduling is the access point's, the same in both modes: once is enough
    fed = shared_lab.file
    proc = cli(
        "submit",
        str(fed),
        "--access-point",
        "ap-a",
        "--every",
        "* * * * *",
        "--max-runs",
        "2",
        "--",
        "/bin/sh",
        "-c",
        "date +%s",
    )
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    assert job.endswith(".0")
    deadline = time.monotonic() + 200  # two minute boundaries, and the schedd's updates
    while True:
        hist = _ap(fed, f"condor_history {job} -limit 1 -af JobStatus NumJobCompletions").split()
        if hist:
            break
        assert time.monotonic() < deadline, _ap(fed, f"condor_q {job} -af JobStatus JobRunCount")
        time.sleep(10)
    status_code, completions = (int(x) for x in hist[:2])
    assert status_code == 4 and completions == 2  # completed, after exactly two runs
    log = _ap(
        fed, f"sh -c 'grep -c \"^005 \\|^004 \" ~/escape-fed-jobs/escape-{job.split('.')[0]}.log'"
    )
    assert int(log.strip()) == 2  # two terminations (the first requeued, the second final)


ROGUE_CONFIG = """\
CONDOR_HOST = {cm}
use ROLE: Execute
TRUST_DOMAIN = {trust}
SEC_DEFAULT_AUTHENTICATION = REQUIRED
SEC_DEFAULT_AUTHENTICATION_METHODS = IDTOKENS
SEC_DEFAULT_ENCRYPTION = REQUIRED
SEC_DEFAULT_INTEGRITY = REQUIRED
ALLOW_ADMINISTRATOR = condor@$(TRUST_DOMAIN)
NUM_CPUS = 1
ESCAPE_SITE = "site-a"
STARTD_ATTRS = $(STARTD_ATTRS) ESCAPE_SITE
"""


def _rogue(fed: Path, host: str, token: str) -> str:
    """Make lab host HOST (not in the pool) an execute node holding TOKEN; start it.

    It impersonates wn-a1: the identity of a real execute node of site-a.
    """
    model = load_federation(fed)
    cm = pool_central_manager(model, "site-a")
    assert cm is not None
    trust = cli("lab", "ssh", "-f", str(fed), "wn-a1", "--", "condor_config_val TRUST_DOMAIN")
    assert trust.returncode == 0 and trust.stdout.strip(), trust.stderr
    domain = trust.stdout.strip()  # the pool's trust domain (one per pool in flock mode)
    # Token identities are <fqdn>@<the federation's trust domain> in both modes.
    identity = f"wn-a1.site-a.escape.lab@{model.federation.trust_domain}"
    if token == "forged":
        # Its own signing key, named like the pool's (same kid), signing the real identity.
        install = (
            "condor_store_cred add -c -p rogue-$RANDOM$RANDOM -f /etc/condor/passwords.d/POOL"
            f" >/dev/null && condor_token_create -identity {identity} -key POOL"
            " -authz ADVERTISE_STARTD -authz ADVERTISE_MASTER -authz READ"
            " > /etc/condor/tokens.d/rogue && rm /etc/condor/passwords.d/POOL"
        )
    elif token == "stolen":
        # wn-a1's own token, copied off wn-a1: real, issued by the pool for wn-a1.
        stolen = cli(
            "lab", "ssh", "-f", str(fed), "wn-a1", "--", f"cat /etc/condor/tokens.d/{cm.fqdn}"
        )
        assert stolen.returncode == 0 and stolen.stdout.count(".") == 2, stolen.stderr
        install = f"printf '%s\\n' '{stolen.stdout.strip()}' > /etc/condor/tokens.d/cm"
    else:
        install = "true"
    config = ROGUE_CONFIG.format(cm=cm.fqdn, trust=domain)
    script = "\n".join(
        [
            "set -e",
            "mkdir -p /etc/condor/passwords.d /etc/condor/tokens.d",
            "chmod 700 /etc/condor/passwords.d /etc/condor/tokens.d",
            "rm -f /etc/condor/tokens.d/* /etc/condor/passwords.d/*",
            f"printf '%s' '{config}' > /etc/condor/config.d/99-rogue.conf",
            install,
            "chmod 600 /etc/condor/tokens.d/* 2>/dev/null || true",
            "systemctl restart condor",
        ]
    )
    proc = cli("lab", "ssh", "-f", str(fed), host, "--", script)
    assert proc.returncode == 0, proc.stderr
    return next(h.fqdn for h in hosts(model) if h.name == host)


def _machines(fed: Path) -> set[str]:
    data = status(fed, wait=0)
    return {m for s in data["sites"].values() for m in s.get("machines", [])}


@pytest.mark.destructive(order=2)
@pytest.mark.parametrize(("host", "token"), [("origin-a", "forged"), ("origin-b", "missing")])
def test_a_host_with_a_forged_or_missing_token_cannot_join(
    fed: Path, host: str, token: str
) -> None:
    fqdn = _rogue(fed, host, token)
    active = cli("lab", "ssh", "-f", str(fed), host, "--", "systemctl is-active condor")
    assert active.stdout.strip() == "active"  # it runs and keeps trying to advertise
    assert _machines(fed), "the pool's own execute nodes must be visible"
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        assert fqdn not in _machines(fed), f"{host} joined the pool with a {token} token"
        time.sleep(5)
    if token == "forged":  # with no token at all, staying out is the whole check
        assert_refused_for_its_signature(fed, host)


def assert_refused_for_its_signature(fed: Path, host: str) -> None:
    """It was kept out for the right reason: its pool's collector refused its authentication."""
    model = load_federation(fed)
    cm = pool_central_manager(model, "site-a")
    address = next(h.address for h in hosts(model) if h.name == host)
    assert cm is not None and address
    log = cli(
        "lab",
        "ssh",
        "-f",
        str(fed),
        cm.name,
        "--",
        f"grep -F 'authentication of {address} failed' /var/log/condor/CollectorLog",
    )
    assert "Failed to authenticate using IDTOKENS" in log.stdout, log.stdout + log.stderr


@pytest.mark.destructive(order=2)
def test_a_rogue_with_a_real_node_token_is_refused_for_the_host_it_runs_on(fed: Path) -> None:
    """wn-a1's real token on origin-b authenticates, but its ads name origin-b, not wn-a1.

    The pool's collector accepts an ad sent with a node's identity only when the ad names that
    node and its site (COLLECTOR_REQUIREMENTS): the rogue stays out, refused for its ads (its
    authentication succeeded), while the real wn-a1 (the positive control) stays in.
    """
    model = load_federation(fed)
    cm = pool_central_manager(model, "site-a")
    assert cm is not None
    wn = next(h.fqdn for h in hosts(model) if h.name == "wn-a1")
    fqdn = _rogue(fed, "origin-b", "stolen")
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            machines = _machines(fed)
            assert wn in machines, "the real wn-a1 must stay in the pool"
            assert fqdn not in machines, "origin-b joined the pool with wn-a1's token"
            time.sleep(5)
        address = next(h.address for h in hosts(model) if h.name == "origin-b")
        log = cli(
            "lab",
            "ssh",
            "-f",
            str(fed),
            cm.name,
            "--",
            f"grep -c 'COLLECTOR_REQUIREMENTS VIOLATION.*<{address}:' /var/log/condor/CollectorLog",
        )
        assert int(log.stdout.strip() or 0) > 0, log.stdout + log.stderr
    finally:  # withdraw it: stop its daemons so the pool is as deployed
        cli(
            "lab",
            "ssh",
            "-f",
            str(fed),
            "origin-b",
            "--",
            "systemctl stop condor; rm -f /etc/condor/config.d/99-rogue.conf"
            " /etc/condor/tokens.d/*",
        )


@pytest.mark.destructive(order=9)
def test_down_twice_leaves_nothing(fed: Path) -> None:
    """Last: the lab of this mode goes down, twice, and nothing of it is left."""
    model = load_federation(fed)
    assert cli("lab", "down", str(fed)).returncode == 0
    assert cli("lab", "down", str(fed)).returncode == 0
    left = lab_leftovers(model.lab.prefix, Path(model.lab.state_dir))
    assert all(not v for v in left.values()), left
    status = cli("lab", "status", str(fed), "-o", "json")
    assert status.returncode == 0
    assert all(r["state"] != "running" for r in json.loads(status.stdout))
