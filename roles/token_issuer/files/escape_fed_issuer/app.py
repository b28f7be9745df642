"""The issuer's web application: discovery, JWKS and the token endpoint.

Built on Authlib's AuthorizationServer, ClientCredentialsGrant and RFC 9068 JWT access-token
generator; keys are joserfc JWKs (see keys.py). Configuration: the JSON file named by
ESCAPE_FED_ISSUER_CONFIG (written by the Ansible role token_issuer).

Two grants: client credentials (a group's lab client gets the group's token), and RFC 8693
token exchange for job tokens: a user's token (the subject token, which must carry
compute.create) is exchanged for a read-only token with a subset of its storage.read scopes and
a lifetime of at most the issuer's maximum. The token endpoint is rate-limited (per client and
overall, shared by the workers) before any secret is hashed.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import math
import os
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.grants import BaseGrant, ClientCredentialsGrant, TokenEndpointMixin
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from flask import Flask, g, jsonify, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from escape_fed_issuer.keys import ALG, KeyStore

GROUP_SCOPE = "wlcg.groups"
WLCG_VERSION = "1.0"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
JOB_SCOPE = "storage.read"  # the only scope a job token may carry (on paths)
SUBMIT_SCOPE = "compute.create"  # a subject token must carry it: job tokens are not exchanged


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]
    """RFC 8707: the requested audience is not one this issuer serves."""

    error = "invalid_target"


def verify_secret(secret: str, encoded: str) -> bool:
    """Check SECRET against 'pbkdf2_sha256$ITERATIONS$SALT$HASH' (base64url, no padding)."""
    try:
        scheme, iterations, salt, digest = encoded.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        want = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
        got = hashlib.pbkdf2_hmac(
            "sha256",
            secret.encode(),
            base64.urlsafe_b64decode(salt + "=" * (-len(salt) % 4)),
            int(iterations),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@dataclass(frozen=True)
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    group: str
    secret_hash: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return verify_secret(client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method == "client_secret_basic"

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _scope_allowed(wanted: str, allowed: list[str]) -> bool:
    """WLCG scope subset: the same scope, or a storage scope on a path below an allowed one."""
    if wanted in allowed:
        return True
    if ":" not in wanted:
        return False
    name, _, path = wanted.partition(":")
    if not path.startswith("/") or posixpath.normpath(path) != path.rstrip("/") or "//" in path:
        return False
    for grant in allowed:
        gname, _, gpath = grant.partition(":")
        if gname == name and gpath and _under(path, gpath):
            return True
    return False


class Policy:
    def __init__(self, config: dict[str, Any]) -> None:
        self.groups: dict[str, list[str]] = config["groups"]
        self.audiences: list[str] = config["audiences"]
        self.max_lifetime_s = int(config["max_lifetime_s"])
        self.job_lifetime_s = min(int(config["job_token_lifetime_s"]), self.max_lifetime_s)
        self.clients = {
            cid: Client(cid, entry["group"], entry["secret_hash"])
            for cid, entry in config["clients"].items()
        }

    def grant(self, client: Client, requested: str | None) -> str:
        """The scope to put in the token, or InvalidScopeError."""
        allowed = self.groups[client.group]
        granted: list[str] = []
        for item in (requested or "").split():
            if item == GROUP_SCOPE:
                continue
            if item.startswith(GROUP_SCOPE + ":"):
                if item[len(GROUP_SCOPE) + 1 :] != client.group:
                    raise InvalidScopeError(
                        description=f"client {client.client_id} may not ask for {item}"
                    )
                continue
            if not _scope_allowed(item, allowed):
                raise InvalidScopeError(
                    description=f"scope {item} is not granted to group {client.group}"
                )
            if item not in granted:
                granted.append(item)
        return " ".join(granted or allowed)

    def job_grant(self, subject: list[str], requested: str | None) -> str:
        """The scope of a job token: storage.read scopes only, each within one of the SUBJECT
        token's own scopes (never wider than the user's token), or InvalidScopeError."""
        items = (requested or "").split()
        if not items:
            raise InvalidScopeError(description="a job token needs scope storage.read:<path>...")
        granted: list[str] = []
        for item in items:
            if item.partition(":")[0] != JOB_SCOPE or ":" not in item:
                raise InvalidScopeError(description=f"a job token is read-only: not {item}")
            if not _scope_allowed(item, subject):
                raise InvalidScopeError(description=f"scope {item} is not in the subject token")
            if item not in granted:
                granted.append(item)
        return " ".join(granted)

    def scopes_supported(self) -> list[str]:
        """Scope names only: which paths a group may read is nobody else's business."""
        out = [GROUP_SCOPE]
        for scopes in self.groups.values():
            for name in (s.partition(":")[0] for s in scopes):
                if name not in out:
                    out.append(name)
        return out


