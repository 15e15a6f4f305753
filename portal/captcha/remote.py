"""A vendor's siteverify API (Turnstile, hCaptcha, reCAPTCHA): ask it, and fail closed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from portal.captcha.base import MAX_SOLUTION
from portal.errors import CaptchaFailedError, CaptchaUnavailableError

# One logger for every CAPTCHA provider: admins filter on "portal.captcha".
log = logging.getLogger("portal.captcha")


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
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))

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
