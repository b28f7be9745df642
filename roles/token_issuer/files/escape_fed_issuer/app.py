"""The issuer's web application: discovery, JWKS and the client-credentials token endpoint.

Built on Authlib's AuthorizationServer, ClientCredentialsGrant and RFC 9068 JWT access-token
generator; keys are joserfc JWKs (see keys.py). Configuration: the JSON file named by
ESCAPE_FED_ISSUER_CONFIG (written by the Ansible role token_issuer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.errors import InvalidScopeError, OAuth2Error, UnauthorizedClientError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from flask import Flask, g, jsonify

from escape_fed_issuer.keys import ALG, KeyStore

GROUP_SCOPE = "wlcg.groups"
WLCG_VERSION = "1.0"


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

    def scopes_supported(self) -> list[str]:
        out = [GROUP_SCOPE] + [f"{GROUP_SCOPE}:{grp}" for grp in self.groups]
        for scopes in self.groups.values():
            out += [s for s in scopes if s not in out]
        return out


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
        super().__init__(issuer, alg=ALG, expires_generator=lambda client, grant: lifetime)
        self.store = store
        self.lifetime = lifetime

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
            "exp": now + self.lifetime,
            "wlcg.ver": WLCG_VERSION,
            "wlcg.groups": [client.group],
        }


def discovery(issuer: str, policy: Policy) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}jwks",
        "token_endpoint": f"{issuer}token",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
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
    server.register_grant(GroupClientCredentialsGrant)
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
        return server.create_token_response()

    @app.after_request
    def no_store(response: Any) -> Any:
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
