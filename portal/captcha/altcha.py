"""The anti-robot check: ALTCHA's self-hosted proof of work, or a vendor's siteverify API.

`Captcha` is the seam: `AltchaCaptcha` issues HMAC-signed, expiring challenges and accepts each
solved one once; `RemoteCaptcha` asks Turnstile, hCaptcha or reCAPTCHA and fails closed.
`CaptchaGuard` decides which forms need it (and, for sign-in, after how many failures) and
counts a failed check where the form already counts requests.
"""

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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import altcha

from portal.clock import Clock
from portal.config import AltchaConfig, CaptchaConfig, CaptchaEndpoint
from portal.errors import CaptchaFailedError, CaptchaUnavailableError, RateLimitedError
from portal.ratelimit import Bucket, RateLimiter
from portal.storage.base import Storage

log = logging.getLogger("portal.captcha")

CHALLENGE_URL = "/api/captcha/challenge"
_EXPIRES = re.compile(r"[0-9]{1,12}")
MAX_SOLUTION = 8192


class Captcha(Protocol):
    """Check a solved anti-robot challenge sent with a form."""

    provider: str
    field: str  # the form field the widget fills in

    async def verify(self, solution: str, ip: str) -> bool:
        """Return whether the solution is good; raise CaptchaUnavailableError if unknowable."""
        ...

    async def challenge(self) -> dict[str, Any]:
        """Return a fresh challenge for the widget (self-hosted providers only)."""
        ...

    async def start(self) -> None:
        """Open what the check needs (a connection pool)."""
        ...

    async def close(self) -> None:
        """Release what start opened."""
        ...


# -- ALTCHA --------------------------------------------------------------------------------------


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
        self, config: AltchaConfig, *, keys: tuple[bytes, bytes], storage: Storage, clock: Clock
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


# -- vendors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vendor:
    """What the portal needs to know about one CAPTCHA vendor."""

    field: str  # the form field the vendor's widget fills in
    verify_url: str
    script: str
    widget_class: str
    origins: tuple[str, ...]  # what the page's CSP must allow for the widget


VENDORS: Mapping[str, Vendor] = {
    "turnstile": Vendor(
        field="cf-turnstile-response",
        verify_url="https://challenges.cloudflare.com/turnstile/v0/siteverify",
        script="https://challenges.cloudflare.com/turnstile/v0/api.js",
        widget_class="cf-turnstile",
        origins=("https://challenges.cloudflare.com",),
    ),
    "hcaptcha": Vendor(
        field="h-captcha-response",
        verify_url="https://api.hcaptcha.com/siteverify",
        script="https://js.hcaptcha.com/1/api.js",
        widget_class="h-captcha",
        origins=("https://hcaptcha.com", "https://*.hcaptcha.com"),
    ),
    "recaptcha": Vendor(
        field="g-recaptcha-response",
        verify_url="https://www.google.com/recaptcha/api/siteverify",
        script="https://www.google.com/recaptcha/api.js",
        widget_class="g-recaptcha",
        origins=("https://www.google.com/recaptcha/", "https://www.gstatic.com/recaptcha/"),
    ),
}


