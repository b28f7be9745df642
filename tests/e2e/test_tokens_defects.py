"""Malformed-but-signed tokens at every verifier: access point, origin, cache and ingress.

Each defect is a token that an attacker or a careless issuer could produce and that a verifier
must refuse: ``alg: none``; HS256 with the issuer's public key as the HMAC secret (the classic
key-confusion attack); no ``exp``; no ``aud``; the WLCG "any" audience (the federation does not
allow it); a lifetime (exp - iat) above the issuer's maximum (``iam.token_lifetime_s``),
signed with the issuer's real key. Every cell sends its positive control first, at the same
endpoint: the same claims, signed ES256 with the same key, without the defect; it must be
accepted, so a refusal cannot come from anything but the defect.

Where each refusal comes from: scitokens-cpp (access point, origin, cache) refuses alg none,
HS256, no exp, no aud; the access point's mapping plugin refuses the "any" audience and the long
lifetime (HTCondor accepts both); the ingress's `Require claim aud:` refuses the audiences, its
Lua hook no exp and the long lifetime. Origins and caches cannot refuse "any" or the long
lifetime (see XROOTD_CANNOT).

The access point is reached directly with HTCondor's Python bindings (SCITOKENS inside TLS), as
`escape-fed submit --token` does but without its token exchange (the issuer would refuse these
tokens before the access point saw them); origin and cache over HTTPS (XrdHttp with XRootD's
SciTokens plugin, the same plugin as root://); the ingress on its /data route.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from joserfc.jwk import ECKey

from escape_fed.model.schema import Role
from escape_fed.model.view import hosts_with
from tests.e2e.conftest import TokenLab
from tests.e2e.test_tokens_data import https_get
from tests.e2e.test_tokens_ingress import curl, sample
from tests.e2e.test_tokens_job import submit_at
from tests.tokens import good_claims, mint

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

A = "/escape/astro"
ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"
ENDPOINTS = ["access_point", "origin", "cache", "ingress"]
DEFECTS = ["alg_none", "hs256_public_key", "no_exp", "no_aud", "any_audience", "long_lifetime"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return ".".join(_b64(json.dumps(p).encode()) for p in (header, claims))


def _claims(lab: TokenLab, defect: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(control claims, defective claims): identical but for the defect."""
    now = int(time.time())
    control = good_claims(lab, A, iat=now, nbf=now, exp=now + 300)
    bad = dict(control)
    if defect == "no_exp":
        del bad["exp"]
    elif defect == "no_aud":
        del bad["aud"]
    elif defect == "any_audience":
        bad["aud"] = ANY_AUDIENCE
    elif defect == "long_lifetime":
        maximum = lab.fed.iam.token_lifetime_s
        control["exp"] = now + maximum - 30  # within the maximum: accepted
        bad["exp"] = now + maximum + 600  # ten minutes beyond it
    return control, bad


def tokens(lab: TokenLab, defect: str) -> tuple[str, str]:
    """(control, defective) for DEFECT, both from the issuer's active key."""
    key = lab.issuer_key()
    control_claims, bad_claims = _claims(lab, defect)
    control = mint(key, control_claims)
    if defect == "alg_none":
        bad = _unsigned({"alg": "none", "typ": "at+jwt", "kid": key["kid"]}, bad_claims) + "."
    elif defect == "hs256_public_key":
        public = ECKey.import_key(key).as_pem(private=False)
        signing = _unsigned({"alg": "HS256", "typ": "at+jwt", "kid": key["kid"]}, bad_claims)
        mac = hmac.new(public, signing.encode(), hashlib.sha256).digest()
        bad = f"{signing}.{_b64(mac)}"
    else:
        bad = mint(key, bad_claims)
    return control, bad


# --- one request per endpoint: accepted or not ----------------------------------------------


def _at_access_point(lab: TokenLab, token: str) -> tuple[bool, str]:
    return submit_at(lab, hosts_with(lab.fed, Role.ACCESS_POINT)[0].name, token)


def _data_path(lab: TokenLab) -> tuple[str, str]:
    site, path, _origin = sample(lab, A)
    return site, path


def _at_origin(lab: TokenLab, token: str) -> tuple[bool, str]:
    _site, path = _data_path(lab)
    code, body = https_get(lab, "origin-a", path, token)
    return code == 200, f"HTTP {code} {body[:120]!r}"


def _at_cache(lab: TokenLab, token: str) -> tuple[bool, str]:
    _site, path = _data_path(lab)
    code, body = https_get(lab, "cache-a", path, token)
    return code == 200, f"HTTP {code} {body[:120]!r}"


def _at_ingress(lab: TokenLab, token: str) -> tuple[bool, str]:
    site, path = _data_path(lab)
    reply = curl(lab, f"/data/{site}{path}", token)
    return reply.status == 200, f"HTTP {reply.status} {reply.www_authenticate}"


AT: dict[str, Callable[[TokenLab, str], tuple[bool, str]]] = {
    "access_point": _at_access_point,
    "origin": _at_origin,
    "cache": _at_cache,
    "ingress": _at_ingress,
}


# XRootD's SciTokens plugin verifies with scitokens-cpp's Enforcer, which accepts the WLCG "any"
# audience for every WLCG 1.0 token whatever audience is configured (hard-coded in its
# aud_validator), and has no maximum lifetime: no setting of the plugin changes either. These
# cells are checked the other way round below, so that the day XRootD refuses them the test
# says so (and docs/job-tokens.md is updated).
XROOTD_CANNOT = {("origin", "any_audience"), ("origin", "long_lifetime"),
                 ("cache", "any_audience"), ("cache", "long_lifetime")}  # fmt: skip
CELLS = [(e, d) for e in ENDPOINTS for d in DEFECTS if (e, d) not in XROOTD_CANNOT]


def both(lab: TokenLab, endpoint: str, defect: str) -> tuple[bool, str]:
    """The positive control accepted, then the defective token: (accepted, what happened)."""
    assert lab.fed.iam.audience != ANY_AUDIENCE  # the federation does not allow "any"
    control, bad = tokens(lab, defect)
    ok, why = AT[endpoint](lab, control)
    assert ok, f"positive control refused at {endpoint}: {why}"
    ok, why = AT[endpoint](lab, bad)
    print(f"\n  {endpoint} / {defect}: {why}")
    return ok, why


@pytest.mark.parametrize(("endpoint", "defect"), CELLS)
def test_a_defective_token_is_refused(token_lab: TokenLab, endpoint: str, defect: str) -> None:
    ok, why = both(token_lab, endpoint, defect)
    assert not ok, f"{endpoint} accepted a token with {defect}: {why}"


@pytest.mark.parametrize(("endpoint", "defect"), sorted(XROOTD_CANNOT))
def test_xrootd_still_cannot_refuse_these(token_lab: TokenLab, endpoint: str, defect: str) -> None:
    """A known limit of scitokens-cpp, stated in docs/job-tokens.md: such a token, signed by the
    issuer's own key, is accepted by origins and caches. The issuer never signs one (its
    audiences are the federation's, its lifetime its maximum), and the ingress and the access
    points refuse it."""
    ok, why = both(token_lab, endpoint, defect)
    assert ok, f"{endpoint} now refuses {defect} ({why}): move it into CELLS, fix the docs"
