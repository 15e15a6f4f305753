"""The root model, `Config`: every section together (Authelia: schema/configuration.go)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from portal.config.access_control import AccessControlConfig
from portal.config.authentication_backend import AuthenticationBackendConfig
from portal.config.captcha import CaptchaConfig
from portal.config.identity_token import IdentityTokenConfig
from portal.config.identity_validation import IdentityValidationConfig
from portal.config.log import LogConfig
from portal.config.notifier import NotifierConfig
from portal.config.password_hashing import PasswordHashingConfig
from portal.config.password_policy import PasswordPolicyConfig
from portal.config.regulation import RegulationConfig
from portal.config.server import (
    SESSION_ELEVATION_FINISH,
    SESSION_ELEVATION_START,
    RateLimit,
    ServerConfig,
    weighted_rate_limit,
)
from portal.config.session import SessionConfig
from portal.config.storage import StorageConfig
from portal.config.telemetry import TelemetryConfig
from portal.config.totp import TotpConfig
from portal.config.trusted_issuers import TrustedIssuerConfig, check_trusted_issuers
from portal.config.types import Model
from portal.config.webauthn import WebAuthnConfig
from portal.tls import certificates_directory_problems


class Config(Model):
    """The whole configuration."""

    server: ServerConfig = ServerConfig()
    # Authelia's: every certificate in this folder joins the system's trust store for outgoing TLS.
    certificates_directory: Path | None = None
    # Authelia's `theme` (its default too); `auto` follows the browser's light or dark setting.
    theme: Literal["light", "dark", "grey", "auto"] = "light"
    # A portal key: the organisation the pages say they belong to (beside the logo, in titles).
    organization_name: str | None = Field(default=None, min_length=1, max_length=100)
    # A portal key: the language of pages and mails when neither the language switch's cookie
    # nor Accept-Language chooses one, and of mails to users who never used the portal.
    default_language: Literal["en", "de", "fr", "es"] = "en"
    log: LogConfig = LogConfig()
    identity_validation: IdentityValidationConfig
    authentication_backend: AuthenticationBackendConfig
    password_policy: PasswordPolicyConfig = PasswordPolicyConfig()
    # A portal key: how many password and answer hashes run at once (unset: sized to the CPUs).
    password_hashing: PasswordHashingConfig = PasswordHashingConfig()
    notifier: NotifierConfig
    session: SessionConfig
    storage: StorageConfig
    regulation: RegulationConfig = RegulationConfig()
    captcha: CaptchaConfig = CaptchaConfig()
    access_control: AccessControlConfig = AccessControlConfig()
    totp: TotpConfig = TotpConfig()
    webauthn: WebAuthnConfig = WebAuthnConfig()
    identity_token: IdentityTokenConfig = IdentityTokenConfig()
    # A portal key: partners whose signed tokens sign their users in (/sso/jwt).
    trusted_issuers: tuple[TrustedIssuerConfig, ...] = ()
    telemetry: TelemetryConfig = TelemetryConfig()

    @field_validator("certificates_directory")
    @classmethod
    def _certificates_directory(cls, value: Path | None) -> Path | None:
        problems = [] if value is None else certificates_directory_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("trusted_issuers")
    @classmethod
    def _trusted_issuers(
        cls, value: tuple[TrustedIssuerConfig, ...]
    ) -> tuple[TrustedIssuerConfig, ...]:
        return check_trusted_issuers(value)

    def shared_secret_problems(self) -> list[str]:
        """Name each HMAC secret that repeats an earlier one, quoting none (one line each).

        Reset links (identity_validation.reset_password.jwt_secret), each app's identity
        tokens (identity_token.applications[i].secret) and each partner's sign-in tokens
        (trusted_issuers[i].secret) must each have a secret of their own: whoever holds one
        could otherwise sign what the other's verifier accepts (issue 17: "each app's secret is
        its own"; RFC 8725 section 3.12, one kind of JWT must not pass for another).
        """
        named = [
            (
                "identity_validation.reset_password.jwt_secret",
                self.identity_validation.reset_password.jwt_secret,
            )
        ]
        named += [
            (f"identity_token.applications[{index}].secret", app.secret)
            for index, app in enumerate(self.identity_token.applications)
        ]
        named += [
            (f"trusted_issuers[{index}].secret", partner.secret)
            for index, partner in enumerate(self.trusted_issuers)
            if partner.secret is not None
        ]
        first: dict[str, str] = {}
        problems = []
        for name, secret in named:
            holder = first.setdefault(secret.get_secret_value(), name)
            if holder != name:
                problems.append(
                    f"{name}: is the same secret as {holder}; give each its own (whoever holds "
                    "one could sign the other's tokens)"
                )
        return problems

    def partner_audience(self, partner: TrustedIssuerConfig) -> str:
        """Return the `aud` a partner's tokens must name: its audience, else authelia_url."""
        return partner.audience or self.portal_url

    @property
    def portal_url(self) -> str:
        """Return the public address links in mails are built from (the first cookie's)."""
        return self.session.cookies[0].authelia_url

    def session_elevation_limits(self) -> tuple[RateLimit, RateLimit]:
        """Return the rate limits of (starting, finishing) a session elevation: the configured
        ones, else Authelia's defaults weighted by code_lifespan and elevation_lifespan."""
        limits = self.server.endpoints.rate_limits
        lifespans = self.identity_validation.elevated_session
        return (
            weighted_rate_limit(
                limits.session_elevation_start, lifespans.code_lifespan, SESSION_ELEVATION_START
            ),
            weighted_rate_limit(
                limits.session_elevation_finish,
                lifespans.elevation_lifespan,
                SESSION_ELEVATION_FINISH,
            ),
        )

    @property
    def portal_is_https(self) -> bool:
        """Tell whether the portal is served over https (secure cookies, __Host- names, HSTS)."""
        return self.portal_url.startswith("https://")

    @property
    def totp_issuer(self) -> str:
        """Return the issuer authenticator apps show for new TOTP registrations.

        `totp.issuer` when set; else the portal's name as its pages say it: organization_name,
        else "Portal" (Authelia's default is "Authelia", its own name).
        """
        return self.totp.issuer or self.organization_name or "Portal"

    @property
    def webauthn_display_name(self) -> str:
        """Return the relying party's name authenticators show (webauthn.display_name, else the
        portal's name as its pages say it: organization_name, else "Portal")."""
        return self.webauthn.display_name or self.organization_name or "Portal"
