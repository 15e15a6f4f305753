"""`session`: sessions and their cookies, one per protected domain (Authelia: schema/session.go)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr, field_validator, model_validator

from portal.config.types import (
    Duration,
    Model,
    check_url,
    host_in_domain,
    is_loopback_host,
    public_suffixes,
)

SameSite = Literal["lax", "strict", "none"]


class SessionCookieConfig(Model):
    """One cookie domain the portal protects; unset values come from the session section."""

    domain: str
    authelia_url: str
    default_redirection_url: str | None = None
    name: str | None = None
    same_site: SameSite | None = None
    expiration: Duration | None = None
    inactivity: Duration | None = None
    remember_me: Duration | None = None

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower()
        if not value or "/" in value or ":" in value or value.startswith("."):
            raise ValueError("must be a bare domain such as 'example.com'")
        # SECURITY: browsers refuse a cookie for a public suffix (co.uk, github.io): a session
        # cookie scoped there never comes back, and could be shared with strangers if it did.
        bare = value.rstrip(".")
        if public_suffixes().publicsuffix(bare, accept_unknown=False) == bare:
            raise ValueError(
                f"'{value}' is a public suffix (publicsuffix.org): browsers refuse cookies for it;"
                " use your own domain under it, such as 'example.co.uk'"
            )
        return value

    @field_validator("authelia_url")
    @classmethod
    def _authelia_url(cls, value: str) -> str:
        check_url(value, what="the portal's public address")
        return value.rstrip("/")

    @field_validator("default_redirection_url")
    @classmethod
    def _redirection(cls, value: str | None) -> str | None:
        return None if not value else check_url(value, what="default_redirection_url")

    @model_validator(mode="after")
    def _urls_in_domain(self) -> SessionCookieConfig:
        portal_host = urlsplit(self.authelia_url).hostname or ""
        if not host_in_domain(portal_host, self.domain) and not is_loopback_host(portal_host):
            raise ValueError(f"authelia_url must be on the domain '{self.domain}' or below it")
        if self.default_redirection_url:
            host = urlsplit(self.default_redirection_url).hostname or ""
            if not host_in_domain(host, self.domain) and not is_loopback_host(host):
                raise ValueError(
                    f"default_redirection_url must be on the domain '{self.domain}' or below it"
                )
            if self.default_redirection_url.rstrip("/") == self.authelia_url:
                raise ValueError("default_redirection_url must not be the authelia_url")
        return self


class SessionConfig(Model):
    """Sessions and their cookies."""

    secret: SecretStr | None = None
    name: str = "portal_session"
    same_site: SameSite = "lax"
    expiration: Duration = timedelta(hours=1)
    inactivity: Duration = timedelta(minutes=5)
    remember_me: Duration = timedelta(days=30)
    cookies: tuple[SessionCookieConfig, ...]

    @field_validator("cookies")
    @classmethod
    def _at_least_one(cls, value: tuple[SessionCookieConfig, ...]) -> Any:
        if not value:
            raise ValueError("list at least one cookie domain with its authelia_url")
        return value

    @model_validator(mode="after")
    def _fill_cookies(self) -> SessionConfig:
        inherited = ("name", "same_site", "expiration", "inactivity", "remember_me")
        filled = tuple(
            cookie.model_copy(
                update={k: getattr(self, k) for k in inherited if getattr(cookie, k) is None}
            )
            for cookie in self.cookies
        )
        object.__setattr__(self, "cookies", filled)
        return self
