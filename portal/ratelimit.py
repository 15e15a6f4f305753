"""Rate limits: sliding-window buckets over storage, and the client address they are keyed by."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from portal.clock import Clock
from portal.config import RateLimit
from portal.storage.base import Storage

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Bucket:
    """At most `requests` events in any `period` seconds."""

    period: float
    requests: int


def buckets_from_config(limit: RateLimit) -> tuple[Bucket, ...]:
    """Turn a configured rate limit into buckets (none when disabled)."""
    if not limit.enable:
        return ()
    return tuple(Bucket(b.period.total_seconds(), b.requests) for b in limit.buckets)


class RateLimiter:
    """Count events per key in storage and say when a key is over one of its buckets."""

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock

    async def hit(self, key: str, buckets: Sequence[Bucket]) -> float | None:
        """Record one event for key; return None if allowed, else seconds until it would be."""
        if not buckets:
            return None
        now = self._clock.now()
        events = await self._storage.rate_limit_hit(
            key, at=now, keep_for=max(b.period for b in buckets)
        )
        wait = 0.0
        for bucket in buckets:
            recent = [at for at in events if at > now - bucket.period]
            if len(recent) > bucket.requests:
                # The request is allowed again once enough of the window's events have aged out.
                oldest_needed = recent[len(recent) - bucket.requests - 1]
                wait = max(wait, oldest_needed + bucket.period - now)
        if wait <= 0:
            return None
        return max(1, math.ceil(wait))


def _is_trusted(hop: str, trusted_proxies: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(hop)
    except ValueError:
        return False
    return any(address in network for network in trusted_proxies)


def client_ip(request: web.Request, trusted_proxies: Sequence[Network]) -> str:
    """Return the client's address, believing X-Forwarded-For only from trusted proxies."""
    hops = [
        part.strip()
        for header in request.headers.getall("X-Forwarded-For", [])
        for part in header.split(",")
        if part.strip()
    ]
    candidate = request.remote or ""
    # SECURITY: walk from the peer leftwards and stop at the first hop we do not trust: entries
    # left of it were written by the client and can be anything (Authelia trusted the first one).
    for hop in reversed(hops):
        if not _is_trusted(candidate, trusted_proxies):
            break
        try:
            candidate = str(ipaddress.ip_address(hop))
        except ValueError:
            break
    return candidate


# X-Forwarded-For values longer than this are resolved every time rather than remembered, so the
# memo stays small whatever clients send.
_MEMO_HEADER_LIMIT = 256


class ClientAddresses:
    """Resolve each request's client address, remembering answers for repeated header values.

    nginx's auth_request sends the same peer and X-Forwarded-For for every request of a visitor;
    resolving it once instead of parsing every hop again is a measurable share of that hot path.
    """

    def __init__(self, trusted_proxies: Sequence[Network], *, size: int = 4096) -> None:
        self._trusted = tuple(trusted_proxies)
        self._size = size
        self._memo: dict[tuple[str | None, tuple[str, ...]], tuple[str, IPAddress | None]] = {}

    def of(self, request: web.Request) -> str:
        """Return the client's address as text ("" when unknown)."""
        return self._resolve(request)[0]

    def parsed(self, request: web.Request) -> IPAddress | None:
        """Return the client's address parsed, or None when it is unknown or not an address."""
        return self._resolve(request)[1]

    def _resolve(self, request: web.Request) -> tuple[str, IPAddress | None]:
        forwarded = tuple(request.headers.getall("X-Forwarded-For", ()))
        key = (request.remote, forwarded)
        found = self._memo.get(key)
        if found is not None:
            return found
        text = client_ip(request, self._trusted)
        try:
            address: IPAddress | None = ipaddress.ip_address(text)
        except ValueError:
            address = None
        if sum(len(value) for value in forwarded) <= _MEMO_HEADER_LIMIT:
            if len(self._memo) >= self._size:
                self._memo.clear()
            self._memo[key] = (text, address)
        return text, address
