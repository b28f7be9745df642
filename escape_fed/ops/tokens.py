"""token: fetch a WLCG access token for an IAM group from the federation's issuer (lab and dev).

Uses the group's lab client (made by the token_issuer role: client id
``<federation>-<last element of the group>``, secret on the control machine under
``<secrets_dir>/<federation>/iam/clients/``) and the OAuth2 client-credentials grant through
Authlib's requests client, verifying TLS against the deployment CA. The token goes to a file
(mode 0600, written atomically) and is never printed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from authlib.integrations.requests_client import (  # type: ignore[import-untyped]
    OAuth2Session,
    OAuthError,
)
from requests.adapters import HTTPAdapter

from escape_fed.errors import BadInput, OperationFailed
from escape_fed.model.schema import Federation
from escape_fed.model.view import hosts
from escape_fed.ops.deploy import secrets_dir

GROUP_SCOPE = "wlcg.groups"
TIMEOUT_S = 20.0
MAX_TOKEN_BYTES = 16384


@dataclass(frozen=True)
class TokenSummary:
    """What `escape-fed token` tells the user: everything but the token."""

    file: str
    group: str
    client_id: str
    issuer: str
    audience: str | None
    scopes: list[str]
    expires_in: int | None
    expires_at: str | None  # ISO 8601, UTC

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def client_id(fed: Federation, group: str) -> str:
    """The lab client of an IAM group: ``<federation>-<last path element of the group>``."""
    return f"{fed.federation.name}-{group.rstrip('/').rsplit('/', 1)[-1]}"


def clients_dir(fed: Federation) -> Path:
    return secrets_dir(fed) / "iam" / "clients"


def ca_file(fed: Federation) -> Path:
    return secrets_dir(fed) / "ca" / "ca.crt"


class LabAddress(HTTPAdapter):
    """Reach a lab host by its lab address (the control machine has no DNS for the lab) while
    TLS still checks the certificate against the host's name."""

    def __init__(self, hostname: str, address: str) -> None:
        self._hostname = hostname
        self._address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self._hostname
        kwargs["assert_hostname"] = self._hostname
        super().init_poolmanager(*args, **kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(request.url or "")
        if parts.hostname == self._hostname:
            request.headers["Host"] = parts.netloc
            port = f":{parts.port}" if parts.port else ""
            request.url = urlunsplit(parts._replace(netloc=f"{self._address}{port}"))
        return super().send(request, *args, **kwargs)


def _lab_address(fed: Federation, hostname: str) -> str | None:
    for host in hosts(fed):
        if host.fqdn == hostname and host.address and fed.sites[host.site].backend.value == "lab":
            return host.address
    return None


_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def is_token_file(path: Path) -> bool:
    """Whether PATH is a token file as :func:`fetch_token` writes them: a regular file (not a
    link), private to its owner (no group or other permission bits), holding exactly one line
    that is a JWT (three base64url parts, the first two JSON objects, the header with ``alg``).

    Nothing else looks like that: a federation file, a key, a script all fail on the content;
    a JWT someone shares with others fails on the mode."""
    try:
        st = path.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077:
        return False
    if not 0 < st.st_size <= MAX_TOKEN_BYTES:
        return False
    try:
        text = path.read_bytes().decode("ascii")
    except (OSError, UnicodeDecodeError):
        return False
    line = text.removesuffix("\n")
    parts = line.split(".")
    if "\n" in line or len(parts) != 3 or not all(_B64URL.match(p) for p in parts):
        return False
    try:
        header, payload = (
            json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2]
        )
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header and isinstance(payload, dict)


def check_output(out: Path, force: bool = False) -> None:
    """OUT may receive a token, or :class:`BadInput` naming it. An existing file is replaced
    only if it is a token file this command wrote (:func:`is_token_file`), or with ``force``:
    a federation file given where the token goes is left as it was."""
    if out.is_dir():
        raise BadInput(f"{out} is a directory: give the path of the token file to write")
    if not out.parent.is_dir():
        raise BadInput(f"{out.parent}: no such directory for the token file")
    if not force and (out.exists() or out.is_symlink()) and not is_token_file(out):
        raise BadInput(
            f"{out}: exists and is not a token file escape-fed wrote (one JWT line, mode "
            "0600): left as it is; give another FILE (the federation file is -f FILE), or "
            "--force to replace it"
        )


