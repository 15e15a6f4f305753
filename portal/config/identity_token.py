"""`identity_token`: a signed JWT naming the signed-in user, for the apps behind nginx.

A portal key (Authelia sends unsigned `Remote-*` headers only). Every 200 of the auth_request
endpoint carries `header` with a JWT signed by the first of `keys` (or, when `keys` is empty, by
a key the portal generates, keeps encrypted in its storage and replaces every `rotation`); the
public keys are published at /.well-known/jwks.json. A site listed in `applications` gets a
token signed instead with its own shared secret (HS256/384/512). Key names follow Authelia's
`identity_providers.oidc.jwks` (`key_id`, `key`). Duration syntax as everywhere (types.py).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import SecretStr, field_validator, model_validator

from portal.config.types import Duration, Model

Algorithm = Literal["ES256", "RS256", "EdDSA"]
HmacAlgorithm = Literal["HS256", "HS384", "HS512"]
# RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
HMAC_SECRET_MINIMUM = {"HS256": 32, "HS384": 48, "HS512": 64}
RSA_BITS_MINIMUM = 2048  # RFC 7518 section 3.3
_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_KEY_ID = re.compile(r"[A-Za-z0-9._~-]{1,100}")
# Headers that frame or route a message, which the token may not replace: hop-by-hop ones
# (RFC 9110 section 7.6.1), the body's framing (8.6, RFC 9112 section 6.1), Host, the 401's
# Location nginx follows (portal-authrequest.conf), and cookies.
_RESERVED_HEADERS = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-type",
        "content-encoding",
        "host",
        "location",
        "cookie",
        "set-cookie",
    }
)


def key_problem(pem: str, algorithm: str) -> str | None:
    """Say why `pem` is not a private key for `algorithm` (None when it is), quoting no part.

    ES256: an EC key on P-256 (RFC 7518 section 3.4); RS256: RSA of 2048 bits or more (3.3);
    EdDSA: Ed25519 (RFC 8037). Encrypted PEM is not supported (no passphrase key).
    """
    try:
        key = load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError):
        # SECURITY: cryptography's message may quote the input; say nothing of it.
        return "is not an unencrypted PEM private key"
    except Exception:  # noqa: BLE001 - an unsupported key type raises UnsupportedAlgorithm
        return "is not a supported PEM private key"
    if algorithm == "ES256":
        if not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"):
            return "must be an EC P-256 private key for algorithm ES256"
    elif algorithm == "RS256":
        if not isinstance(key, rsa.RSAPrivateKey):
            return "must be an RSA private key for algorithm RS256"
        if key.key_size < RSA_BITS_MINIMUM:
            return f"must be an RSA key of {RSA_BITS_MINIMUM} bits or more, not {key.key_size}"
    elif not isinstance(key, ed25519.Ed25519PrivateKey):
        return "must be an Ed25519 private key for algorithm EdDSA"
    return None


class IdentityTokenKey(Model):
    """One configured signing key: its id (the JWT header's `kid`) and PEM private key."""

    key_id: str
    # SECURITY: a private key; also from PORTAL_IDENTITY_TOKEN_KEYS_<n>_KEY_FILE.
    key: SecretStr

    @field_validator("key_id")
    @classmethod
    def _key_id(cls, value: str) -> str:
        if not _KEY_ID.fullmatch(value):
            raise ValueError("must be 1 to 100 letters, digits or . _ ~ -")
        return value


class IdentityTokenApplication(Model):
    """A site whose tokens are signed with its own shared secret (an app that cannot fetch keys).

    `domain` reads as access_control's (one name or a list; `*.example.com`, `{user}...`).
    """

    domain: tuple[str, ...]
    algorithm: HmacAlgorithm = "HS256"
    # SECURITY: the app's shared secret; also from
    # PORTAL_IDENTITY_TOKEN_APPLICATIONS_<n>_SECRET_FILE.
    secret: SecretStr

    @field_validator("domain", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("domain")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        domains = tuple(d.strip().lower() for d in value)
        if not domains or not all(domains):
            raise ValueError("must name at least one domain")
        return domains

    @model_validator(mode="after")
    def _secret_long_enough(self) -> IdentityTokenApplication:
        minimum = HMAC_SECRET_MINIMUM[self.algorithm]
        if len(self.secret.get_secret_value().encode("utf-8")) < minimum:
            raise ValueError(
                f"secret: must be at least {minimum} bytes for {self.algorithm} "
                "(RFC 7518 section 3.2); generate one with 'portal crypto rand'"
            )
        return self


class IdentityTokenConfig(Model):
    """The signed identity token sent to protected apps (a portal key; see the module)."""

    enabled: bool = False
    header: str = "Remote-JWT"
    algorithm: Algorithm = "ES256"
    lifespan: Duration = timedelta(minutes=5)
    keys: tuple[IdentityTokenKey, ...] = ()
    rotation: Duration = timedelta(days=30)
    applications: tuple[IdentityTokenApplication, ...] = ()

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER.fullmatch(value):
            raise ValueError("must be an HTTP header name (letters, digits and '-')")
        if value.lower() in ("remote-user", "remote-groups", "remote-name", "remote-email"):
            raise ValueError(f"{value} is already one of the Remote-* headers")
        if value.lower() in _RESERVED_HEADERS:
            raise ValueError(
                f"{value} frames or routes HTTP messages; choose another name such as Remote-JWT"
            )
        return value

    @field_validator("lifespan")
    @classmethod
    def _lifespan(cls, value: timedelta) -> timedelta:
        # A portal bound: a token is re-sent on every request, so a long one buys nothing and
        # keeps a stolen token usable.
        if not timedelta(seconds=30) <= value <= timedelta(hours=1):
            raise ValueError("must be between 30 seconds and 1 hour")
        return value

    @field_validator("rotation")
    @classmethod
    def _rotation(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1):
            raise ValueError("must be 1 hour or more")
        return value

    @model_validator(mode="after")
    def _keys_match(self) -> IdentityTokenConfig:
        problems = []
        seen: set[str] = set()
        for index, key in enumerate(self.keys):
            if key.key_id in seen:
                problems.append(f"keys[{index}].key_id: {key.key_id!r} is used twice")
            seen.add(key.key_id)
            problem = key_problem(key.key.get_secret_value(), self.algorithm)
            if problem is not None:
                problems.append(f"keys[{index}].key: {problem}")
        if problems:
            raise ValueError("; ".join(problems))
        return self
