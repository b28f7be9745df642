"""submit: build the HTCondor job a scientist means, and submit it at an access point.

The job is sent where its dataset is (requirements on the execute nodes' ``ESCAPE_SITE``), with
the capacity asked (or a clear error naming what the federation offers), reads its input
through the local cache (``$ESCAPE_CACHE`` + ``$ESCAPE_DATASET_PATH`` in its environment), and
repeats on a cron schedule with HTCondor's cron submit commands when ``--every`` is given.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from escape_fed.backends import remote
from escape_fed.errors import BadInput, OperationFailed
from escape_fed.model.schema import Federation, Role
from escape_fed.model.view import HostView, hosts_with

CRON_FIELDS = ("cron_minute", "cron_hour", "cron_day_of_month", "cron_month", "cron_day_of_week")
_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_SAFE_ARG = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def dataset_sites(fed: Federation, dataset: str) -> list[str]:
    """Sites whose storage holds DATASET: the one lookup a Rucio query can replace later."""
    ds = fed.datasets.get(dataset)
    if ds is None:
        known = ", ".join(fed.datasets) or "none defined"
        raise BadInput(f"--dataset {dataset}: unknown dataset: expected one of {known}")
    return [
        name
        for name, site in fed.sites.items()
        if site.storage is not None and site.storage.rse in ds.rses
    ]


@dataclass
class JobRequest:
    """What the scientist asks for."""

    executable: str
    arguments: list[str] = field(default_factory=list)
    dataset: str | None = None
    cpus: int = 1
    memory_mb: int = 512
    gpus: int = 0
    site: str | None = None
    every: str | None = None  # five-field cron expression
    max_runs: int | None = None  # periodic jobs: stop after this many runs


@dataclass
class JobPlan:
    """Where it may run and the submit description that says so."""

    sites: list[str]
    description: str


def _largest(fed: Federation, site: str) -> tuple[int, int, int]:
    """The largest single execute node of SITE: a job must fit on one node."""
    best = (0, 0, 0)
    for h in hosts_with(fed, Role.EXECUTE, site):
        if h.capacity is not None:
            cap = (h.capacity.cpus, h.capacity.memory_mb, h.capacity.gpus)
            best = max(best, cap)
    return best


def _fits(fed: Federation, site: str, req: JobRequest) -> bool:
    for h in hosts_with(fed, Role.EXECUTE, site):
        c = h.capacity
        if c and c.cpus >= req.cpus and c.memory_mb >= req.memory_mb and c.gpus >= req.gpus:
            return True
    return False


def parse_cron(expr: str) -> dict[str, str]:
    """Five cron fields -> HTCondor's cron_* submit commands."""
    parts = expr.split()
    if len(parts) != 5 or not all(_CRON_FIELD.match(p) for p in parts):
        raise BadInput(
            f"--every {expr!r}: expected a five-field cron expression "
            "'MINUTE HOUR DAY MONTH WEEKDAY', e.g. '*/5 * * * *'"
        )
    return dict(zip(CRON_FIELDS, parts, strict=True))


def plan_job(fed: Federation, req: JobRequest) -> JobPlan:
    """Choose the sites a job may run at and write its submit description.

    Raises :class:`BadInput` with what the federation offers when nothing fits.
    """
    if req.cpus < 1 or req.memory_mb < 1 or req.gpus < 0:
        raise BadInput("--cpus and --memory must be positive and --gpus not negative")
    candidates = [s for s in fed.sites if hosts_with(fed, Role.EXECUTE, s)]
    if req.site is not None:
        if req.site not in candidates:
            raise BadInput(
                f"--site {req.site}: not a site with execute nodes: expected one of "
                f"{', '.join(candidates)}"
            )
        candidates = [req.site]
    if req.dataset is not None:
        holding = dataset_sites(fed, req.dataset)
        candidates = [s for s in candidates if s in holding]
        if not candidates:
            where = ", ".join(holding) or "no site"
            raise BadInput(
                f"--dataset {req.dataset}: held at {where}"
                + (f", not at --site {req.site}" if req.site else ", where no execute nodes run")
            )
    fitting = [s for s in candidates if _fits(fed, s, req)]
    if not fitting:
        offers = "; ".join(
            f"{s}: {c} cpus, {m} MB, {g} gpus" for s in candidates for c, m, g in [_largest(fed, s)]
        )
        raise BadInput(
            f"no facility offers {req.cpus} cpus, {req.memory_mb} MB and {req.gpus} "
            f"GPUs on one node{f' for dataset {req.dataset}' if req.dataset else ''}"
            f": largest nodes are {offers} (see 'escape-fed facilities')"
        )
    return JobPlan(fitting, _description(fed, req, fitting))


