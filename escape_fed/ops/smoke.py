"""smoke: one short job pinned to every site, submitted as a user on an access point.

Each job is submitted over SSH with ``condor_submit`` on the access point (the way users submit),
waits with ``condor_wait`` and is read back from ``condor_history``: where it ran, its exit
code, and the submit -> start latency HTCondor recorded.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from escape_fed.backends import remote
from escape_fed.errors import BadInput
from escape_fed.model.schema import Federation, Role
from escape_fed.model.view import HostView, hosts, hosts_with
from escape_fed.ops.submit import check_user, choose_access_point

SUBMIT = """\
universe = vanilla
executable = /bin/sh
arguments = "-c 'hostname -f; echo ESCAPE_CACHE=$ESCAPE_CACHE'"
requirements = (TARGET.ESCAPE_SITE == "{site}")
request_cpus = 1
request_memory = 64
request_disk = 10240
output = {name}.out
error = {name}.err
log = {name}.log
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
+EscapeFedSmoke = true
queue
"""


@dataclass
class SmokeResult:
    site: str
    access_point: str
    job: str | None
    ok: bool
    ran_on: str | None = None
    exit_code: int | None = None
    submit_to_start_s: int | None = None
    submit_to_done_s: int | None = None
    cache: str | None = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def submit_description(site: str, name: str) -> str:
    return SUBMIT.format(site=site, name=name)


def _script(site: str, name: str, timeout: int) -> str:
    sub = submit_description(site, name)
    return "\n".join(
        [
            "set -e",
            "mkdir -p ~/escape-fed-smoke && cd ~/escape-fed-smoke",
            f"rm -f {name}.out {name}.err {name}.log",
            f"cat > {name}.sub <<'EOF'\n{sub}EOF",
            f"job=$(condor_submit -terse {name}.sub | cut -d' ' -f1)",
            'echo "JOB=$job"',
            f'condor_wait -wait {timeout} {name}.log "$job" >/dev/null 2>&1 || '
            "{ echo 'STATE=timeout'; condor_rm \"$job\" >/dev/null 2>&1; "
            'condor_q "$job" -af:j HoldReason LastRejMatchReason 2>/dev/null; exit 0; }',
            'condor_history "$job" -limit 1 -af ExitCode QDate JobCurrentStartDate '
            'CompletionDate | sed "s/^/HIST=/"',
            f"sed 's/^/OUT=/' {name}.out",
        ]
    )


def _run_one(fed: Federation, site: str, ap: HostView, user: str, timeout: int) -> SmokeResult:
    name = f"smoke-{site}"
    cmd = remote.as_user(user, _script(site, name, timeout))
    proc = remote.run(fed, ap, cmd, timeout=timeout + 60)
    lines = proc.stdout.splitlines()
    job = next((ln[4:] for ln in lines if ln.startswith("JOB=")), None)
    result = SmokeResult(site=site, access_point=ap.name, job=job, ok=False)
    if proc.returncode != 0 or job is None:
        result.message = (proc.stderr.strip() or proc.stdout.strip())[-400:] or "submit failed"
        return result
    if "STATE=timeout" in lines:
        rest = " ".join(ln for ln in lines if not ln.startswith(("JOB=", "STATE=")))
        result.message = f"not done within {timeout} s (removed) {rest}".strip()
        return result
    hist = next((ln[5:].split() for ln in lines if ln.startswith("HIST=")), [])
    outs = [ln[4:] for ln in lines if ln.startswith("OUT=")]
    if len(hist) >= 4 and all(h.isdigit() for h in hist[:4]):
        code, qdate, start, done = (int(h) for h in hist[:4])
        result.exit_code = code
        result.submit_to_start_s = start - qdate
        result.submit_to_done_s = done - qdate
    result.ran_on = outs[0] if outs else None
    result.cache = next((o.split("=", 1)[1] for o in outs if o.startswith("ESCAPE_CACHE=")), None)
    site_hosts = {h.fqdn for h in hosts(fed) if h.site == site}
    if result.exit_code != 0:
        result.message = f"exit code {result.exit_code}"
    elif result.ran_on not in site_hosts:
        result.message = f"ran on {result.ran_on!r}, not on a host of site {site}"
    else:
        result.ok = True
        result.message = "ok"
    return result


def smoke(
    fed: Federation,
    user: str = "escape",
    access_point: str | None = None,
    sites: list[str] | None = None,
    timeout: int = 180,
) -> list[SmokeResult]:
    """Submit one job per site with execute nodes (in parallel); one result per site."""
    targets = [s for s in fed.sites if hosts_with(fed, Role.EXECUTE, s)]
    if sites:
        unknown = [s for s in sites if s not in targets]
        if unknown:
            raise BadInput(
                f"--site {unknown[0]}: not a site with execute nodes: expected one "
                f"of {', '.join(targets)}"
            )
        targets = [s for s in targets if s in sites]
    check_user(user)
    plan = [(s, choose_access_point(fed, access_point, [s])) for s in targets]
    with ThreadPoolExecutor(max_workers=max(1, len(plan))) as pool:
        futures = [pool.submit(_run_one, fed, s, ap, user, timeout) for s, ap in plan]
        return [f.result() for f in futures]
