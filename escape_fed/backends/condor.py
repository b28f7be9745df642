"""Query HTCondor collectors from the control machine with HTCondor's Python bindings.

The control machine authenticates with IDTOKENS from the federation's secrets directory
(``<secrets_dir>/<federation>/tokens.d``, READ-only tokens the central managers issued to it),
with encryption and integrity required, exactly like a pool member.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from escape_fed.errors import OperationFailed
from escape_fed.ops import status_core

# What status reads (status_core, shared with the gateway's service), plus what facilities and
# submit read: where a node is, its cache, its dynamic slots' cores.
STARTD_ATTRS = [*status_core.STARTD_ATTRS, "ESCAPE_RSES", "ESCAPE_CACHE", "ChildCpus"]
SCHEDD_ATTRS = [*status_core.SCHEDD_ATTRS, "ESCAPE_SITE"]
COLLECTOR_ATTRS = ["Name", "Machine", "CondorVersion"]


@dataclass(frozen=True)
class PoolAds:
    collector: str
    startds: list[dict[str, Any]]
    schedds: list[dict[str, Any]]
    collectors: list[dict[str, Any]]


def _client_config(token_dir: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix="escape-fed-condor-", suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write(
            "SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS\n"
            "SEC_CLIENT_AUTHENTICATION = REQUIRED\n"
            "SEC_CLIENT_ENCRYPTION = REQUIRED\n"
            "SEC_CLIENT_INTEGRITY = REQUIRED\n"
            f"SEC_TOKEN_DIRECTORY = {token_dir}\n"
            "TOOL_TIMEOUT_MULTIPLIER = 1\n"
        )
    return Path(name)


def query_pool(address: str, token_dir: Path, timeout: int = 20) -> PoolAds:
    """Startd, schedd and collector ads of the collector at ``address`` (HOST[:PORT])."""
    if not token_dir.is_dir() or not any(token_dir.iterdir()):
        raise OperationFailed(
            f"no token to read the pool with in {token_dir}: deploy the "
            "federation first (the central managers issue them)"
        )
    config = _client_config(token_dir)
    old = os.environ.get("CONDOR_CONFIG")
    os.environ["CONDOR_CONFIG"] = str(config)
    try:
        import htcondor2 as htcondor  # type: ignore[import-untyped]  # no type information

        htcondor.reload_config()
        htcondor.param["QUERY_TIMEOUT"] = str(timeout)
        collector = htcondor.Collector(address if ":" in address else f"{address}:9618")
        try:
            startds = collector.query(htcondor.AdTypes.Startd, projection=STARTD_ATTRS)
            schedds = collector.query(htcondor.AdTypes.Schedd, projection=SCHEDD_ATTRS)
            collectors = collector.query(htcondor.AdTypes.Collector, projection=COLLECTOR_ATTRS)
        except htcondor.HTCondorException as exc:
            raise OperationFailed(f"collector {address}: query failed: {exc}") from None
    finally:
        if old is None:
            os.environ.pop("CONDOR_CONFIG", None)
        else:
            os.environ["CONDOR_CONFIG"] = old
        config.unlink(missing_ok=True)

    def plain(ads: Any) -> list[dict[str, Any]]:
        return [
            {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in ad.items()}
            for ad in ads
        ]

    return PoolAds(address, plain(startds), plain(schedds), plain(collectors))


def submit_description(commands: Mapping[str, str]) -> str:
    """The submit description of COMMANDS (in order, then ``queue``), written by the bindings'
    ``htcondor.Submit``. The values must already be checked to be single lines: HTCondor's own
    parser would read a newline in a value as the start of a new command."""
    with warnings.catch_warnings():
        # Only text is built here: without a condor_config the bindings warn and use none.
        warnings.simplefilter("ignore", UserWarning)
        import htcondor2 as htcondor

    return str(htcondor.Submit(dict(commands)))


# --- users' jobs with IAM tokens ----------------------------------------------------------------

JOB_ATTRS = [
    "ClusterId",
    "ProcId",
    "Owner",
    "User",
    "AcctGroup",
    "AccountingGroup",
    "JobStatus",
    "ExitCode",
    "HoldReason",
    "HoldReasonCode",
    "RemoteHost",
    "LastRemoteHost",
    "QDate",
    "JobStartDate",
    "CompletionDate",
    "AuthTokenIssuer",
    "AuthTokenSubject",
    "AuthTokenGroups",
    "AuthTokenScopes",
]
JOB_STATUS = {1: "idle", 2: "running", 3: "removed", 4: "completed", 5: "held", 6: "transferring"}
SPOOLING_HOLD = 16  # HoldReasonCode of a job waiting for its input files to be spooled


@dataclass(frozen=True)
class TokenSubmission:
    """A job to submit to one schedd as the bearer of a token, from this (client) machine.

    The schedd is found in ``collector``'s ads with the control machine's READ token
    (``control_tokens``, IDTOKENS); every schedd command then authenticates with SCITOKENS only
    (``token_file``), in TLS checked against ``ca_file``: the job belongs to whoever the access
    point maps the token to, and a token it refuses submits nothing.
    """

    collector: str  # HOST:PORT
    schedd: str  # the schedd's Name (its host's fqdn)
    description: str  # submit description, one `queue`
    token_file: Path | None  # None: offer no token at all (a client without one)
    ca_file: Path
    control_tokens: Path
    initialdir: Path  # the job's input and output files on this machine
    wait_s: float | None = None  # wait this long for the job to finish; None: return at once
    poll_s: float = 2.0


def _write_config(path: Path, lines: dict[str, str]) -> None:
    path.write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))


def _plain(ad: Any) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in ad.items()}


def _condor_error(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _submit_with_token(sub: TokenSubmission) -> dict[str, Any]:
    """Runs in a fresh process (see :func:`submit_with_token`): returns the job's ad and output."""
    import time

    work = Path(tempfile.mkdtemp(prefix="escape-fed-submit-"))
    try:
        config = work / "condor_config"
        _write_config(
            config,
            {
                # Locating the schedd: the control machine's READ token for the collector.
                "SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS",
                "SEC_TOKEN_DIRECTORY": str(sub.control_tokens),
                "SEC_CLIENT_AUTHENTICATION": "REQUIRED",
                "SEC_CLIENT_ENCRYPTION": "REQUIRED",
                "SEC_CLIENT_INTEGRITY": "REQUIRED",
                "TOOL_TIMEOUT_MULTIPLIER": "1",
                # Never trust a server on first use, never write ~/.condor.
                "BOOTSTRAP_SSL_SERVER_TRUST": "false",
                "SEC_KNOWN_HOSTS": str(work / "known_hosts"),
            },
        )
        os.environ["CONDOR_CONFIG"] = str(config)
        import htcondor2 as htcondor

        htcondor.reload_config()
        try:
            location = htcondor.Collector(sub.collector).locate(
                htcondor.DaemonType.Schedd, sub.schedd
            )
        except (htcondor.HTCondorException, ValueError) as exc:
            raise OperationFailed(
                f"collector {sub.collector}: no schedd {sub.schedd}: {_condor_error(exc)}"
            ) from None
        # From here on: the user's token and nothing else (no bearer token found in the
        # environment, no IDTOKENS).
        for var in ("BEARER_TOKEN", "BEARER_TOKEN_FILE", "XDG_RUNTIME_DIR"):
            os.environ.pop(var, None)
        for key, value in {
            "SEC_CLIENT_AUTHENTICATION_METHODS": "SCITOKENS",
            "AUTH_SSL_CLIENT_CAFILE": str(sub.ca_file),
            "AUTH_SSL_CLIENT_USE_DEFAULT_CAS": "false",
            "SEC_TOKEN_DIRECTORY": str(work / "no-idtokens"),
        }.items():
            htcondor.param[key] = value
        if sub.token_file is not None:
            htcondor.param["SCITOKENS_FILE"] = str(sub.token_file)
        schedd = htcondor.Schedd(location)
        description = htcondor.Submit(sub.description)
        description["initialdir"] = str(sub.initialdir)
        if len(description.getQArgs()) < 2:
            # One job. (Schedd.submit of htcondor 24.0 indexes queue arguments of fewer than two
            # characters out of range: `queue` and `queue 1` fail, `queue 01` is the same job.)
            description.setQArgs("01")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # 24.0's submit() prints the file
                result = schedd.submit(description, spool=True)
            schedd.spool(result)
        except htcondor.HTCondorException as exc:
            raise OperationFailed(
                f"access point {sub.schedd} refused the job: {_condor_error(exc)}"
            ) from None
        cluster = result.cluster()
        constraint = f"ClusterId == {cluster}"

        def ad() -> dict[str, Any]:
            ads = schedd.query(constraint, projection=JOB_ATTRS)
            if not ads:  # gone from the queue: its history has it
                ads = list(schedd.history(constraint, projection=JOB_ATTRS, match=1))
            return _plain(ads[0]) if ads else {}

        job = ad()
        out: dict[str, Any] = {"job": f"{cluster}.0", "ad": job, "finished": False}
        if sub.wait_s is None:
            return out
        deadline = time.monotonic() + sub.wait_s
        while True:
            status = job.get("JobStatus")
            held = status == 5 and job.get("HoldReasonCode") != SPOOLING_HOLD
            if status in (3, 4) or held or time.monotonic() >= deadline:
                break
            time.sleep(sub.poll_s)
            job = ad()
        out["ad"] = job
        out["finished"] = job.get("JobStatus") == 4
        if out["finished"]:
            schedd.retrieve(constraint)  # output files into initialdir
            # Retrieved: the schedd may forget it now (spooled jobs otherwise stay for days).
            schedd.edit(constraint, "LeaveJobInQueue", "false")
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def submit_with_token(sub: TokenSubmission) -> dict[str, Any]:
    """Submit ``sub`` to its schedd as the token's bearer; with ``wait_s``, wait for the end.

    HTCondor keeps authenticated sessions for the life of a process: each submission runs in a
    new process, so that no session (and so no identity) outlives the token it came from.
    Returns ``{"job": "CLUSTER.PROC", "ad": {...}, "finished": bool}``.
    """
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_submit_with_token, sub).result()
