"""Signed identity tokens for protected apps: who the visitor is, as a JWT the app can check.

`IdentityTokens.token(session, target, issuer)` returns the JWT the auth_request answer carries
in `identity_token.header` (portal/authz.py); `jwks()` the public keys /.well-known/jwks.json
publishes (RFC 7517). Claims: `iss` (the cookie domain's authelia_url), `aud` (the protected
site's origin, scheme://host[:port], RFC 6454), `sub`, `name`, `email` (when the user has one),
`groups`, `amr` (RFC 8176) and `auth_time` (OpenID Connect Core 1.0 section 2), `iat`, `nbf`,
`exp`, `jti` (RFC 7519 section 4.1); the header names the key (`kid`).

Keys: the configured `keys` (the first signs, all are published); else keys the portal generates
and keeps encrypted in storage (IdentityTokenKeyStore), one generation after another: a new one
every `rotation`, stored and published PUBLISH_AHEAD seconds before it signs (its created_at is
when it starts signing), the previous one published until every token it signed has expired
(successor's created_at + lifespan + LEEWAY), then purged. Replicas agree on one key per
generation through the store's atomic insert (the loser reads the winner's). A site listed in
`applications` gets a token signed with its own shared secret (HS256/384/512) instead.

The hot path costs no storage call: the signing key is in memory, and a token is reused for the
same session state and site until a fifth of its lifespan is left (a bounded LRU keyed on the
session's stored id, never the cookie).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from portal.access_control import DomainMatcher, Target
from portal.clock import Clock
from portal.config import IdentityTokenConfig
from portal.sessions import Session
from portal.storage.base import IdentityTokenKeyStore, IdentityTokenSigningKey
from portal.users.base import User

log = logging.getLogger("portal.identity_token")

# Seconds a retired key stays published beyond the last expiry of a token it signed: clock
# skew between the portal and the apps (RFC 7519 section 4.1.4 allows "some small leeway").
LEEWAY = 60.0
# A replica reads the generated keys again this often for the JWKS, so it publishes a key
# another replica made (the signing path rotates on its own schedule).
JWKS_RELOAD = 60.0
# After a failed rotation (storage unreachable), keep signing with the current key and retry.
RETRY_AFTER = 30.0
# Seconds apps may cache the key set (/.well-known/jwks.json's Cache-Control max-age); a
# verifier meeting an unknown kid fetches the set again (jose's createRemoteJWKSet and PyJWT's
# PyJWKClient do), but one that does not must already hold the next key when it starts signing.
JWKS_MAX_AGE = 300
# A generated key is stored and published this long before it signs: longer than an app's
# cached copy of the set plus a replica's reload of it, twice over.
PUBLISH_AHEAD = 2 * (JWKS_MAX_AGE + JWKS_RELOAD)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(target: Target) -> str:
    """Return the target's origin, scheme://host[:port] (RFC 6454; default ports left out)."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    port = target.port
    if port is None or port == _DEFAULT_PORTS.get(target.scheme):
        return f"{target.scheme}://{host}"
    return f"{target.scheme}://{host}:{port}"


def public_jwk(private: Any, key_id: str, algorithm: str) -> dict[str, Any]:
    """Return the public half of a private key as a JWK (RFC 7517 section 4) with kid, alg, use."""
    public = private.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    # SECURITY: only the public members; a private member (d, p, q, ...) never leaves.
    public_members = {"kty", "crv", "x", "y", "n", "e"}
    return {
        **{k: v for k, v in jwk.items() if k in public_members},
        "kid": key_id,
        "alg": algorithm,
        "use": "sig",
    }


def thumbprint(jwk: dict[str, Any]) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of a public JWK, base64url without padding."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    text = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return base64.urlsafe_b64encode(hashlib.sha256(text).digest()).decode("ascii").rstrip("=")


def generate_key(algorithm: str) -> Any:
    """Return a new private key for algorithm: P-256, RSA 2048 or Ed25519 (CPU-heavy for RSA)."""
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def _new_signing_key(algorithm: str, generation: int, now: float) -> IdentityTokenSigningKey:
    private = generate_key(algorithm)
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_id = thumbprint(public_jwk(private, "", algorithm))
    return IdentityTokenSigningKey(generation, key_id, algorithm, der, now)