def _b64_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def verify_subject(token: str, issuer: str, store: KeyStore, policy: Policy) -> dict[str, Any]:
    """The claims of a subject token this issuer signed and that is valid now, or
    InvalidGrantError: ES256 with one of the published keys, iss, aud, exp, nbf, and a lifetime
    (exp - iat) within the issuer's maximum."""
    claims: dict[str, Any] | None = None
    error = "no key"
    try:
        header = _b64_json(token.split(".")[0])
        published = store.get().jwks()["keys"]
    except (ValueError, binascii.Error, IndexError, TypeError) as exc:
        raise InvalidGrantError(description=f"subject_token is not a JWT: {exc}") from None
    for jwk in published:  # the header's kid if it names one, else each published key
        if header.get("kid") not in (None, jwk["kid"]):
            continue
        try:
            key = KeySet.import_key_set({"keys": [jwk]})  # type: ignore[list-item]
            claims = dict(jwt.decode(token, key, algorithms=["ES256"]).claims)
            break
        except (JoseError, ValueError, TypeError) as exc:
            error = str(exc) or type(exc).__name__
    if claims is None:
        raise InvalidGrantError(description=f"subject_token does not verify: {error}")
    now = int(time.time())
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", 0)
    problem = None
    if header.get("alg") != "ES256":
        problem = "alg"
    elif claims.get("iss") != issuer:
        problem = "iss"
    elif not any(a in policy.audiences for a in auds):
        problem = "aud"
    elif not isinstance(exp, int) or exp <= now:
        problem = "exp"
    elif not isinstance(iat, int) or exp - iat > policy.max_lifetime_s:
        problem = "lifetime (exp - iat) above the maximum"
    elif not isinstance(nbf, int) or nbf > now:
        problem = "nbf"
    if problem:
        raise InvalidGrantError(description=f"subject_token refused: {problem}")
    return claims


class TokenExchangeGrant(BaseGrant, TokenEndpointMixin):  # type: ignore[misc]
    """RFC 8693 token exchange: a user's access token for a job's read-only token.

    The subject token authenticates the request (no client secret, no PBKDF2): it must be this
    issuer's, valid, and able to submit (compute.create). The new token keeps the subject's
    client, sub and group, carries only the requested storage.read scopes (each within the
    subject's own), and lives the job-token lifetime (capped by the issuer's maximum)."""

    GRANT_TYPE = TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["none"]

    def validate_token_request(self) -> None:
        data = self.request.payload.data
        policy: Policy = self.server.policy
        subject = data.get("subject_token")
        if not isinstance(subject, str) or not subject:
            raise InvalidRequestError(description="subject_token is required")
        if data.get("subject_token_type") not in (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE):
            raise InvalidRequestError(description=f"subject_token_type must be {ACCESS_TOKEN_TYPE}")
        if data.get("actor_token"):
            raise InvalidRequestError(description="actor_token is not supported")
        if data.get("requested_token_type") not in (None, ACCESS_TOKEN_TYPE):
            raise InvalidRequestError(description=f"requested_token_type: {ACCESS_TOKEN_TYPE} only")
        claims = verify_subject(subject, self.server.issuer, self.server.store, policy)
        client = policy.clients.get(str(claims.get("client_id")))
        scopes = str(claims.get("scope") or "").split()
        if client is None or claims.get("wlcg.groups") != [client.group]:
            raise InvalidGrantError(description="subject_token: unknown client or group")
        if SUBMIT_SCOPE not in scopes:
            raise InvalidGrantError(
                description=f"subject_token: only a token with {SUBMIT_SCOPE} is exchanged"
            )
        self.request.client = client
        g.granted_scope = policy.job_grant(scopes, self.request.payload.scope)
        audience = data.get("audience")
        if audience is not None and audience not in policy.audiences:
            raise InvalidTargetError(description=f"audience {audience} is not served here")
        g.audience = audience or policy.audiences[0]
        g.lifetime = policy.job_lifetime_s

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = dict(self.generate_token(scope=g.granted_scope, include_refresh_token=False))
        token["issued_token_type"] = ACCESS_TOKEN_TYPE
        return 200, token, self.TOKEN_RESPONSE_HEADER


class RateLimit:
    """Token buckets shared by every worker of the service (a JSON file under flock).

    ``*``: every request that costs a secret hash or a signature check; ``client:ID``: every
    request of one known client id. A request is let through only if each of its buckets has a
    token left; otherwise the seconds until it would be."""

    def __init__(self, path: Path, limits: dict[str, Any]) -> None:
        self.path = path
        self.overall = (float(limits["burst"]), float(limits["per_s"]))
        self.client = (float(limits["client_burst"]), float(limits["client_per_s"]))

    def _limit(self, key: str) -> tuple[float, float]:
        return self.overall if key == "*" else self.client

    def take(self, keys: list[str]) -> float:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                state: dict[str, list[float]] = json.loads(handle.read() or "{}")
            except ValueError:
                state = {}
            now = time.monotonic()
            levels: dict[str, float] = {}
            wait = 0.0
            for key in keys:
                burst, rate = self._limit(key)
                level, then = state.get(key, [burst, now])
                level = burst if then > now else min(burst, level + (now - then) * rate)
                levels[key] = level
                if level < 1:
                    wait = max(wait, (1 - level) / rate)
            if wait == 0:
                for key in keys:
                    state[key] = [levels[key] - 1, now]
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps(state))
            return wait


