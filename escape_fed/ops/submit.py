"""submit: build the HTCondor job a scientist means, and submit it at an access point.

The job is sent where its dataset is (requirements on the execute nodes' ``ESCAPE_SITE``), with
the capacity asked (or a clear error naming what the federation offers), reads its input
through the local cache (``$ESCAPE_CACHE`` + ``$ESCAPE_DATASET_PATH`` in its environment), and
repeats on a cron schedule with HTCondor's cron submit commands when ``--every`` is given.

Two ways in: as a local user of the access point (over SSH, ``condor_submit`` there), or with
an IAM token: over the network from this machine to the access point's schedd with HTCondor's
Python bindings, authenticated by SCITOKENS; the access point maps the token to its group's
account, and the job is that account's.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
import stat
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from escape_fed.backends import condor, remote
from escape_fed.errors import BadInput, OperationFailed
from escape_fed.model.schema import Federation, Role
from escape_fed.model.view import HostView, hosts_with, pool_central_manager
from escape_fed.ops.deploy import secrets_dir
from escape_fed.ops.tokens import exchange_for_job, job_scopes

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
    transfer_executable: bool = True  # False: the executable is the execute node's own program
    input_files: list[str] = field(default_factory=list)  # sent with the job
    environment: dict[str, str] = field(default_factory=dict)  # more variables for the job


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

    Raises :class:`BadInput` with what the federation offers when nothing fits, or naming a
    value that is not one line.
    """
    check_request(req)
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


_LINE_BREAKING = {"\n": "a newline", "\r": "a carriage return", "\0": "a NUL"}


def check_line(what: str, value: str) -> str:
    """VALUE, if it can be one value of a submit description, else :class:`BadInput` naming WHAT.

    HTCondor reads a submit description line by line: a newline or carriage return in a value
    would start a command of its own (``queue 500``), and a NUL ends the text early."""
    for char, name in _LINE_BREAKING.items():
        if char in value:
            raise BadInput(
                f"{what} {value!r}: contains {name}; a job's values must be single lines"
            )
    return value


def check_request(req: JobRequest) -> None:
    """Every user value of REQ that goes into a submit description is one line, or
    :class:`BadInput` naming the first that is not."""
    check_line("COMMAND", req.executable)
    for i, arg in enumerate(req.arguments, start=1):
        check_line(f"argument {i} of COMMAND", arg)
    for what, value in (("--dataset", req.dataset), ("--site", req.site), ("--every", req.every)):
        if value is not None:
            check_line(what, value)
    for path in req.input_files:
        check_line("input file", path)
    for key, value in req.environment.items():
        check_line("environment variable", key)
        check_line(f"environment variable {key}", value)


_LONE_DOLLAR = re.compile(r"(?<!\$)\$(?!\$)")


def _literal(value: str) -> str:
    """VALUE with its lone ``$`` kept literal (HTCondor would expand ``$(NAME)`` when it reads
    the description). ``$$(ATTR)`` stays HTCondor's match-time substitution."""
    return _LONE_DOLLAR.sub("$(DOLLAR)", value)


def _quote_args(args: list[str]) -> str:
    """HTCondor's new-syntax arguments: double-quoted, args separated by spaces, ' quotes."""
    out = []
    for a in args:
        if _SAFE_ARG.match(a):
            out.append(a)
        else:
            out.append("'" + _literal(a).replace("'", "''").replace('"', '""') + "'")
    return '"' + " ".join(out) + '"'


def _description(fed: Federation, req: JobRequest, sites: list[str]) -> str:
    """The submit description: typed values, checked to be single lines, written by the HTCondor
    bindings' ``htcondor.Submit``."""
    site_expr = " || ".join(f'TARGET.ESCAPE_SITE == "{s}"' for s in sites)
    commands: dict[str, str] = {
        "universe": "vanilla",
        "executable": req.executable,
    }
    if not req.transfer_executable:
        commands["transfer_executable"] = "false"
    if req.arguments:
        commands["arguments"] = _quote_args(req.arguments)
    commands["requirements"] = f"({site_expr})"
    commands["request_cpus"] = str(req.cpus)
    commands["request_memory"] = str(req.memory_mb)
    if req.gpus:
        commands["request_gpus"] = str(req.gpus)
    env = []
    if req.dataset is not None:
        ds = fed.datasets[req.dataset]
        env += [f"ESCAPE_DATASET={req.dataset}", f"ESCAPE_DATASET_PATH={ds.path}"]
        commands["+EscapeDataset"] = f'"{req.dataset}"'
    env += [f"{k}={v}" for k, v in req.environment.items()]
    if env:
        commands["environment"] = f'"{" ".join(env)}"'
    if req.input_files:
        commands["transfer_input_files"] = ", ".join(req.input_files)
    commands |= {
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "output": "escape-$(Cluster).$(Process).out",
        "error": "escape-$(Cluster).$(Process).err",
        "log": "escape-$(Cluster).log",
    }
    if req.every is not None:
        commands |= parse_cron(req.every)
        commands["cron_window"] = "60"
        # Keep the job queued between runs; stop after max_runs if asked.
        if req.max_runs:
            commands["on_exit_remove"] = f"(JobRunCount ?: 0) >= {req.max_runs}"
        else:
            commands["on_exit_remove"] = "false"
    return condor.submit_description(commands)


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


