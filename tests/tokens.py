"""Tokens for the token matrix: the claims a valid token has, and every way to get one wrong.

The valid token of each test comes from the lab issuer itself (`escape-fed token`). The wrong
ones are minted here with joserfc: most with the issuer's own active key (read over SSH from the
issuer host) so that exactly one property is wrong and the signature is good; `bad_signature`
with a fresh key published nowhere but under the issuer's key id; `unknown_issuer` with a fresh
key and another issuer URL.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from joserfc.jwk import ECKey

if TYPE_CHECKING:
    from tests.e2e.conftest import TokenLab

COMPUTE_SCOPES = ("compute.read", "compute.create", "compute.modify", "compute.cancel")


def group_client(lab: TokenLab, group: str) -> str:
    """The lab client id of an IAM group: `<federation>-<last path element of the group>`."""
    return f"{lab.fed.federation.name}-{group.rstrip('/').rsplit('/', 1)[-1]}"


def group_scopes(lab: TokenLab, group: str) -> list[str]:
    """The scopes the issuer grants a group: compute, every dataset, the group's own paths."""
    datasets = sorted({d.path for d in lab.fed.datasets.values()})
    own = list(lab.fed.iam.groups[group].paths)
    return [
        *COMPUTE_SCOPES,
        *(f"storage.read:{p}" for p in datasets),
        *(f"storage.read:{p}" for p in own),
    ]


def good_claims(lab: TokenLab, group: str, **over: Any) -> dict[str, Any]:
    """The claims of a valid token for ``group``, issued now; ``over`` replaces some."""
    now = int(time.time())
    client = group_client(lab, group)
    claims: dict[str, Any] = {
        "iss": lab.fed.iam.issuer,
        "sub": client,
        "aud": lab.fed.iam.audience,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "client_id": client,
        "scope": " ".join(group_scopes(lab, group)),
        "wlcg.ver": "1.0",
        "wlcg.groups": [group],
    }
    claims.update(over)
    return claims


def mint(key: dict[str, Any], claims: dict[str, Any], kid: str | None = None) -> str:
    """An ES256 JWT access token (header typ at+jwt) signed with the private JWK ``key``."""
    header = {"alg": "ES256", "typ": "at+jwt", "kid": kid or key["kid"]}
    return jwt.encode(header, claims, ECKey.import_key(key))


def fresh_key(kid: str) -> dict[str, Any]:
    """A new P-256 private key that no issuer publishes."""
    data: dict[str, Any] = ECKey.generate_key("P-256", private=True).as_dict(private=True)
    data["kid"] = kid
    return data


@dataclass(frozen=True)
class Case:
    """One wrong token: how to build it from the lab and the group it claims to be for."""

    name: str
    build: Callable[[TokenLab, str], str | None]  # None: send no token at all
    why: str


def _signed(**over: Any) -> Callable[[TokenLab, str], str]:
    return lambda lab, group: mint(lab.issuer_key(), good_claims(lab, group, **over))


def _not_yet_valid(lab: TokenLab, group: str) -> str:
    now = int(time.time())
    return mint(lab.issuer_key(), good_claims(lab, group, nbf=now + 600, iat=now))


def _expired(lab: TokenLab, group: str) -> str:
    now = int(time.time())
    return mint(
        lab.issuer_key(), good_claims(lab, group, iat=now - 900, nbf=now - 900, exp=now - 300)
    )


def _bad_signature(lab: TokenLab, group: str) -> str:
    real = lab.issuer_key()
    return mint(fresh_key(real["kid"]), good_claims(lab, group))  # the issuer's kid, another key


def _unknown_issuer(lab: TokenLab, group: str) -> str:
    # A well-formed token from an issuer nobody trusts (its URL even resolves nowhere).
    return mint(fresh_key("rogue-1"), good_claims(lab, group, iss="https://rogue.invalid/"))


def _missing_scope(lab: TokenLab, group: str) -> str:
    # Group membership without any compute or storage scope: authenticates, authorises nothing.
    return mint(lab.issuer_key(), good_claims(lab, group, scope="openid"))


MATRIX: tuple[Case, ...] = (
    Case("expired", _expired, "exp five minutes ago"),
    Case("not_yet_valid", _not_yet_valid, "nbf ten minutes from now"),
    Case("wrong_audience", _signed(aud="https://other.example.org"), "aud of another service"),
    Case("unknown_issuer", _unknown_issuer, "iss nobody trusts, key nobody publishes"),
    Case("bad_signature", _bad_signature, "the issuer's kid, signed by another key"),
    Case("missing_scope", _missing_scope, "no compute.* nor storage.* scope"),
    Case("no_token", lambda lab, group: None, "no Authorization at all"),
)
"""The wrong tokens every entry point must refuse. `other_group_path` is not a token but a
request: a valid group-B token asking for group A's embargoed path; data tests add it."""

CASES = [c.name for c in MATRIX]


def case(name: str) -> Case:
    return next(c for c in MATRIX if c.name == name)
