"""Which forms need the CAPTCHA (sign-in: after how many failures); count a failed check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from portal.captcha.base import CHALLENGE_URL, Captcha
from portal.captcha.remote import VENDORS
from portal.config import CaptchaConfig, CaptchaEndpoint
from portal.errors import CaptchaFailedError, RateLimitedError
from portal.ratelimit import Bucket, RateLimiter


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

    async def needed(self, endpoint: CaptchaEndpoint, ip: str, username: str | None = None) -> bool:
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