def _read_secret(fed: Federation, cid: str) -> str:
    path = clients_dir(fed) / f"{cid}.secret"
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise OperationFailed(
            f"no secret for client {cid} at {path}: the lab issuer is not deployed yet "
            "(run 'escape-fed deploy FILE'); with a real IAM, get tokens from it instead "
            "(e.g. oidc-agent)"
        ) from None
    except OSError as exc:
        raise OperationFailed(f"cannot read the secret of client {cid}: {exc.strerror}") from None
    if not secret:
        raise OperationFailed(f"{path} is empty: redeploy to make the client secret again")
    return secret


def write_private(out: Path, text: str) -> None:
    """Write TEXT to OUT atomically, mode 0600 from the start."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ca(fed: Federation) -> str:
    ca = ca_file(fed)
    if not ca.is_file():
        raise OperationFailed(
            f"no deployment CA at {ca}: the lab issuer is not deployed yet "
            "(run 'escape-fed deploy FILE')"
        )
    return str(ca)


def _mount_lab(fed: Federation, session: requests.Session) -> None:
    issuer = urlsplit(fed.iam.issuer)
    address = _lab_address(fed, issuer.hostname or "")
    if address:
        session.mount(f"https://{issuer.netloc}/", LabAddress(issuer.hostname or "", address))


def issuer_http(fed: Federation) -> requests.Session:
    """A requests session for the federation's issuer: TLS checked against the deployment CA
    (pass ``verify=session.verify`` on each request: REQUESTS_CA_BUNDLE would win otherwise),
    lab hosts reached at their lab address."""
    session = requests.Session()
    session.verify = _ca(fed)
    _mount_lab(fed, session)
    return session


def _session(fed: Federation, cid: str, secret: str, scope: str) -> OAuth2Session:
    session = OAuth2Session(
        cid, secret, token_endpoint_auth_method="client_secret_basic", scope=scope
    )
    session.verify = _ca(fed)  # and on every request: REQUESTS_CA_BUNDLE would win otherwise
    _mount_lab(fed, session)
    return session


def _discover(session: requests.Session, issuer: str) -> str:
    """The token endpoint from the issuer's discovery document (whose issuer must match)."""
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    extra: dict[str, Any] = {"withhold_token": True} if isinstance(session, OAuth2Session) else {}
    resp = session.get(url, timeout=TIMEOUT_S, verify=session.verify, **extra)
    if resp.status_code != 200:
        raise OperationFailed(f"issuer discovery {url} answered HTTP {resp.status_code}")
    try:
        meta: Mapping[str, Any] = resp.json()
    except ValueError:
        raise OperationFailed(f"issuer discovery {url} did not answer JSON") from None
    if meta.get("issuer") != issuer:
        raise OperationFailed(
            f"issuer discovery {url} names issuer {meta.get('issuer')!r}, not {issuer!r}"
        )
    endpoint = meta.get("token_endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
        raise OperationFailed(f"issuer discovery {url} has no https token_endpoint")
    return endpoint


def fetch_token(
    fed: Federation,
    group: str,
    out: Path,
    scopes: Sequence[str] = (),
    audience: str | None = None,
    force: bool = False,
) -> TokenSummary:
    """Fetch a token for GROUP from the federation's issuer and write it to OUT (0600).

    ``scopes``: a subset of the group's scopes (default: all the issuer grants the group).
    An existing OUT is replaced only if it is a token file (:func:`check_output`) or ``force``.
    """
    if group not in fed.iam.groups:
        known = ", ".join(sorted(fed.iam.groups)) or "none"
        raise BadInput(f"--group {group}: no such IAM group in the model (groups: {known})")
    bad = [s for s in scopes if not s or any(c.isspace() for c in s)]
    if bad:
        raise BadInput(f"--scope {bad[0]!r}: one scope per --scope, without spaces")
    check_output(out, force)
    cid = client_id(fed, group)
    secret = _read_secret(fed, cid)
    scope = " ".join([f"{GROUP_SCOPE}:{group}", *scopes])
    issuer = fed.iam.issuer
    extra = {"audience": audience} if audience else {}
    try:
        with _session(fed, cid, secret, scope) as session:
            endpoint = _discover(session, issuer)
            token = session.fetch_token(
                endpoint,
                grant_type="client_credentials",
                timeout=TIMEOUT_S,
                verify=session.verify,
                **extra,
            )
    except OAuthError as exc:
        what = f"{exc.error}: {exc.description}" if exc.description else exc.error
        if exc.error in ("invalid_scope", "invalid_target"):
            raise BadInput(f"the issuer refused the request ({what})") from None
        if exc.error == "invalid_client":
            raise OperationFailed(
                f"the issuer refused client {cid} ({what}): redeploy the issuer so that it "
                "knows the secret on this machine"
            ) from None
        raise OperationFailed(f"the issuer refused the request ({what})") from None
    except requests.exceptions.SSLError as exc:
        raise OperationFailed(
            f"TLS to the issuer {issuer} failed (checked against {ca_file(fed)}): {exc}"
        ) from None
    except (requests.exceptions.RequestException, ValueError) as exc:
        raise OperationFailed(f"issuer {issuer} unreachable: {exc}") from None
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise OperationFailed(f"the issuer {issuer} answered without an access_token")
    expires_in = token.get("expires_in")
    expires_at = token.get("expires_at")
    write_private(out, access + "\n")
    return TokenSummary(
        file=str(out),
        group=group,
        client_id=cid,
        issuer=issuer,
        audience=audience or fed.iam.audience,
        scopes=str(token.get("scope") or "").split(),
        expires_in=int(expires_in) if expires_in is not None else None,
        expires_at=(
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(expires_at)))
            if expires_at is not None
            else None
        ),
    )