def basic_client_id(header: str | None) -> str | None:
    """The client id of an HTTP Basic Authorization header, or None (no hashing here)."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return unquote(raw.partition(":")[0])


class GroupClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    """Client credentials, client_secret_basic only; scope and audience checked per client."""

    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic"]

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError(
                description=f"client {client.client_id} may not use {self.GRANT_TYPE}"
            )
        self.request.client = client
        policy: Policy = self.server.policy
        g.granted_scope = policy.grant(client, self.request.payload.scope)
        audience = self.request.payload.data.get("audience")
        if audience is not None and audience not in policy.audiences:
            raise InvalidTargetError(description=f"audience {audience} is not served here")
        g.audience = audience or policy.audiences[0]

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(scope=g.granted_scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class WLCGTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 JWT access tokens with the WLCG profile's claims, signed by the active key."""

    def __init__(self, issuer: str, store: KeyStore, lifetime: int) -> None:
        super().__init__(issuer, alg=ALG, expires_generator=lambda client, grant: self._lifetime())
        self.store = store
        self.lifetime = lifetime

    def _lifetime(self) -> int:
        return int(g.get("lifetime", self.lifetime))

    def get_jwks(self) -> dict[str, Any]:
        return self.store.get().signing_key()  # a dict with kid: Authlib puts it in the header

    def get_audiences(self, client: Client, user: object, scope: str) -> str:
        return str(g.audience)

    def get_extra_claims(
        self, client: Client, grant_type: str, user: object, scope: str
    ) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iat": now,
            "nbf": now,
            "exp": now + self._lifetime(),
            "wlcg.ver": WLCG_VERSION,
            "wlcg.groups": [client.group],
        }


def discovery(issuer: str, policy: Policy) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}jwks",
        "token_endpoint": f"{issuer}token",
        "grant_types_supported": ["client_credentials", TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "response_types_supported": [],
        "scopes_supported": policy.scopes_supported(),
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "nbf",
            "iat",
            "jti",
            "client_id",
            "scope",
            "wlcg.ver",
            "wlcg.groups",
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALG],
        "token_endpoint_auth_signing_alg_values_supported": [ALG],
    }


def create_app(config_path: str | None = None) -> Flask:
    path = Path(config_path or os.environ.get("ESCAPE_FED_ISSUER_CONFIG", ""))
    config = json.loads(path.read_text(encoding="utf-8"))
    issuer: str = config["issuer"]
    if not issuer.endswith("/"):
        raise ValueError(f"issuer {issuer} must end with a slash")
    base = urlsplit(issuer).path  # "/" for https://host:8443/
    policy = Policy(config)
    store = KeyStore(Path(config["keys_dir"]))
    store.get()  # fail at start when the keys are unusable

    app = Flask("escape_fed_issuer")
    app.url_map.merge_slashes = False  # serve the double-slash discovery URL, no redirect
    app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"client_credentials": config["token_lifetime_s"]}
    server = AuthorizationServer(app, query_client=policy.clients.get, save_token=lambda t, r: None)
    server.policy = policy
    server.issuer = issuer
    server.store = store
    server.register_grant(GroupClientCredentialsGrant)
    server.register_grant(TokenExchangeGrant)
    limiter = RateLimit(Path(config["rate_limit"]["state"]), config["rate_limit"])
    server.register_token_generator(
        "default", WLCGTokenGenerator(issuer, store, int(config["token_lifetime_s"]))
    )
    meta = discovery(issuer, policy)

    def well_known() -> Any:
        return jsonify(meta)

    names = ("openid-configuration", "oauth-authorization-server")
    for name in names:
        for rule in {
            f"{base}.well-known/{name}",
            f"{base}/.well-known/{name}",
            f"/.well-known/{name}{base.rstrip('/')}",
        }:
            app.add_url_rule(rule, f"well_known_{name}_{rule}", well_known)

    @app.get(f"{base}jwks")
    def jwks() -> Any:
        return jsonify(store.get().jwks())

    @app.post(f"{base}token")
    def token() -> Any:
        # Before Authlib sees the request, hence before any secret is hashed: a client id
        # nobody knows is refused by Authlib without hashing and costs no bucket here.
        cid = basic_client_id(request.headers.get("Authorization"))
        if cid is not None and cid not in policy.clients:
            return server.create_token_response()
        keys = ["*"] + ([f"client:{cid}"] if cid is not None else [])
        wait = limiter.take(keys)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            response = jsonify(
                error="too_many_requests",
                error_description=f"rate limit: try again in {retry} s",
            )
            response.status_code = 429
            response.headers["Retry-After"] = str(retry)
            return response
        return server.create_token_response()

    @app.after_request
    def no_store(response: Any) -> Any:
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
