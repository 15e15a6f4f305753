"""Password-reset tokens: issue and verify the signed JWTs in a reset mail, and nothing else.

A reset token is an HMAC-signed JWT (the configured HS algorithm only) whose audience names this
one purpose, carrying a random jti and an HMAC fingerprint of the user's password state so that it
dies when the password changes by any means. The mail's "this was not me" link carries a second
token, bound to the same jti, whose audience and action allow revoking the link and nothing else:
a revoke URL left in a history or a log cannot set a password. Verification pins the algorithm,
refuses key-selecting headers (RFC 8725), and checks every time claim against the injected clock.
Recording and consuming the jti (single use) is the caller's job.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import jwt

from portal.clock import Clock
from portal.config import ResetPasswordConfig
from portal.errors import InvalidTokenError

AUDIENCE: Final = "portal:reset-password"
ACTION: Final = "ResetPassword"
REVOKE_AUDIENCE: Final = "portal:revoke-reset-password"
REVOKE_ACTION: Final = "RevokeResetPassword"

MAX_TOKEN_LENGTH: Final = 4096
JTI_BYTES: Final = 16  # 128 bits
MAX_NUMERIC_DATE: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
REQUIRED_CLAIMS: Final = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "action", "pwd")
REVOKE_CLAIMS: Final = REQUIRED_CLAIMS[:-1]
# SECURITY: an allow-list; kid, jku, jwk, x5u, x5c, x5t, crit, b64 ... would let the token steer
# how it is verified (RFC 8725 section 3.10).
ALLOWED_HEADERS: Final = frozenset({"alg", "typ"})
FINGERPRINT_KEY_LABEL: Final = b"portal reset fingerprint v1"

_JTI_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{22,128}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class ResetClaims:
    """Hold the verified claims of a reset token."""

    username: str
    jti: str
    issued_at: float
    expires_at: float
    fingerprint: str


class ResetTokens:
    """Issue and verify password-reset JWTs with the configured secret and algorithm."""

    def __init__(
        self,
        config: ResetPasswordConfig,
        *,
        issuer: str,
        clock: Clock,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        """Prepare the keys (the configuration already holds the secret to RFC 7518's length)."""
        self._algorithm = config.jwt_algorithm
        self._secret = config.jwt_secret.get_secret_value().encode("utf-8")
        # SECURITY: a sub-key for fingerprints, so they are never computed with the signing key.
        self._fingerprint_key = hmac.new(
            self._secret, FINGERPRINT_KEY_LABEL, hashlib.sha256
        ).digest()
        self._lifespan = math.ceil(config.jwt_lifespan.total_seconds())
        self._issuer = issuer
        self._clock = clock
        self._random_bytes = random_bytes

    def issue(self, username: str, password_state: str) -> tuple[str, ResetClaims]:
        """Sign a token for the user's current password state; return it with its claims."""
        issued_at = math.floor(self._clock.now())
        expires_at = issued_at + self._lifespan
        # SECURITY: 128 random bits make the jti unguessable and unique.
        jti = _b64url(self._random_bytes(JTI_BYTES))
        fingerprint = self.fingerprint(username, password_state)
        claims = ResetClaims(username, jti, float(issued_at), float(expires_at), fingerprint)
        return self._sign(claims, AUDIENCE, ACTION, pwd=fingerprint), claims

    def revocation(self, claims: ResetClaims) -> str:
        """Sign the revoke-only token for a reset token's claims (same sub, jti and times)."""
        return self._sign(claims, REVOKE_AUDIENCE, REVOKE_ACTION)

    def _sign(self, claims: ResetClaims, audience: str, action: str, **extra: str) -> str:
        """Sign the claims for one purpose (its audience and action), plus any extra claims."""
        issued_at = int(claims.issued_at)
        payload = {
            "iss": self._issuer,
            "aud": audience,
            "sub": claims.username,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": int(claims.expires_at),
            "jti": claims.jti,
            "action": action,
            **extra,
        }
        return jwt.encode(payload, self._secret, algorithm=self._algorithm)

    def verify(self, token: str, *, revoking: bool = False) -> ResetClaims:
        """Return the claims of a valid, current token; raise InvalidTokenError otherwise.

        Only a reset token is accepted, unless revoking: then a revoke token is accepted too
        (its claims carry an empty fingerprint, which matches no password state).
        """
        if not isinstance(token, str):
            raise InvalidTokenError("malformed")
        # SECURITY: bound the work an unauthenticated request can cause before the signature.
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidTokenError("too_long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.exceptions.DecodeError:
            raise InvalidTokenError("malformed") from None
        except jwt.exceptions.InvalidTokenError:  # PyJWT refused a crit or kid it cannot honour
            raise InvalidTokenError("header") from None
        except (jwt.exceptions.PyJWTError, ValueError, TypeError):
            raise InvalidTokenError("malformed") from None
        if not ALLOWED_HEADERS.issuperset(header) or header.get("typ", "JWT") != "JWT":
            raise InvalidTokenError("header")
        # SECURITY: pin the algorithm (RFC 8725 section 2.1): never let the token choose it.
        if header.get("alg") != self._algorithm:
            raise InvalidTokenError("algorithm")
        payload = self._decode(token, revoking=revoking)
        claims = self._claims_from(payload)
        now = self._clock.now()
        # SECURITY: time is checked here against the injected clock, with zero leeway.
        if claims.expires_at <= now:
            raise InvalidTokenError("expired")
        if payload["nbf"] > now or claims.issued_at > now:
            raise InvalidTokenError("not_yet_valid")
        return claims

    def fingerprint(self, username: str, password_state: str) -> str:
        """Return the HMAC of the user's password state that a token carries as its `pwd` claim."""
        if "\0" in username:
            raise ValueError("a username cannot contain NUL")
        message = f"{username}\0{password_state}".encode()
        # SECURITY: an HMAC, never the hash itself, so the token reveals nothing about the
        # password hash and cannot be forged without the secret.
        return _b64url(hmac.new(self._fingerprint_key, message, hashlib.sha256).digest())

    def fingerprint_matches(self, claims: ResetClaims, password_state: str | None) -> bool:
        """Tell whether the token was issued for this password state (False when there is none)."""
        # SECURITY: compute and compare even without a state, in constant time, so the answer
        # takes the same time whatever the user.
        expected = self.fingerprint(claims.username, password_state or "")
        same = hmac.compare_digest(expected.encode(), claims.fingerprint.encode())
        return same and password_state is not None

    @staticmethod
    def jti_hash(jti: str) -> str:
        """Return a short SHA-256 hex digest of a jti, to log instead of the jti or the token."""
        return hashlib.sha256(jti.encode()).hexdigest()[:16]

    def _decode(self, token: str, *, revoking: bool) -> dict[str, Any]:
        """Check the signature, audience, issuer and presence of every claim."""
        # SECURITY: each purpose is its own audience with its own required claims; a revoke
        # token is tried only where revoking is what the caller does.
        if revoking:
            try:
                payload = jwt.decode(token, options={"verify_signature": False})
            except (jwt.exceptions.PyJWTError, ValueError, TypeError):
                raise InvalidTokenError("malformed") from None
            if isinstance(payload, dict) and payload.get("aud") == REVOKE_AUDIENCE:
                return self._decode_as(token, REVOKE_AUDIENCE, REVOKE_CLAIMS)
        return self._decode_as(token, AUDIENCE, REQUIRED_CLAIMS)

    def _decode_as(self, token: str, audience: str, required: tuple[str, ...]) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                self._secret,
                algorithms=[self._algorithm],
                audience=audience,
                issuer=self._issuer,
                options={
                    "require": list(required),
                    "strict_aud": True,
                    # PyJWT reads the wall clock; verify() checks time against self._clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.exceptions.InvalidSignatureError:
            raise InvalidTokenError("signature") from None
        except jwt.exceptions.InvalidAlgorithmError:
            raise InvalidTokenError("algorithm") from None
        except jwt.exceptions.InvalidAudienceError:
            raise InvalidTokenError("audience") from None
        except jwt.exceptions.InvalidIssuerError:
            raise InvalidTokenError("issuer") from None
        except (
            jwt.exceptions.MissingRequiredClaimError,
            jwt.exceptions.InvalidSubjectError,
            jwt.exceptions.InvalidJTIError,
            jwt.exceptions.InvalidIssuedAtError,
        ):
            raise InvalidTokenError("claims") from None
        except (jwt.exceptions.PyJWTError, ValueError, TypeError):
            raise InvalidTokenError("malformed") from None

    def _claims_from(self, payload: dict[str, Any]) -> ResetClaims:
        """Check each claim's type and the action; build ResetClaims."""
        revoke = payload["aud"] == REVOKE_AUDIENCE
        sub, jti, pwd = payload["sub"], payload["jti"], "" if revoke else payload["pwd"]
        times = (payload["iat"], payload["nbf"], payload["exp"])
        if (
            not isinstance(sub, str)
            or not sub
            or "\0" in sub
            or not isinstance(jti, str)
            or not _JTI_PATTERN.fullmatch(jti)
            or not isinstance(pwd, str)
            or (not pwd and not revoke)
            or not isinstance(payload["action"], str)
            # bool is an int in Python; JSON true is not a time. SECURITY: a time past year 9999
            # (or before 1970) is no time; 10**400 would overflow a float (RFC 7519 NumericDate).
            or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= MAX_NUMERIC_DATE
                for t in times
            )
        ):
            raise InvalidTokenError("claims")
        if payload["action"] != (REVOKE_ACTION if revoke else ACTION):
            raise InvalidTokenError("action")
        return ResetClaims(sub, jti, float(payload["iat"]), float(payload["exp"]), pwd)
