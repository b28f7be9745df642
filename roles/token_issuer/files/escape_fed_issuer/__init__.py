"""The escape-fed lab OIDC/OAuth2 token issuer (WLCG token profile, RFC 9068 JWT access tokens).

It exists so that every token path of the federation is tested for real in the lab; production
points ``iam.issuer`` at a real INDIGO IAM and does not deploy it.
"""
