"""Partner sign-in tokens (trusted_issuers): verify a JWT a partner signed, and use its jti once.

The token's unverified `iss` only picks the partner, whose pinned algorithms and keys then
verify it (RFC 8725 sections 2.1 and 3.1): `alg: none`, an algorithm not pinned for that partner,
headers that would steer verification (`jku`, `x5u`, `jwk`, `x5c`, `crit`; RFC 8725 section
3.10), a `typ` naming another kind of token than a plain JWT (RFC 8725 section 3.11) and a `kid`
outside the partner's key set are refused before any key is used. Claims:
`iss`, `aud`, `iat`, `exp`, `jti` and the partner's username claim are required; time is checked
against the injected clock with LEEWAY seconds, and `exp - iat` may not exceed max_lifespan.
Every refusal is one PartnerTokenRejectedError whose reason only the log and the audit see.

A partner's `jwks_url` is fetched with aiohttp (JWKS_TIMEOUT, JWKS_MAX_BYTES), kept JWKS_TTL
seconds, and fetched again at most every JWKS_RETRY seconds when a token names an unknown kid or
a fetch failed. The jti is claimed through the rate-limit store (as WebAuthnService.claim): the
first claim, on any replica, sees exactly one event; no table of its own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import aiohttp
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from portal.clock import Clock
from portal.config import Config, TrustedIssuerConfig
from portal.config.trusted_issuers import SECRET_BYTES, key_fits
from portal.errors import PartnerTokenReason, PartnerTokenRejectedError
from portal.storage.base import RateLimitStore

log = logging.getLogger("portal.partner_tokens")

MAX_TOKEN_LENGTH: Final = 8192  # 8 KiB: a sign-in token is a few hundred bytes
LEEWAY: Final = 10.0  # seconds of clock difference allowed on exp, iat and nbf
MAX_NUMERIC_DATE: Final = 253_402_300_799  # 9999-12-31T23:59:59Z (RFC 7519 NumericDate)
MAX_CLAIM_LENGTH: Final = 256  # jti and the username claim
JWKS_TTL: Final = 600.0
JWKS_RETRY: Final = 60.0
# While the jwks_url fails, keys fetched before stay in use this long, then tokens are refused.
JWKS_MAX_STALE: Final = 86400.0
JWKS_TIMEOUT: Final = 5.0
JWKS_MAX_BYTES: Final = 64 * 1024
# SECURITY: headers that would let the token choose its own key or rules (RFC 8725 section 3.10).
# b64 (RFC 7797) changes what the signature covers.
FORBIDDEN_HEADERS: Final = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64"})
_TOKEN_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# Fetch a JWKS document: (url) -> its parsed JSON; raises on any failure.
JwksFetcher = Callable[[str], Awaitable[Any]]


def _refuse(reason: PartnerTokenReason) -> NoReturn:
    raise PartnerTokenRejectedError(reason)


@dataclass(frozen=True)
class PartnerToken:
    """A verified partner token: who signed it, whom it names (`subject`: the value of the
    partner's username_claim), its jti and when it expires (seconds since the epoch)."""

    partner: TrustedIssuerConfig
    subject: str
    jti: str
    expires_at: float

    @property
    def claim_key(self) -> str:
        """Return the rate-limit store key that records this token's use."""
        digest = hashlib.sha256(f"{self.partner.issuer}\0{self.jti}".encode()).hexdigest()
        return f"sso-jti:{digest}"


async def fetch_jwks(url: str) -> Any:
    """GET a JWKS (RFC 7517 section 5) and return its JSON: no redirects, JWKS_TIMEOUT seconds,
    at most JWKS_MAX_BYTES. Raises ValueError (also for JSON nested too deep to parse),
    aiohttp.ClientError or TimeoutError."""
    timeout = aiohttp.ClientTimeout(total=JWKS_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(
            url,
            allow_redirects=False,
            # SECURITY: no compression, so the size cap is the size received (no zip bomb).
            headers={
                "Accept": "application/jwk-set+json, application/json",
                "Accept-Encoding": "identity",
            },
        ) as response,
    ):
        if response.status != 200:
            raise ValueError(f"answered HTTP {response.status}")
        body = bytearray()
        async for chunk in response.content.iter_chunked(16384):
            body += chunk
            if len(body) > JWKS_MAX_BYTES:
                raise ValueError(f"the document is over {JWKS_MAX_BYTES} bytes")
        try:
            return json.loads(body)
        except RecursionError:
            # Arrays nested thousands deep fit under the cap; Python's parser gives up on them.
            raise ValueError("the document is nested too deeply") from None


def _jwk_keys(document: Any) -> list[jwt.PyJWK]:
    """Return the signing keys of a JWKS document; raise ValueError when it holds none."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set (no 'keys' list)")
    keys = []
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            keys.append(jwt.PyJWK.from_dict(entry))
        # NotImplementedError: PyJWT's answer to `"alg": "none"` in a key.
        except (jwt.exceptions.PyJWTError, ValueError, TypeError, KeyError, NotImplementedError):
            continue  # a key of a type the portal does not verify with: skipped, as RFC 7517 5
    if not keys:
        raise ValueError("the JWK Set holds no usable signing key")
    return keys


class JwksKeys:
    """One partner's keys from its jwks_url, cached and fetched again sparingly."""

    def __init__(
        self, partner: TrustedIssuerConfig, url: str, clock: Clock, fetch: JwksFetcher
    ) -> None:
        self._partner = partner
        self._url = url
        self._clock = clock
        self._fetch = fetch
        self._keys: list[jwt.PyJWK] | None = None
        self._fetched_at = 0.0
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()

    async def keys(self, kid: str | None) -> list[jwt.PyJWK]:
        """Return the cached keys (those with `kid` when given), fetching first when they are
        older than JWKS_TTL or `kid` is unknown, at most once per JWKS_RETRY. Refuses with
        "keys_unavailable" when no fetch succeeded in JWKS_MAX_STALE, "kid" when no key has
        that kid."""
        now = self._clock.now()
        stale = self._keys is None or now - self._fetched_at >= JWKS_TTL
        unknown = kid is not None and not self._with_kid(kid)
        if (stale or unknown) and self._may_try(now):
            async with self._lock:
                if self._may_try(self._clock.now()):
                    await self._refresh()
        if self._keys is None or self._clock.now() - self._fetched_at > JWKS_MAX_STALE:
            _refuse("keys_unavailable")
        if kid is None:
            return self._keys
        return self._with_kid(kid) or _refuse("kid")

    def _with_kid(self, kid: str) -> list[jwt.PyJWK]:
        return [k for k in self._keys or () if k.key_id == kid]

    def _may_try(self, now: float) -> bool:
        return self._tried_at is None or now - self._tried_at >= JWKS_RETRY

    async def _refresh(self) -> None:
        self._tried_at = self._clock.now()
        try:
            self._keys = _jwk_keys(await self._fetch(self._url))
            self._fetched_at = self._clock.now()
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
            # Keys fetched before stay in use; the partner's URL is configuration, not a secret.
            log.warning(
                "trusted_issuers: %s: cannot fetch jwks_url %s: %s",
                self._partner.name,
                self._url,
                str(exc) or type(exc).__name__,
            )


def _thumbprint(key: Any) -> str:
    """Return a public key's RFC 7638 JWK thumbprint (base64url SHA-256), its kid here."""
    jwk = json.loads(_to_jwk(key))
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
    canonical = {m: jwk[m] for m in members[jwk["kty"]]}
    text = json.dumps(canonical, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(text.encode()).digest()
    return jwt.utils.base64url_encode(digest).decode()


def _to_jwk(key: Any) -> str:
    """Return a public key as JWK JSON text (PyJWT's algorithms know each key type)."""
    for algorithm in (RSAAlgorithm, ECAlgorithm, OKPAlgorithm):
        try:
            return str(algorithm.to_jwk(key))
        except (jwt.exceptions.InvalidKeyError, TypeError, AttributeError):
            continue
    raise ValueError("unsupported public key type")


def _raw_header(token: str) -> dict[str, Any]:
    """Return the token's JOSE header as sent (RFC 7515 section 4); refuse "malformed" when it
    is not base64url JSON object text (nesting too deep for the parser included)."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError, RecursionError):
        _refuse("malformed")
    if not isinstance(header, dict):
        _refuse("malformed")
    return header


class PartnerTokens:
    """Verify partner tokens against trusted_issuers and record each jti's one use."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        store: RateLimitStore,
        fetch: JwksFetcher = fetch_jwks,
    ) -> None:
        self._config = config
        self._clock = clock
        self._store = store
        self._partners = {p.issuer: p for p in config.trusted_issuers}
        self._jwks = {
            p.issuer: JwksKeys(p, p.jwks_url, clock, fetch)
            for p in config.trusted_issuers
            if p.jwks_url
        }
        # The PEM keys, parsed once, each under its RFC 7638 thumbprint (its kid).
        self._pem: dict[str, list[tuple[str, Any]]] = {}
        for partner in config.trusted_issuers:
            keys = [load_pem_public_key(pem.encode()) for pem in partner.public_keys]
            self._pem[partner.issuer] = [(_thumbprint(k), k) for k in keys]

    def partner_of(self, token: str) -> TrustedIssuerConfig | None:
        """Return the partner the token's unverified `iss` names, if any (for the audit)."""
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except (jwt.exceptions.PyJWTError, ValueError, TypeError, AttributeError):
            return None
        return self._partners.get(issuer) if isinstance(issuer, str) else None

    async def verify(self, token: str) -> PartnerToken:
        """Return the verified token or raise PartnerTokenRejectedError(reason); its jti is not
        looked at (see `used` and `claim`). Order: size and shape, header, issuer, algorithm,
        key, signature with audience and issuer, then the claims' types and times."""
        if len(token) > MAX_TOKEN_LENGTH:
            _refuse("too_long")
        if not _TOKEN_SHAPE.fullmatch(token):
            _refuse("malformed")
        header = _raw_header(token)
        # SECURITY: looked at before PyJWT reads the token, which acts on some (crit, b64).
        if FORBIDDEN_HEADERS & header.keys():
            _refuse("header")
        # SECURITY (RFC 8725 section 3.11): a token typed as another kind (an OAuth access
        # token, RFC 9068's at+jwt; a logout token) is not a sign-in token, whoever signed it.
        # Types compare without case and with "application/" optional (RFC 7515 4.1.9).
        # A `"typ": null` is a typ that is no string, not an absent one: refused too.
        if "typ" in header and (
            not isinstance(typ := header["typ"], str)
            or typ.lower().removeprefix("application/") != "jwt"
        ):
            _refuse("type")
        algorithm = header.get("alg")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.exceptions.PyJWTError, ValueError, TypeError):
            _refuse("malformed")
        if not isinstance(unverified, dict) or not isinstance(algorithm, str):
            _refuse("malformed")
        if algorithm.lower() == "none":
            _refuse("alg_none")
        issuer = unverified.get("iss")
        partner = self._partners.get(issuer) if isinstance(issuer, str) else None
        if partner is None:
            _refuse("unknown_issuer")
        # SECURITY: only the partner's pinned algorithms, whatever the header says.
        if algorithm not in partner.algorithms:
            _refuse("algorithm")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            _refuse("kid")
        keys = await self._keys(partner, algorithm, kid)
        payload = self._decode(token, partner, algorithm, keys)
        return self._claims(partner, payload)

    async def _keys(
        self, partner: TrustedIssuerConfig, algorithm: str, kid: str | None
    ) -> list[Any]:
        """Return the keys that may have signed a token of this partner, algorithm and kid."""
        if algorithm in SECRET_BYTES and partner.secret is not None:
            # One shared secret: a kid selects nothing, so it is not looked at.
            return [partner.secret.get_secret_value().encode()]
        if partner.issuer in self._jwks:
            found = [k.key for k in await self._jwks[partner.issuer].keys(kid)]
        else:
            found = [key for thumb, key in self._pem[partner.issuer] if kid in (None, thumb)]
            if not found:
                _refuse("kid")
        fitting = [k for k in found if key_fits(k, algorithm)]
        return fitting or _refuse("kid")

    def _decode(
        self, token: str, partner: TrustedIssuerConfig, algorithm: str, keys: list[Any]
    ) -> dict[str, Any]:
        required = ["iss", "aud", "iat", "exp", "jti", partner.username_claim]
        for key in keys:
            try:
                payload: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self._config.partner_audience(partner),
                    issuer=partner.issuer,
                    options={
                        "require": required,
                        # PyJWT reads the wall clock; _claims checks time against the clock.
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                    },
                )
                return payload
            except jwt.exceptions.InvalidSignatureError:
                continue  # the next key of the set may be the one
            except jwt.exceptions.InvalidAudienceError:
                _refuse("audience")
            except (
                jwt.exceptions.MissingRequiredClaimError,
                jwt.exceptions.InvalidIssuerError,
                jwt.exceptions.InvalidSubjectError,
                jwt.exceptions.InvalidJTIError,
                jwt.exceptions.InvalidIssuedAtError,
            ):
                _refuse("claims")
            except (jwt.exceptions.PyJWTError, ValueError, TypeError):
                _refuse("malformed")
        _refuse("signature")

    def _claims(self, partner: TrustedIssuerConfig, payload: dict[str, Any]) -> PartnerToken:
        subject, jti = payload[partner.username_claim], payload["jti"]
        times = [payload["iat"], payload["exp"], payload.get("nbf", 0)]
        if (
            not isinstance(subject, str)
            or not 0 < len(subject) <= MAX_CLAIM_LENGTH
            or "\0" in subject
            or not isinstance(jti, str)
            or not 0 < len(jti) <= MAX_CLAIM_LENGTH
            # bool is an int in Python; JSON true is not a time (RFC 7519 NumericDate).
            or not all(
                isinstance(t, int | float)
                and not isinstance(t, bool)
                and 0 <= t <= MAX_NUMERIC_DATE
                for t in times
            )
        ):
            _refuse("claims")
        iat, exp, nbf = (float(t) for t in times)
        now = self._clock.now()
        if exp <= now - LEEWAY:
            _refuse("expired")
        if iat > now + LEEWAY or nbf > now + LEEWAY:
            _refuse("not_yet_valid")
        # SECURITY: a long-lived token is a standing credential; the partner's link must be fresh.
        if exp - iat > partner.max_lifespan.total_seconds():
            _refuse("lifespan")
        return PartnerToken(partner, subject, jti, exp)

    def _keep_for(self, token: PartnerToken) -> float:
        # Once claimed, a token may still pass `verify` until exp + LEEWAY, and exp is at most
        # iat + max_lifespan with iat up to LEEWAY ahead of the clock.
        return token.partner.max_lifespan.total_seconds() + 2 * LEEWAY

    async def used(self, token: PartnerToken) -> bool:
        """Tell whether the token's jti was claimed already (on any replica), recording nothing."""
        since = self._clock.now() - self._keep_for(token)
        return bool(await self._store.rate_limit_events(token.claim_key, since=since))

    async def claim(self, token: PartnerToken) -> None:
        """Record the token's one use; raise PartnerTokenRejectedError("used") when any replica
        claimed its jti before (the rate-limit store's atomic hit: the first sees one event)."""
        events = await self._store.rate_limit_hit(
            token.claim_key, at=self._clock.now(), keep_for=self._keep_for(token)
        )
        if len(events) != 1:
            _refuse("used")
