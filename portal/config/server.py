"""`server`: where the portal listens, whom it trusts, and its per-endpoint rate limits.

Authelia: internal/configuration/schema/server.go.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

from pydantic import DirectoryPath, Field, field_validator, model_validator

from portal.config.types import Address, Duration, Model, ServerAddress, network


class RateLimitBucket(Model):
    """At most `requests` in any `period`."""

    period: Duration
    requests: int = Field(gt=0)


class RateLimit(Model):
    """Buckets counted per client IP for one endpoint."""

    enable: bool = True
    buckets: tuple[RateLimitBucket, ...]


def _buckets(*pairs: tuple[int, int]) -> RateLimit:
    return RateLimit(
        buckets=tuple(RateLimitBucket(period=timedelta(seconds=p), requests=r) for p, r in pairs)
    )


# Authelia's default buckets for the elevation endpoints, as (multiple of a lifespan, requests):
# start counts in code_lifespans, finish in elevation_lifespans (schema/server.go,
# validator/server.go validateServerEndpointsRateLimitDefaultWeighted).
SESSION_ELEVATION_START = ((1, 3), (2, 5), (12, 15))
SESSION_ELEVATION_FINISH = ((1, 3), (2, 5), (6, 15))


def weighted_rate_limit(
    limit: RateLimit | None, weight: timedelta, defaults: tuple[tuple[int, int], ...]
) -> RateLimit:
    """Return the configured limit, or (None: not configured) Authelia's default buckets whose
    periods are multiples of `weight` (a lifespan from identity_validation.elevated_session)."""
    if limit is not None:
        return limit
    return RateLimit(
        buckets=tuple(RateLimitBucket(period=weight * m, requests=r) for m, r in defaults)
    )


class RateLimits(Model):
    """Per-IP limits on the reset, elevation and TOTP endpoints (Authelia's defaults) and
    per-account ones."""

    reset_password_start: RateLimit = _buckets((600, 5), (900, 10), (1800, 15))
    reset_password_finish: RateLimit = _buckets((60, 10), (120, 15))
    second_factor_totp: RateLimit = _buckets((60, 30), (120, 40), (600, 50))
    # Not in Authelia: reset mails per identifier typed, per account and per mailbox, and for
    # everyone together; the excess is dropped silently.
    reset_password_identifier: RateLimit = _buckets((900, 3))
    reset_password_global: RateLimit = _buckets((3600, 1000))
    # Not in Authelia: refused partner tokens (/sso/jwt, /api/sso/jwt) per client IP; over a
    # bucket, every partner token from that address is answered 429 until it empties.
    sso_jwt: RateLimit = _buckets((60, 10), (600, 30))
    # Not in Authelia: fresh ALTCHA challenges per client IP.
    captcha_challenge: RateLimit = _buckets((60, 20), (600, 60))
    # Authelia's: per client IP on POST (mail a code) and PUT (check it) of
    # /api/user/session/elevation. None: Authelia's defaults, weighted by the lifespans of
    # identity_validation.elevated_session (Config.session_elevation_limits).
    session_elevation_start: RateLimit | None = None
    session_elevation_finish: RateLimit | None = None


class Endpoints(Model):
    """Settings of individual endpoints."""

    rate_limits: RateLimits = RateLimits()


_EVERY_ADDRESS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - compared, never bound here


def _same_listener(a: Address, b: Address) -> bool:
    """Tell whether two listening addresses would take the same socket: one unix path, or one
    TCP port on the same host or on every address."""
    if (a.scheme == "unix") != (b.scheme == "unix"):
        return False
    if a.scheme == "unix":
        return a.path == b.path
    hosts = {a.host, b.host}
    return a.port == b.port and (len(hosts) == 1 or bool(hosts & _EVERY_ADDRESS))


class ServerConfig(Model):
    """Where the portal listens and whom it trusts."""

    address: ServerAddress = Address("tcp", "", 9091)
    # Not in Authelia: a second listener serving only nginx's auth_request endpoints, from
    # an asyncio protocol of its own (portal/authz_listener.py); unset, the portal's listener alone.
    authz_address: ServerAddress | None = None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.IPv4Network("127.0.0.0/8"),
        ipaddress.IPv6Network("::1/128"),
    )
    endpoints: Endpoints = Endpoints()
    # Authelia's: a directory whose logo.png and favicon.ico the pages show instead of the
    # portal's own (only those two files are served from it).
    asset_path: DirectoryPath | None = None

    @model_validator(mode="after")
    def _two_listeners(self) -> ServerConfig:
        if self.authz_address is not None and _same_listener(self.authz_address, self.address):
            raise ValueError("authz_address must differ from address (a listener of its own)")
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            try:
                return tuple(network(str(v)) for v in value)
            except ValueError as exc:
                raise ValueError(f"must be a list of CIDR networks: {exc}") from exc
        return value
