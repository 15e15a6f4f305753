"""`trusted_issuers`: partners whose signed tokens (JWTs) may sign their users in.

A portal key; Authelia has none (oauth2-proxy's `extra_jwt_issuers` and authentik's federated
JWTs are the nearest). Each partner is pinned: its exact `iss`, the audience its tokens name,
the algorithms it signs with, and its keys (a shared secret for HS256/384/512, or public keys in
PEM or at a `jwks_url` for RS256/ES256/EdDSA; never both kinds: RFC 8725 section 2.1, algorithm
confusion). portal/partner_tokens.py verifies the tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import Field, SecretStr, field_validator, model_validator

from portal.config.types import Duration, Model, is_loopback_host

PartnerAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"]
# RFC 7518 section 3.2: an HMAC key at least as long as the hash's output.
SECRET_BYTES: dict[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_RSA_BITS = 2048  # RFC 7518 section 3.3


def key_fits(key: object, algorithm: str) -> bool:
    """Tell whether a public key can verify tokens of algorithm (RS256, ES256 or EdDSA)."""
    if algorithm == "RS256":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    if algorithm == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


class TrustedIssuerConfig(Model):
    """One partner whose signed tokens open a one-factor session (`trusted_issuers[i]`)."""

    # Shown on the confirmation page and written in the audit events.
    name: str = Field(min_length=1, max_length=100)
    # The exact `iss` its tokens carry (compared as strings, RFC 7519 section 4.1.1).
    issuer: str = Field(min_length=1, max_length=1024)
    # The `aud` its tokens must name; None: the portal's own authelia_url.
    audience: str | None = Field(default=None, min_length=1, max_length=1024)
    algorithms: tuple[PartnerAlgorithm, ...] = Field(min_length=1)
    secret: SecretStr | None = None
    public_keys: tuple[str, ...] = ()
    jwks_url: str | None = None
    username_claim: Literal["sub", "email"] = "sub"
    max_lifespan: Duration = timedelta(minutes=2)
    # Only users in one of these groups may come in this way; empty: every user.
    allowed_groups: tuple[str, ...] = ()

    @field_validator("max_lifespan")
    @classmethod
    def _lifespan(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=10) <= value <= timedelta(hours=1):
            raise ValueError("must be between 10 seconds and 1 hour (sign-in tokens are short)")
        return value

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute URL such as 'https://partner.example.com/jwks'")
        # SECURITY: keys fetched over plain http could be swapped in transit.
        if parts.scheme != "https" and not is_loopback_host(parts.hostname):
            raise ValueError("must use https (plain http is only allowed for a loopback host)")
        return value

    @model_validator(mode="after")
    def _keys_match_the_algorithms(self) -> TrustedIssuerConfig:
        shared = [a for a in self.algorithms if a in SECRET_BYTES]
        public = [a for a in self.algorithms if a not in SECRET_BYTES]
        if shared and public:
            # SECURITY: RFC 8725 section 2.1: a public key used as an HMAC secret forges tokens.
            raise ValueError(
                "algorithms mixes shared-secret (HS*) and public-key algorithms; pin one kind "
                "per issuer (algorithm confusion, RFC 8725 section 2.1)"
            )
        if shared:
            self._check_secret(shared)
        else:
            self._check_public_keys(public)
        return self

    def _check_secret(self, algorithms: Sequence[str]) -> None:
        if self.public_keys or self.jwks_url:
            raise ValueError("HS algorithms take a secret, not public_keys or jwks_url")
        if self.secret is None:
            raise ValueError("secret is required with HS algorithms (generate: portal crypto rand)")
        needed = max(SECRET_BYTES[a] for a in algorithms)
        if len(self.secret.get_secret_value().encode()) < needed:
            raise ValueError(f"secret must be at least {needed} bytes for {', '.join(algorithms)}")

    def _check_public_keys(self, algorithms: Sequence[str]) -> None:
        if self.secret is not None:
            raise ValueError(f"{', '.join(algorithms)} take public_keys or jwks_url, not secret")
        if bool(self.public_keys) == bool(self.jwks_url):
            raise ValueError(f"{', '.join(algorithms)} need public_keys or jwks_url (one of them)")
        for index, pem in enumerate(self.public_keys):
            try:
                key = load_pem_public_key(pem.encode())
            except (ValueError, TypeError):
                raise ValueError(f"public_keys[{index}] is not a PEM public key") from None
            if not any(key_fits(key, a) for a in algorithms):
                raise ValueError(
                    f"public_keys[{index}] fits none of {', '.join(algorithms)} (RS256: RSA of "
                    "2048 bits or more; ES256: EC P-256; EdDSA: Ed25519 or Ed448)"
                )


def check_trusted_issuers(
    issuers: tuple[TrustedIssuerConfig, ...],
) -> tuple[TrustedIssuerConfig, ...]:
    """Refuse two partners with one name or one issuer (a token must pick exactly one)."""
    for what in ("name", "issuer"):
        values = [getattr(i, what) for i in issuers]
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"two partners have the same {what}: {', '.join(twice)}")
    return issuers