class RemoteCaptcha:
    """Ask a vendor's siteverify endpoint; anything but a clear answer refuses the form."""

    def __init__(
        self, provider: str, *, secret_key: str, site_key: str, verify_url: str, timeout: float
    ) -> None:
        self.provider = provider
        self.vendor = VENDORS[provider]
        self.field = self.vendor.field
        self._secret_key = secret_key
        self._site_key = site_key
        self._verify_url = verify_url
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout)
        )

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def challenge(self) -> dict[str, Any]:
        """Vendors issue their own challenges."""
        raise CaptchaFailedError("This CAPTCHA provider has no challenge endpoint.")

    async def verify(self, solution: str, ip: str) -> bool:
        """POST the token to the vendor; raise CaptchaUnavailableError if it cannot tell."""
        if self._session is None:
            raise CaptchaUnavailableError()
        form = {"secret": self._secret_key, "response": solution[:MAX_SOLUTION]}
        if ip:
            form["remoteip"] = ip
        if self.provider == "hcaptcha":
            form["sitekey"] = self._site_key
        try:
            async with self._session.post(self._verify_url, data=form) as response:
                if response.status != 200:
                    raise ValueError(f"status {response.status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # SECURITY: fail closed, and log the reason without the secret or the token.
            log.warning("captcha vendor %s unusable: %s", self.provider, type(exc).__name__)
            raise CaptchaUnavailableError() from None
        if not isinstance(answer, dict) or not isinstance(answer.get("success"), bool):
            log.warning("captcha vendor %s answered without a success flag", self.provider)
            raise CaptchaUnavailableError()
        if not answer["success"]:
            codes = answer.get("error-codes")
            fields = {"ip": ip}
            log.info("captcha refused by %s: %s", self.provider, codes, extra={"fields": fields})
        return answer["success"] is True


# -- when forms need it --------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptchaWidget:
    """What a template needs to draw the widget."""

    provider: str
    field: str
    site_key: str
    challenge_url: str
    script: str
    widget_class: str


FailureCounter = Callable[[str], Awaitable[None]]
FailureCount = Callable[[str | None, str], Awaitable[int]]


class CaptchaGuard:
    """Say which forms need the CAPTCHA, check it, and count a failed check."""

    def __init__(
        self,
        config: CaptchaConfig,
        captcha: Captcha | None,
        *,
        limiter: RateLimiter,
        challenge_buckets: tuple[Bucket, ...],
        on_failure: Mapping[str, FailureCounter],
        login_failures: FailureCount,
    ) -> None:
        self._config = config
        self.captcha = captcha
        self._limiter = limiter
        self._challenge_buckets = challenge_buckets
        self._on_failure = on_failure
        self._login_failures = login_failures

    @property
    def self_hosted(self) -> bool:
        """Tell whether the portal issues the challenges itself (ALTCHA)."""
        return self.captcha is not None and self.captcha.provider == "altcha"

    def enabled(self, endpoint: CaptchaEndpoint) -> bool:
        """Tell whether the form can ask for the CAPTCHA at all."""
        return self.captcha is not None and endpoint in self._config.enabled_on

    async def needed(
        self, endpoint: CaptchaEndpoint, ip: str, username: str | None = None
    ) -> bool:
        """Tell whether this request must carry a solved CAPTCHA."""
        if not self.enabled(endpoint):
            return False
        after = self._config.login_after_failures
        if endpoint == "login" and after > 0:
            return await self._login_failures(username, ip) >= after
        return True

    def widget(self) -> CaptchaWidget | None:
        """Return how to draw the widget, or None when there is none."""
        if self.captcha is None:
            return None
        vendor = VENDORS.get(self.captcha.provider)
        return CaptchaWidget(
            provider=self.captcha.provider,
            field=self.captcha.field,
            site_key=self._config.site_key or "",
            challenge_url=CHALLENGE_URL,
            script=vendor.script if vendor else "",
            widget_class=vendor.widget_class if vendor else "",
        )

    def csp_origins(self) -> tuple[str, ...]:
        """Return the third-party origins a page with the widget must allow (none for ALTCHA)."""
        vendor = VENDORS.get(self.captcha.provider) if self.captcha else None
        return vendor.origins if vendor else ()

    async def check(
        self,
        endpoint: CaptchaEndpoint,
        answer: str | None,
        ip: str,
        username: str | None = None,
    ) -> None:
        """Raise CaptchaFailedError unless the request needs no CAPTCHA or carries a good one."""
        if not await self.needed(endpoint, ip, username):
            return
        assert self.captcha is not None  # noqa: S101 - needed() is False without one
        if answer and await self.captcha.verify(answer, ip):
            return
        # SECURITY: a failed check costs what a request costs on this form, so guessing
        # solutions runs into the same limits (429) as guessing anything else.
        count = self._on_failure.get(endpoint)
        if count is not None:
            await count(ip)
        raise CaptchaFailedError()

    async def challenge(self, ip: str) -> dict[str, Any]:
        """Return a fresh challenge, counted against the client's address."""
        assert self.captcha is not None  # noqa: S101 - the route exists only with a captcha
        retry_after = await self._limiter.hit(f"ip:captcha-challenge:{ip}", self._challenge_buckets)
        if retry_after is not None:
            raise RateLimitedError(int(retry_after))
        return await self.captcha.challenge()