def _quote_args(args: list[str]) -> str:
    """HTCondor's new-syntax arguments: double-quoted, args separated by spaces, ' quotes."""
    out = []
    for a in args:
        if _SAFE_ARG.match(a):
            out.append(a)
        else:
            out.append("'" + a.replace("'", "''").replace('"', '""') + "'")
    return '"' + " ".join(out) + '"'


def _description(fed: Federation, req: JobRequest, sites: list[str]) -> str:
    site_expr = " || ".join(f'TARGET.ESCAPE_SITE == "{s}"' for s in sites)
    lines = [
        "# Generated by escape-fed submit",
        "universe = vanilla",
        f"executable = {req.executable}",
    ]
    if req.arguments:
        lines.append(f"arguments = {_quote_args(req.arguments)}")
    lines += [
        f"requirements = ({site_expr})",
        f"request_cpus = {req.cpus}",
        f"request_memory = {req.memory_mb}",
    ]
    if req.gpus:
        lines.append(f"request_gpus = {req.gpus}")
    env = []
    if req.dataset is not None:
        ds = fed.datasets[req.dataset]
        env += [f"ESCAPE_DATASET={req.dataset}", f"ESCAPE_DATASET_PATH={ds.path}"]
        lines.append(f'+EscapeDataset = "{req.dataset}"')
    if env:
        lines.append(f'environment = "{" ".join(env)}"')
    lines += [
        "should_transfer_files = YES",
        "when_to_transfer_output = ON_EXIT",
        "output = escape-$(Cluster).$(Process).out",
        "error = escape-$(Cluster).$(Process).err",
        "log = escape-$(Cluster).log",
    ]
    if req.every is not None:
        lines += [f"{k} = {v}" for k, v in parse_cron(req.every).items()]
        lines.append("cron_window = 60")
        # Keep the job queued between runs; stop after max_runs if asked.
        if req.max_runs:
            lines.append(f"on_exit_remove = (JobRunCount ?: 0) >= {req.max_runs}")
        else:
            lines.append("on_exit_remove = false")
    lines.append("queue")
    return "\n".join(lines) + "\n"


def choose_access_point(fed: Federation, chosen: str | None, sites: list[str]) -> HostView:
    """The access point named by --access-point (name or FQDN), else the first one at one of
    SITES, else the federation's first. Raises :class:`BadInput` for a name that is none."""
    aps = hosts_with(fed, Role.ACCESS_POINT)
    if chosen is not None:
        for ap in aps:
            if chosen in (ap.name, ap.fqdn):
                return ap
        raise BadInput(
            f"--access-point {chosen}: not an access point: expected one of "
            f"{', '.join(a.name for a in aps)}"
        )
    near = [a for a in aps if a.site in sites]
    return (near or list(aps))[0]


def check_user(user: str) -> None:
    """A local account name that is safe on a remote command line, or :class:`BadInput`."""
    if not _SAFE_ARG.fullmatch(user):
        raise BadInput(f"--user {user!r}: expected a plain account name")


def submit(
    fed: Federation, req: JobRequest, user: str, access_point: str | None = None
) -> tuple[str, JobPlan]:
    """Submit at an access point as USER; returns the job id (CLUSTER.PROC) and the plan."""
    plan = plan_job(fed, req)
    ap = choose_access_point(fed, access_point, plan.sites)
    check_user(user)
    script = (
        f"mkdir -p ~/escape-fed-jobs && cd ~/escape-fed-jobs && "
        f"printf '%s' {shlex.quote(plan.description)} > job.sub && "
        "condor_submit -terse job.sub"
    )
    proc = remote.run(fed, ap, remote.as_user(user, script))
    if proc.returncode != 0:
        raise OperationFailed(
            f"condor_submit at {ap.name} failed: {(proc.stderr or proc.stdout).strip()[-500:]}"
        )
    job = proc.stdout.strip().split(" ")[0]
    return job, plan
