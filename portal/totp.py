"""Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP), computed by pyotp.

A secret is random bytes (`new_secret`); authenticator apps receive it base32-encoded inside an
otpauth:// URL (Google Authenticator's Key Uri Format, `otpauth_url`). A code is checked with
`matching_step`, which says which time step (RFC 6238's counter T = floor(unix time / period))
within ±skew the code belongs to, so the caller can refuse a step already used (replay). Pure
functions: time is passed in, nothing is stored or logged here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any, Literal

import pyotp

Algorithm = Literal["SHA1", "SHA256", "SHA512"]
_DIGESTS: dict[str, Any] = {
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
}


@dataclass(frozen=True)
class TotpParameters:
    """How codes are computed for one registration (Authelia saves the same three with it).

    algorithm: the HMAC hash (RFC 6238 section 1.2: SHA1, SHA256 or SHA512); digits: 6 or 8;
    period: seconds per time step (RFC 6238's X, 30 by default).
    """

    algorithm: Algorithm = "SHA1"
    digits: int = 6
    period: int = 30


def new_secret(size: int) -> bytes:
    """Return `size` random bytes from the operating system's CSPRNG (RFC 4226 section 4, R6)."""
    if size < 1:
        raise ValueError("size must be positive")
    return os.urandom(size)


def secret_base32(secret: bytes) -> str:
    """Return the secret as authenticator apps take it: RFC 4648 base32, without padding."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def _totp(secret: bytes, params: TotpParameters) -> pyotp.TOTP:
    return pyotp.TOTP(
        secret_base32(secret),
        digits=params.digits,
        digest=_DIGESTS[params.algorithm],
        interval=params.period,
    )


def code_at(secret: bytes, params: TotpParameters, at: float) -> str:
    """Return the code for the time step holding `at` (Unix seconds): for tests and tooling."""
    return _totp(secret, params).generate_otp(time_step(params, at))


def time_step(params: TotpParameters, at: float) -> int:
    """Return RFC 6238's counter T for Unix time `at`: floor(at / period)."""
    return int(at // params.period)


def otpauth_url(secret: bytes, params: TotpParameters, issuer: str, account: str) -> str:
    """Return the otpauth://totp/ URL a QR code carries (Key Uri Format, via pyotp).

    The label is "issuer:account"; the query carries secret (base32), issuer, algorithm,
    digits and period, the last three always (pyotp leaves out the apps' defaults SHA1, 6 and
    30; Authelia writes them all, and some apps misread a URL without them).
    """
    url = _totp(secret, params).provisioning_uri(name=account, issuer_name=issuer)
    for key, value in (
        ("algorithm", params.algorithm),
        ("digits", str(params.digits)),
        ("period", str(params.period)),
    ):
        if f"&{key}=" not in url:
            url += f"&{key}={value}"
    return url


def matching_step(
    secret: bytes, params: TotpParameters, code: str, *, at: float, skew: int
) -> int | None:
    """Return the time step within ±skew of `at` whose code equals `code`, or None.

    `code` must be exactly `params.digits` ASCII digits, else None. Every candidate step is
    computed and compared with hmac.compare_digest, without stopping at the first match, so
    the time taken does not tell which step matched or whether any did. `skew` is in steps
    (Authelia's totp.skew); steps before 0 are never candidates.
    """
    if len(code) != params.digits or not (code.isascii() and code.isdigit()):
        return None
    totp = _totp(secret, params)
    current = time_step(params, at)
    found: int | None = None
    for step in range(current - skew, current + skew + 1):
        if step < 0:
            continue
        # SECURITY: constant-time comparison of every candidate (no early exit).
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()) and found is None:
            found = step
    return found
