"""deploy: hosts first (the lab; clouds later), then the roles, then record what was applied.

Preflight happens before anything changes: the site filter, backends that cannot be deployed
yet, the playbook. A failed run records nothing, so ``plan`` keeps showing what is left to do.

Safety (docs/hardening-deploy-and-data.md):

- one deploy at a time per federation state directory: ``deploy.lock`` (``flock``); a second
  deploy exits 2 naming the holder and changes nothing;
- the applied-fingerprint marker is removed before a run that may change things and written
  only after it succeeded; ``deploy.running`` marks a run under way, so a deploy killed midway
  is followed by a full run that also restarts every daemon (its notified handlers were lost);
- a plain deploy of an unchanged federation first checks the control machine: the secrets the
  hosts rely on must still be there (else it stops, saying which) and no certificate may be
  within its renewal window (else every role runs, renewing them).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from escape_fed import collection
from escape_fed.backends.ansible import (
    PLAYBOOKS,
    HostSummary,
    PlaybookResult,
    Progress,
    run_playbook,
)
from escape_fed.errors import BadInput, NotBuiltYet, OperationFailed
from escape_fed.lab import runtime
from escape_fed.lab.plan import lab_spec
from escape_fed.model.schema import CLOUD_BACKENDS, Backend, Federation, Role
from escape_fed.model.view import group_name, hosts, hosts_with
from escape_fed.ops import drift
from escape_fed.ops.plan import desired, load_snapshot, write_snapshot
from escape_fed.render.inventory import inventory_files, write_inventory

PLAYBOOK = "site.yml"
HEALTH_PLAYBOOK = "health.yml"
# A certificate with fewer days left than this is renewed by the next deploy (the tls_ca role's
# tls_ca_renew_days): a plain deploy then runs every role instead of only the health check.
RENEW_DAYS = 30


@dataclass
class DeployResult:
    playbook: PlaybookResult
    inventory: Path
    snapshot: Path | None  # None: nothing recorded (check mode or failure)
    check: bool
    skipped: bool = False  # roles not run: nothing changed since the last deploy, all healthy
    verified: drift.Verification | None = None  # --full: the hosts checked against the record


def merged(*runs: PlaybookResult) -> PlaybookResult:
    """Several playbook runs as one: recaps added host by host, times summed."""
    out = PlaybookResult(returncode=0, seconds=0.0, log=runs[-1].log)
    for run in runs:
        out.returncode = out.returncode or run.returncode
        out.seconds += run.seconds
        out.errors += run.errors
        for host, summary in run.hosts.items():
            total = out.hosts.setdefault(host, HostSummary())
            for key, value in summary.__dict__.items():
                setattr(total, key, getattr(total, key) + value)
    return out


def fingerprint(fed: Federation, source: str) -> str:
    """Hash of everything that feeds the roles: the rendered inventory, roles/, playbooks/.

    Read from the packaged collection and ansible.cfg; names are relative (``roles/...``), so a
    checkout and an installed package of the same tree give the same fingerprint."""
    digest = hashlib.sha256()
    for rel, text in sorted(inventory_files(fed, source).items()):
        digest.update(f"inventory/{rel}\0{text}\0".encode())
    tops = {
        "roles": collection.roles_dir(),
        "playbooks": collection.playbooks_dir(),
        "ansible.cfg": collection.ansible_cfg(),
    }
    for top, base in tops.items():
        files = sorted(_walk(base)) if base.is_dir() else [(Path(), base)]
        for inner, path in files:
            if "molecule" in inner.parts or "__pycache__" in inner.parts:
                continue
            digest.update(f"{Path(top, inner) if inner.parts else top}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _walk(base: Path) -> list[tuple[Path, Path]]:
    """(path relative to ``base``, path) of every file under ``base``, following links."""
    out = []
    for root, _dirs, names in os.walk(base, followlinks=True):
        for name in names:
            path = Path(root, name)
            out.append((path.relative_to(base), path))
    return out


def _fingerprint_path(fed: Federation) -> Path:
    return state_dir(fed) / "applied.fingerprint"


def _applied_fingerprint(fed: Federation) -> str | None:
    try:
        data = json.loads(_fingerprint_path(fed).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("fingerprint") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def state_dir(fed: Federation) -> Path:
    """Per-federation state on the control machine: inventory, snapshot, logs."""
    return Path(fed.control.state_dir) / fed.federation.name


def secrets_dir(fed: Federation) -> Path:
    return Path(fed.security.secrets_dir) / fed.federation.name


def _running_path(fed: Federation) -> Path:
    return state_dir(fed) / "deploy.running"


@contextlib.contextmanager
def deploy_lock(fed: Federation) -> Iterator[Path]:
    """Hold the federation's deploy lock (``STATE/deploy.lock``) or exit 2 naming its holder.

    An ``flock`` on an open file: the kernel releases it when the holder exits, however it ends,
    so a killed deploy never leaves a stale lock. The file says who holds it (pid, command)."""
    path = state_dir(fed) / "deploy.lock"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            raise BadInput(
                f"{path}: another deploy of federation {fed.federation.name!r} is running "
                f"({holder}): wait for it to finish; nothing was changed"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def missing_secrets(fed: Federation) -> list[str]:
    """Control-machine secrets a deployed federation's hosts rely on that are gone.

    The deployment CA (its key signs every host certificate), each central manager's control
    token (tokens.d), each cache's sss key (its origins hold the same), the lab issuer's client
    secrets. Empty for a federation never deployed (a first deploy makes them)."""
    base = secrets_dir(fed)
    want: list[Path] = []
    if any(h.tls is None for h in hosts(fed)):
        want += [base / "ca" / "ca.key", base / "ca" / "ca.crt"]
    want += [base / "tokens.d" / h.fqdn for h in hosts_with(fed, Role.CENTRAL_MANAGER)]
    want += [base / "xrootd" / "sss" / f"{h.fqdn}.keytab" for h in hosts_with(fed, Role.CACHE)]
    if hosts_with(fed, Role.ISSUER):
        from escape_fed.ops.tokens import client_id  # tokens imports this module

        want += [base / "iam" / "clients" / f"{client_id(fed, g)}.secret" for g in fed.iam.groups]
    return [str(p) for p in want if not p.is_file()]


def expiring_certificates(fed: Federation, days: int = RENEW_DAYS) -> list[str]:
    """Certificates on the control machine with fewer than ``days`` left: "PATH (DATE)".

    The deployment CA, the host certificates it issued for this federation's hosts, and the
    certificates sites gave for their own hosts."""
    issued = secrets_dir(fed) / "ca" / "issued"
    fqdns = {h.fqdn for h in hosts(fed)}
    paths = [secrets_dir(fed) / "ca" / "ca.crt"]
    if issued.is_dir():
        paths += [c for c in sorted(issued.glob("*.crt")) if c.name.rsplit("-", 1)[0] in fqdns]
    paths += [Path(h.tls.certificate) for h in hosts(fed) if h.tls is not None]
    limit = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    out = []
    for path in paths:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue  # missing ones are missing_secrets' business; model checks read own certs
        if cert.not_valid_after_utc < limit:
            out.append(f"{path} ({cert.not_valid_after_utc:%Y-%m-%d})")
    return out


def prepare(fed: Federation, source: str) -> Path:
    """Render the inventory and make the secrets directory (0700); return the inventory."""
    inventory = state_dir(fed) / "inventory"
    write_inventory(fed, inventory, source)
    secrets = secrets_dir(fed)
    secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(secrets, 0o700)
    return inventory


def deploy(
    fed: Federation,
    source: str,
    progress: Progress,
    site: str | None = None,
    check: bool = False,
    verbose: bool = False,
    full: bool = False,
    converge: bool = False,
) -> DeployResult:
    """Provision the hosts of FED (or of one site) and apply the roles.

    A whole-federation deploy whose inputs (inventory, roles, playbooks) are those of the last
    successful one runs only the health play; if every host is healthy the roles are skipped,
    otherwise they all run. ``full`` first checks every host against what the last converge
    left there (drift.verify: every file, directory, account and service the roles manage),
    and runs every role if anything differs or the health play fails. ``converge`` runs every
    role whatever the checks would say.
    """
    if site is not None and site not in fed.sites:
        raise BadInput(f"--site {site}: no such site: expected one of {', '.join(fed.sites)}")
    scope = [site] if site else list(fed.sites)
    cloud = [s for s in scope if fed.sites[s].backend in CLOUD_BACKENDS]
    if cloud:
        raise NotBuiltYet(
            f"sites {', '.join(cloud)} use cloud or kubernetes backends, which cannot be "
            "deployed yet: deploy the other sites with --site"
        )
    if not (PLAYBOOKS / PLAYBOOK).exists():
        raise OperationFailed(f"{PLAYBOOKS / PLAYBOOK} is missing: the checkout is incomplete")
    with deploy_lock(fed):
        return _deploy_locked(fed, source, progress, site, check, verbose, full, converge, scope)


def _deploy_locked(
    fed: Federation,
    source: str,
    progress: Progress,
    site: str | None,
    check: bool,
    verbose: bool,
    full: bool,
    converge: bool,
    scope: list[str],
) -> DeployResult:
    snapshot_file = Path(fed.snapshot_path())
    if not converge and not check and snapshot_file.exists():
        lost = missing_secrets(fed)
        if lost:
            raise OperationFailed(
                f"the control machine lost secrets this federation's hosts rely on "
                f"({secrets_dir(fed)}): missing {', '.join(lost)}. Restore them from a backup "
                "and deploy again, or run 'escape-fed deploy --converge' to make new ones (every "
                "host gets new certificates and keys; tokens made with the lost ones stop "
                "working). Nothing was changed"
            )
    if any(fed.sites[s].backend is Backend.LAB for s in scope):
        spec = lab_spec(fed)
        if check:
            down = [h["host"] for h in runtime.status(spec.state_dir) if h["state"] != "running"]
            if down or runtime.load_state(spec.state_dir) is None:
                raise OperationFailed(
                    "check mode needs the lab hosts up: run 'escape-fed lab up FILE' first"
                )
        else:
            progress(f"hosts: lab up ({len(spec.hosts)} hosts)")
            runtime.up(spec, progress)
    inventory = prepare(fed, source)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log = state_dir(fed) / "logs" / f"deploy-{stamp}.log"
    current = fingerprint(fed, source)
    running = _running_path(fed)
    record_file = drift.record_path(state_dir(fed))
    unchanged = (
        not converge
        and not check
        and site is None
        and snapshot_file.exists()
        and not running.exists()
        and _applied_fingerprint(fed) == current
    )
    record = drift.load_record(record_file, current) if unchanged and full else None
    verified = None
    expiring = expiring_certificates(fed) if unchanged else []
    if expiring:
        progress(
            f"configure: certificates within {RENEW_DAYS} days of expiry: "
            f"{', '.join(expiring)}: running every role to renew them"
        )
    elif unchanged and (not full or record is not None):
        if record is not None:
            progress(
                "configure: nothing changed since the last deploy; verifying every file, "
                "directory, account and service the roles manage on every host against the "
                "last converge (--converge runs every role)"
            )
            verified = drift.verify(
                inventory / "hosts.yml",
                record,
                progress,
                log=log.with_name(f"verify-{stamp}.log"),
                verbose=verbose,
            )
            for host, found in sorted(verified.drift.items()):
                progress(f"  {host}: differs from the last converge: {'; '.join(found[:5])}")
        if verified is None or verified.clean:
            progress(
                "configure: checking every host's health"
                + ("" if full else " (--full also verifies every managed file)")
            )
            health = run_playbook(
                inventory / "hosts.yml",
                HEALTH_PLAYBOOK,
                progress,
                log=log.with_name(f"health-{stamp}.log"),
                verbose=verbose,
            )
            if health.ok:
                both = health if verified is None else merged(verified.playbook, health)
                return DeployResult(
                    both, inventory, snapshot_file, check, skipped=True, verified=verified
                )
            progress("configure: some hosts are not healthy: running every role")
        else:
            progress("configure: hosts differ from the last converge: running every role")
    interrupted = running.exists()
    if interrupted and not check:
        progress(
            f"configure: an earlier deploy was interrupted ({running}): running every role, "
            "then restarting every daemon (the handlers it notified were lost)"
        )
    if not check:
        # From here hosts may change: until this run succeeds, no marker may say "applied".
        _fingerprint_path(fed).unlink(missing_ok=True)
        record_file.unlink(missing_ok=True)  # rewritten only by a whole, successful converge
        running.write_text(json.dumps({"pid": os.getpid(), "at": stamp}), encoding="utf-8")
    progress(
        f"configure: ansible-playbook {PLAYBOOK}{' --check' if check else ''}"
        f"{f' --limit {group_name(site)}' if site else ''} (log: {log})"
    )
    recorder = drift.Recorder()
    result = run_playbook(
        inventory / "hosts.yml",
        PLAYBOOK,
        progress,
        limit=group_name(site) if site else None,
        check=check,
        log=log,
        verbose=verbose,
        observe=None if check or site else recorder.observe,
    )
    if interrupted and result.ok and not check:
        progress("configure: restarting every daemon after the interrupted deploy")
        restart = run_playbook(
            inventory / "hosts.yml",
            HEALTH_PLAYBOOK,
            progress,
            limit=group_name(site) if site else None,
            extra_vars={"escape_fed_restart_daemons": True},
            log=log.with_name(f"restart-{stamp}.log"),
            verbose=verbose,
        )
        if not restart.ok:
            result.errors += restart.errors or [{"event": "failed", "host": "(restart)"}]
            result.returncode = restart.returncode or 1
    if result.ok and not check and site is None:
        progress("configure: recording what the converge left on every host (--full checks it)")
        if drift.capture(
            inventory / "hosts.yml",
            recorder,
            progress,
            log=log.with_name(f"record-{stamp}.log"),
            verbose=verbose,
        ):
            recorder.save(record_file, current)
        else:
            progress("configure: the record is incomplete: the next deploy --full runs every role")
    snapshot = None
    if result.ok and not check:
        snapshot = Path(fed.snapshot_path())
        applied = load_snapshot(snapshot)
        want = desired(fed)
        if site:
            applied = {h: e for h, e in applied.items() if e.get("site") != site}
            applied.update({h: e for h, e in want.items() if e["site"] == site})
        else:
            applied = want
        write_snapshot(fed.federation.name, applied, snapshot)
    if not check:
        # The run ended (ok or failed; handlers were forced either way, ansible.cfg): only a
        # whole-federation success clears "interrupted" and records the fingerprint.
        if result.ok and site is None:
            running.unlink(missing_ok=True)
            _fingerprint_path(fed).write_text(
                json.dumps({"fingerprint": current, "at": stamp}), encoding="utf-8"
            )
        elif not interrupted:
            running.unlink(missing_ok=True)
    return DeployResult(result, inventory, snapshot, check, verified=verified)
