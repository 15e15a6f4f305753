"""ALTCHA's self-hosted proof of work: signed, expiring challenges, each solution taken once."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
from typing import Any

import altcha

from portal.captcha.base import MAX_SOLUTION
from portal.clock import Clock
from portal.config import AltchaConfig
from portal.storage.base import RateLimitStore

# One logger for every CAPTCHA provider: admins filter on "portal.captcha".
log = logging.getLogger("portal.captcha")

_EXPIRES = re.compile(r"[0-9]{1,12}")


def altcha_keys(config: AltchaConfig, jwt_secret: str) -> tuple[bytes, bytes]:
    """Return the keys that sign challenges and derived keys (from hmac_key or the JWT secret)."""
    if config.hmac_key is not None:
        root = config.hmac_key.get_secret_value().encode()
    else:
        # SECURITY: a key of its own, derived with a fixed label; the JWT secret itself never
        # signs anything but reset links.
        root = hmac.new(jwt_secret.encode(), b"portal altcha v1", hashlib.sha256).digest()
    sign = hmac.new(root, b"challenge", hashlib.sha256).digest()
    derived = hmac.new(root, b"derived key", hashlib.sha256).digest()
    return sign, derived


class AltchaCaptcha:
    """Issue signed, expiring proof-of-work challenges and accept each solution once."""

    provider = "altcha"
    field = "captcha"

    def __init__(
        self,
        config: AltchaConfig,
        *,
        keys: tuple[bytes, bytes],
        storage: RateLimitStore,
        clock: Clock,
    ) -> None:
        self._config = config
        self._sign_key, self._derived_key = keys
        self._storage = storage
        self._clock = clock
        self._lifetime = config.expiration.total_seconds()

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    def _create(self, expires: int) -> dict[str, Any]:
        low = max(0, self._config.max_number // 2)
        # SECURITY: the server picks the counter, so the work is known; the browser only sees
        # half of the key it leads to, and the signed HMAC of the whole key.
        counter = low + secrets.randbelow(self._config.max_number - low + 1)
        challenge = altcha.create_challenge(
            self._config.algorithm,
            self._config.cost,
            counter=counter,
            # The expiry goes into the signed data, checked against the injected clock: the
            # library's own expiresAt would be checked against the wall clock.
            data={"expires": str(expires)},
            hmac_secret=self._sign_key,
            hmac_key_secret=self._derived_key,
        )
        return challenge.to_dict()

    async def challenge(self) -> dict[str, Any]:
        """Return a fresh signed challenge (the key derivation runs in a worker thread)."""
        expires = int(self._clock.now() + self._lifetime)
        return await asyncio.to_thread(self._create, expires)

    async def verify(self, solution: str, ip: str) -> bool:
        """Accept a solved, unexpired challenge of ours, once."""
        payload = _parse_payload(solution)
        if payload is None:
            log.info("captcha refused: unreadable payload", extra={"fields": {"ip": ip}})
            return False
        # A challenge we signed always carries the derived key's HMAC: verification is two
        # HMACs, never a key derivation an attacker could make us run.
        if not payload.challenge.parameters.key_signature:
            return False
        try:
            result = altcha.verify_solution(
                payload, self._sign_key, hmac_key_secret=self._derived_key
            )
        except (ValueError, TypeError, OverflowError, RecursionError):
            # Odd values in fields the library serializes for the signature check.
            log.info("captcha refused: malformed challenge", extra={"fields": {"ip": ip}})
            return False
        if not result.verified:
            why = "signature" if result.invalid_signature else "solution"
            log.info("captcha refused: bad %s", why, extra={"fields": {"ip": ip}})
            return False
        data = payload.challenge.parameters.data
        expires = data.get("expires") if isinstance(data, dict) else None
        now = self._clock.now()
        # ASCII digits only, bounded: str.isdigit() takes "²", and int() refuses 4,301 digits.
        if not isinstance(expires, str) or not _EXPIRES.fullmatch(expires) or int(expires) < now:
            log.info("captcha refused: expired", extra={"fields": {"ip": ip}})
            return False
        # SECURITY: accepted once. The signature names the challenge; a second event under its
        # key within the challenge's lifetime is a replay.
        key = f"captcha-used:{payload.challenge.signature}"
        events = await self._storage.rate_limit_hit(key, at=now, keep_for=self._lifetime + 1)
        if len(events) > 1:
            log.info("captcha refused: replayed", extra={"fields": {"ip": ip}})
            return False
        return True


def _parse_payload(solution: str) -> altcha.Payload | None:
    if len(solution) > MAX_SOLUTION:
        return None
    try:
        raw = json.loads(base64.b64decode(solution, validate=True))
        payload = altcha.Payload.from_dict(raw)
        parameters = payload.challenge.parameters
        # Shapes the library would trip over later (hex strings, a plain counter).
        bytes.fromhex(parameters.nonce)
        bytes.fromhex(parameters.salt)
        if not isinstance(payload.solution.derived_key, str):
            return None
        if not isinstance(payload.challenge.signature, str):
            return None
    except (ValueError, binascii.Error, KeyError, TypeError, AttributeError, RecursionError):
        return None
    return payload
