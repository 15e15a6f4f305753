"""`session`: sessions and their cookies, one per protected domain (Authelia: schema/session.go)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from portal.config.tls import TlsConfig
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


class RedisNodeConfig(Model):
    """One Redis Sentinel to ask for the master (Authelia: high_availability.nodes)."""

    host: str = Field(min_length=1)
    port: int = Field(default=26379, ge=1, le=65535)


class RedisHighAvailabilityConfig(Model):
    """Redis Sentinel (Authelia: session.redis.high_availability).

    `sentinel_name` is the master's name the sentinels watch; the sentinels are `nodes` plus
    session.redis's own host and port when host is set. The node credentials are session.redis's
    username and password; the sentinels' own are sentinel_username and sentinel_password.
    """

    sentinel_name: str = Field(min_length=1)
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = None
    nodes: tuple[RedisNodeConfig, ...] = ()
    route_by_latency: bool = False
    route_randomly: bool = False


class RedisConfig(Model):
    """Session records in Redis instead of the storage (Authelia: session.redis, its defaults).

    `host` is a name or address, or the path of a unix socket (it starts with '/'). With
    high_availability, host and port name a sentinel (port then defaults to 26379, as Authelia's
    DefaultRedisHighAvailabilityConfiguration) and may be left out when nodes are listed.
    """

    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    timeout: Duration = timedelta(seconds=5)
    max_retries: int = Field(default=0, ge=0)
    username: str | None = None
    password: SecretStr | None = None
    database_index: int = Field(default=0, ge=0)
    maximum_active_connections: int = Field(default=8, ge=1)
    minimum_idle_connections: int = Field(default=0, ge=0)
    tls: TlsConfig | None = None
    high_availability: RedisHighAvailabilityConfig | None = None

    @model_validator(mode="after")
    def _where(self) -> RedisConfig:
        if self.port is None:
            port = 26379 if self.high_availability is not None else 6379
            object.__setattr__(self, "port", port)
        if not self.host and (self.high_availability is None or not self.high_availability.nodes):
            raise ValueError(
                "host: option is required (or high_availability.nodes, for Redis Sentinel)"
            )
        if self.timeout.total_seconds() <= 0:
            raise ValueError("timeout: must be more than 0 seconds")
        if self.minimum_idle_connections > self.maximum_active_connections:
            raise ValueError(
                "minimum_idle_connections: must not be above maximum_active_connections"
            )
        return self

    @property
    def unix_socket(self) -> bool:
        """Tell whether host names a unix socket (a path) rather than a TCP host."""
        return bool(self.host) and str(self.host).startswith("/")


class SessionConfig(Model):
    """Sessions and their cookies; `redis` keeps the session records in Redis when set.

    `secret` (Authelia: session.secret) encrypts the session records in Redis (storage/redis/
    sealing.py); required with `redis`, unused without it.
    """

    secret: SecretStr | None = None
    name: str = "portal_session"
    same_site: SameSite = "lax"
    expiration: Duration = timedelta(hours=1)
    inactivity: Duration = timedelta(minutes=5)
    remember_me: Duration = timedelta(days=30)
    cookies: tuple[SessionCookieConfig, ...]
    redis: RedisConfig | None = None

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

    @model_validator(mode="after")
    def _secret_for_redis(self) -> SessionConfig:
        # Authelia's rule and words (validator/session.go): Redis records are encrypted with it.
        if self.redis is not None and not self.secret:
            raise ValueError("option 'secret' is required when using the 'redis' provider")
        return self