@dataclass(frozen=True, slots=True)
class _Key:
    """A key in memory: what signs (private), what is published (jwk)."""

    key_id: str
    algorithm: str
    private: Any
    jwk: dict[str, Any]
    created_at: float = 0.0
    # Published until then (a retired generated key); None: published while loaded.
    until: float | None = None

    @classmethod
    def of(cls, stored: IdentityTokenSigningKey, until: float | None) -> _Key:
        private = serialization.load_der_private_key(stored.private_key, password=None)
        jwk = public_jwk(private, stored.key_id, stored.algorithm)
        return cls(stored.key_id, stored.algorithm, private, jwk, stored.created_at, until)


@dataclass(frozen=True, slots=True)
class _Application:
    matcher: DomainMatcher
    algorithm: str
    secret: bytes


class IdentityTokens:
    """Sign identity tokens for protected apps and publish their public keys.

    IdentityTokens(config, store, clock, cache_size=10_000): `config` is identity_token; `store`
    keeps the generated keys (used only when `keys` is empty). `start()` loads or makes the
    signing key (StorageError when the store fails); `token()` and `jwks()` load it on first use
    if `start()` was not called.
    """

    def __init__(
        self,
        config: IdentityTokenConfig,
        store: IdentityTokenKeyStore,
        clock: Clock,
        *,
        cache_size: int = 10_000,
    ) -> None:
        """Parse the configured keys and secrets; nothing is read from storage yet."""
        self.enabled = config.enabled
        self.header = config.header
        self._config = config
        self._store = store
        self._clock = clock
        self._lifespan = int(config.lifespan.total_seconds())
        self._rotation = config.rotation.total_seconds()
        # Reuse a token until this many seconds of its life are left (a fifth).
        self._refresh_margin = self._lifespan / 5
        self._cache: OrderedDict[tuple[Any, ...], tuple[str, float]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = asyncio.Lock()
        self._applications = tuple(
            _Application(
                DomainMatcher(app.domain),
                app.algorithm,
                app.secret.get_secret_value().encode("utf-8"),
            )
            for app in config.applications
        )
        self._keys: tuple[_Key, ...] = ()
        self._next_check = 0.0  # when the generated keys are due for rotation
        self._loaded_at = 0.0
        if config.keys:
            keys = []
            for key in config.keys:
                private = serialization.load_pem_private_key(
                    key.key.get_secret_value().encode("utf-8"), password=None
                )
                jwk = public_jwk(private, key.key_id, config.algorithm)
                keys.append(_Key(key.key_id, config.algorithm, private, jwk))
            self._keys = tuple(keys)
            self._next_check = float("inf")

    @property
    def generated(self) -> bool:
        """Tell whether the keys are the portal's own (no `keys` configured)."""
        return not self._config.keys

    async def start(self) -> None:
        """Load the generated keys, making the first (or the due next) one; StorageError."""
        if self.enabled and self.generated:
            await self._rotate(self._clock.now(), raise_errors=True)

    async def token(self, session: Session, target: Target, issuer: str) -> str:
        """Return the JWT for session's user at target's site, issued by issuer (a URL).

        Reuses a cached token for the same session state and site while more than a fifth of
        its lifespan is left. Raises StorageError only when no signing key could ever be loaded.
        """
        now = self._clock.now()
        site = origin(target)
        email = session.emails[0] if session.emails else None
        # Everything the claims are made of but the times: a change (a second factor, groups
        # read again) makes a new token at once.
        key = (
            session.id,
            site,
            issuer,
            session.level,
            session.amr,
            session.auth_time,
            session.username,
            session.display_name,
            email,
            session.groups,
        )
        cached = self._cache.get(key)
        if cached is not None and now < cached[1]:
            self._cache.move_to_end(key)
            return cached[0]
        if now >= self._next_check:
            await self._rotate(now, raise_errors=not self._keys)
        issued = int(now)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": site,
            "sub": session.username,
            "name": session.display_name,
            "groups": list(session.groups),
            "amr": list(session.amr),
            "auth_time": int(session.auth_time),
            "iat": issued,
            "nbf": issued,
            "exp": issued + self._lifespan,
            "jti": secrets.token_urlsafe(16),
        }
        if email is not None:
            claims["email"] = email
        encoded = self._sign(claims, session, target.host)
        self._cache[key] = (encoded, issued + self._lifespan - self._refresh_margin)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return encoded

    def _sign(self, claims: dict[str, Any], session: Session, host: str) -> str:
        user = User(session.username, session.display_name, session.emails, session.groups)
        for app in self._applications:
            if app.matcher.matches(host, user):
                # SECURITY: the app's own secret; no kid, so nothing points at another key.
                return jwt.encode(claims, app.secret, algorithm=app.algorithm)
        signer = self._keys[0] if self._config.keys else self._signing_key()
        return jwt.encode(
            claims, signer.private, algorithm=signer.algorithm, headers={"kid": signer.key_id}
        )

    async def jwks(self) -> dict[str, Any]:
        """Return the JWK Set of every published public key (RFC 7517 section 5)."""
        now = self._clock.now()
        if self.generated and (now >= self._next_check or now - self._loaded_at > JWKS_RELOAD):
            await self._rotate(now, raise_errors=not self._keys)
        return {"keys": [k.jwk for k in self._keys if k.until is None or now < k.until]}

    async def _rotate(self, now: float, *, raise_errors: bool) -> None:
        """Read the generated keys; add the next generation when due; keep the publishable."""
        async with self._lock:
            if self._keys and now < self._next_check and now - self._loaded_at <= JWKS_RELOAD:
                return  # another request did it while this one waited
            try:
                stored = await self._store.identity_token_keys()
                current = stored[-1] if stored else None
                algorithm = self._config.algorithm
                if current is None or current.algorithm != algorithm:
                    starts = now  # nothing to publish ahead of: it signs at once
                elif now >= current.created_at + self._rotation - PUBLISH_AHEAD:
                    # SECURITY: published now, signing only once every app can hold it.
                    starts = max(now, current.created_at + self._rotation)
                else:
                    starts = None
                if starts is not None:
                    generation = current.generation + 1 if current is not None else 1
                    new = await asyncio.to_thread(_new_signing_key, algorithm, generation, starts)
                    # False: another replica made this generation first; read theirs.
                    if await self._store.add_identity_token_key(new):
                        log.info("identity_token: new signing key %s", new.key_id)
                    stored = await self._store.identity_token_keys()
                self._keys = self._publishable(stored, now)
                oldest = min(k.generation for k in stored if k.key_id in self._key_ids())
                if oldest > stored[0].generation:
                    await self._store.purge_identity_token_keys(before_generation=oldest)
            except Exception:
                if raise_errors:
                    raise
                log.exception("identity_token: reading or rotating the signing keys failed")
                self._next_check = now + RETRY_AFTER
                return
            self._loaded_at = now
            self._next_check = stored[-1].created_at + self._rotation - PUBLISH_AHEAD

    def _signing_key(self) -> _Key:
        """Return the newest generated key whose time to sign has come (the next one is
        published ahead of it)."""
        now = self._clock.now()
        for key in reversed(self._keys):
            if key.created_at <= now:
                return key
        return self._keys[0]

    def _key_ids(self) -> set[str]:
        return {k.key_id for k in self._keys}

    def _publishable(
        self, stored: Sequence[IdentityTokenSigningKey], now: float
    ) -> tuple[_Key, ...]:
        """Keep the newest key and each older one some token it signed may still need."""
        keys = []
        for index, key in enumerate(stored):
            if index == len(stored) - 1:
                keys.append(_Key.of(key, None))
                continue
            until = stored[index + 1].created_at + self._lifespan + LEEWAY
            if now < until:
                keys.append(_Key.of(key, until))
        return tuple(keys)