# --- job tokens: RFC 8693 token exchange ---------------------------------------------------------

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def job_scopes(fed: Federation, dataset: str | None, user_scopes: Sequence[str]) -> list[str]:
    """What a job's token may do: read its dataset (``storage.read:<dataset path>``); a job
    without a dataset reads what the user's token reads (its ``storage.read`` scopes). Never a
    ``compute.*`` scope, never a write."""
    if dataset is not None:
        return [f"storage.read:{fed.datasets[dataset].path}"]
    return [s for s in user_scopes if s.startswith("storage.read:")]


def exchange_for_job(fed: Federation, user_token: str, scopes: Sequence[str], out: Path) -> str:
    """Exchange USER_TOKEN at the federation's issuer (RFC 8693) for a job token with SCOPES
    (read-only, each within the user token's own) and write it to OUT (0600). Returns the
    granted scope. The user token authenticates the request; no client secret is needed."""
    if not scopes:
        raise BadInput(
            "the job would get a token that reads nothing: give --dataset, or a token with "
            "storage.read scopes"
        )
    issuer = fed.iam.issuer
    try:
        with issuer_http(fed) as session:
            endpoint = _discover(session, issuer)
            resp = session.post(
                endpoint,
                data={
                    "grant_type": TOKEN_EXCHANGE,
                    "subject_token": user_token,
                    "subject_token_type": ACCESS_TOKEN_TYPE,
                    "requested_token_type": ACCESS_TOKEN_TYPE,
                    "scope": " ".join(scopes),
                },
                timeout=TIMEOUT_S,
                verify=session.verify,
            )
    except requests.exceptions.SSLError as exc:
        raise OperationFailed(
            f"TLS to the issuer {issuer} failed (checked against {ca_file(fed)}): {exc}"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise OperationFailed(f"issuer {issuer} unreachable: {exc}") from None
    try:
        body: Mapping[str, Any] = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200:
        error = body.get("error", f"HTTP {resp.status_code}")
        what = f"{error}: {body.get('error_description', '')}"
        if resp.status_code == 400:
            raise BadInput(f"the issuer refused a job token for this token ({what})")
        raise OperationFailed(f"the issuer refused a job token ({what})")
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise OperationFailed(f"the issuer {issuer} answered without an access_token")
    write_private(out, access + "\n")
    return str(body.get("scope") or "")