# --- with an IAM token --------------------------------------------------------------------------

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
JOB_TOKEN_NAME = "escape-job.token"  # the job's own token, BEARER_TOKEN_FILE in its scratch dir
_B64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
MAX_TOKEN_BYTES = 16384


def _b64url_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def check_token_file(path: Path) -> Path:
    """A readable file holding one JWT, readable by nobody but its owner's user and group, or
    :class:`BadInput`. Only the structure is checked here (three base64url parts, JSON header
    with ``alg``, JSON object payload): whether the token is valid is the access point's call.
    The token itself never appears in a message."""
    where = f"--token {path}"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BadInput(f"{where}: no such file") from None
    except OSError as exc:
        raise BadInput(f"{where}: cannot read it: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{where}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        raise BadInput(
            f"{where}: a token is a secret, but every user may read or change this file "
            f"(mode {mode:04o}): chmod 600 {path}"
        )
    if st.st_size > MAX_TOKEN_BYTES:
        raise BadInput(f"{where}: not a token ({st.st_size} bytes, more than {MAX_TOKEN_BYTES})")
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise BadInput(f"{where}: not a token (not ASCII text)") from None
    parts = text.split(".")
    bad = BadInput(f"{where}: not a JWT (expected one line 'header.payload.signature')")
    if len(parts) != 3 or not all(_B64URL.match(p) for p in parts):
        raise bad
    try:
        header, payload = _b64url_json(parts[0]), _b64url_json(parts[1])
    except (ValueError, binascii.Error):
        raise bad from None
    if not isinstance(header, dict) or "alg" not in header or not isinstance(payload, dict):
        raise bad
    return path


@dataclass
class TokenJob:
    """A job submitted with a token, and (with ``--wait``) how it ended."""

    job: str
    access_point: str
    sites: list[str]
    owner: str | None
    accounting_group: str | None
    status: str
    finished: bool = False
    ok: bool = False
    exit_code: int | None = None
    ran_on: str | None = None
    submit_to_start_s: int | None = None
    submit_to_done_s: int | None = None
    hold_reason: str | None = None
    outdir: str = ""
    job_token_scope: str = ""  # what the job's own token may do (never compute.*)
    stdout: str | None = None
    stderr: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ca_bundle(fed: Federation, work: Path) -> Path:
    """The CAs a client checks access points' certificates against: the deployment CA and
    ``security.trusted_cas`` (sites' own CAs)."""
    ca = secrets_dir(fed) / "ca" / "ca.crt"
    if not ca.is_file():
        raise OperationFailed(f"no deployment CA at {ca}: deploy the federation first")
    if not fed.security.trusted_cas:
        return ca
    bundle = work / "ca-bundle.crt"
    bundle.write_text("".join(Path(p).read_text() for p in (str(ca), *fed.security.trusted_cas)))
    return bundle


def _read_output(path: Path, limit: int = 65536) -> str | None:
    try:
        return path.read_text(errors="replace")[:limit]
    except OSError:
        return None


def _token_request(req: JobRequest, token: Path) -> JobRequest:
    """The job as it leaves this machine with a token. An absolute executable is the execute
    node's own program; a relative one is a file here, sent with the job. TOKEN, the job's own
    read-only token (:func:`escape_fed.ops.tokens.exchange_for_job`), goes with the job too
    (``BEARER_TOKEN_FILE``, relative to the job's scratch directory, where HTCondor starts it)
    so that it reads data through the caches as the same group, and nothing more."""
    executable, transfer = req.executable, False
    if not executable.startswith("/"):
        local = Path(executable).resolve()
        if not local.is_file():
            raise BadInput(
                f"{executable}: no such file here (give an absolute path to run a program of "
                "the execute nodes)"
            )
        executable, transfer = str(local), True
    if not _PLAIN_NAME.fullmatch(token.name):
        raise BadInput(f"--token {token}: expected a plain file name (letters, digits, ._-)")
    return replace(
        req,
        executable=executable,
        transfer_executable=transfer,
        input_files=[*req.input_files, str(token.resolve())],
        environment={**req.environment, "BEARER_TOKEN_FILE": token.name},
    )


