"""`captcha`: the anti-robot check on the reset and sign-in forms (a portal section)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from portal.config.types import Duration, Model, check_url

CaptchaEndpoint = Literal["reset_password_start", "reset_password_finish", "login"]
CaptchaProvider = Literal["altcha", "turnstile", "hcaptcha", "recaptcha", "none"]
REMOTE_CAPTCHAS = ("turnstile", "hcaptcha", "recaptcha")


class AltchaConfig(Model):
    """The self-hosted proof of work: signed, expiring, single-use challenges."""

    # Absent: derived from identity_validation.reset_password.jwt_secret (never the raw secret).
    hmac_key: SecretStr | None = None
    algorithm: Literal[
        "PBKDF2/SHA-256", "PBKDF2/SHA-384", "PBKDF2/SHA-512", "SHA-256", "SHA-384", "SHA-512"
    ] = "PBKDF2/SHA-256"
    # Work per try (KDF iterations) and the largest secret counter a browser must reach; the
    # counter is drawn from [max_number / 2, max_number], so the work is cost x ~0.75 max_number.
    cost: int = Field(5000, ge=1, le=1_000_000)
    max_number: int = Field(1000, ge=1, le=10_000_000)
    expiration: Duration = timedelta(minutes=5)

    @field_validator("hmac_key")
    @classmethod
    def _key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes")
        return value

    @field_validator("expiration")
    @classmethod
    def _sane_expiration(cls, value: timedelta) -> timedelta:
        # Accepted challenges are remembered in the rate-limit table, purged after a day.
        if not timedelta(seconds=10) <= value <= timedelta(hours=1):
            raise ValueError("must be between 10 seconds and 1 hour")
        return value


class CaptchaConfig(Model):
    """An anti-robot check on the reset and sign-in forms (off unless enabled_on names one)."""

    provider: CaptchaProvider = "altcha"
    enabled_on: tuple[CaptchaEndpoint, ...] = ()
    # Sign-in asks for the CAPTCHA only after this many recent failures (0: always).
    login_after_failures: int = Field(0, ge=0)
    altcha: AltchaConfig = AltchaConfig()
    site_key: str | None = None
    secret_key: SecretStr | None = None
    verify_url: str | None = None
    timeout: Duration = timedelta(seconds=5)

    @field_validator("verify_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, what="the vendor's siteverify URL")

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0) or value > timedelta(seconds=60):
            raise ValueError("must be more than 0 and at most 60 seconds")
        return value

    @model_validator(mode="after")
    def _provider_needs(self) -> CaptchaConfig:
        if self.provider == "none" and self.enabled_on:
            raise ValueError("enabled_on needs a provider (altcha, turnstile, hcaptcha, recaptcha)")
        if self.provider in REMOTE_CAPTCHAS:
            missing = [k for k in ("site_key", "secret_key") if not getattr(self, k)]
            if missing:
                raise ValueError(f"provider {self.provider} needs {' and '.join(missing)}")
        return self