def submit_with_token(
    fed: Federation,
    req: JobRequest,
    token: Path,
    access_point: str | None = None,
    outdir: Path = Path("escape-fed-jobs"),
    wait_s: float | None = None,
) -> TokenJob:
    """Submit as the bearer of TOKEN, over the network, to the access point's schedd. The job
    does not get TOKEN: it gets its own, exchanged for it at the issuer (RFC 8693), that reads
    the job's dataset (or what TOKEN reads, without a dataset) and may not submit.

    The job's files (output, error, log, a relative executable) live in ``outdir`` here; with
    ``wait_s`` the job is followed until it ends (or the time is up) and its output fetched.
    """
    check_token_file(token)
    check_request(req)
    check_line("--outdir", str(outdir.resolve()))
    plan_job(fed, req)  # bad input is refused before anything goes to the issuer
    with tempfile.TemporaryDirectory(prefix="escape-fed-job-") as work:
        user_token = token.read_text(encoding="ascii").strip()
        try:
            user_scopes = str(_b64url_json(user_token.split(".")[1]).get("scope") or "").split()
        except (ValueError, binascii.Error, AttributeError):
            user_scopes = []
        job_token = Path(work) / JOB_TOKEN_NAME
        scope = exchange_for_job(
            fed, user_token, job_scopes(fed, req.dataset, user_scopes), job_token
        )
        result = _submit_token_job(
            fed, _token_request(req, job_token), token, access_point, outdir, wait_s
        )
    result.job_token_scope = scope
    return result


def _submit_token_job(
    fed: Federation,
    req: JobRequest,
    token: Path,
    access_point: str | None,
    outdir: Path,
    wait_s: float | None,
) -> TokenJob:
    plan = plan_job(fed, req)
    ap = choose_access_point(fed, access_point, plan.sites)
    cm = pool_central_manager(fed, ap.site)
    if cm is None:
        raise OperationFailed(f"site {ap.site} has no central manager to find {ap.name} with")
    control_tokens = secrets_dir(fed) / "tokens.d"
    if not control_tokens.is_dir() or not any(control_tokens.iterdir()):
        raise OperationFailed(
            f"no token to find the access point with in {control_tokens}: deploy first"
        )
    outdir = outdir.resolve()
    outdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="escape-fed-ca-") as work:
        got = condor.submit_with_token(
            condor.TokenSubmission(
                collector=f"{cm.address or cm.fqdn}:9618",
                schedd=ap.fqdn,
                description=plan.description,
                token_file=token.resolve(),
                ca_file=_ca_bundle(fed, Path(work)),
                control_tokens=control_tokens,
                initialdir=outdir,
                wait_s=wait_s,
            )
        )
    ad: dict[str, Any] = got["ad"]
    code = ad.get("JobStatus")
    result = TokenJob(
        job=got["job"],
        access_point=ap.name,
        sites=plan.sites,
        owner=ad.get("Owner"),
        accounting_group=ad.get("AcctGroup"),
        status=condor.JOB_STATUS.get(code, str(code)) if isinstance(code, int) else "unknown",
        finished=bool(got["finished"]),
        outdir=str(outdir),
    )
    if ad.get("JobStatus") == 5:
        result.hold_reason = ad.get("HoldReason")
    if result.finished:
        cluster = result.job.split(".")[0]
        result.exit_code = ad.get("ExitCode")
        ran = str(ad.get("LastRemoteHost") or ad.get("RemoteHost") or "")
        result.ran_on = ran.split("@")[-1] or None
        q, start, done = ad.get("QDate"), ad.get("JobStartDate"), ad.get("CompletionDate")
        if isinstance(q, int) and isinstance(start, int):
            result.submit_to_start_s = start - q
        if isinstance(q, int) and isinstance(done, int) and done > 0:
            result.submit_to_done_s = done - q
        result.stdout = _read_output(outdir / f"escape-{cluster}.0.out")
        result.stderr = _read_output(outdir / f"escape-{cluster}.0.err")
        result.ok = result.exit_code == 0
    return result
