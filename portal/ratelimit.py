"""Rate limits: sliding-window buckets over storage (keyed by the client address, forwarded.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from portal.clock import Clock
from portal.config import RateLimit
from portal.storage.base import RateLimitStore


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

    def __init__(self, storage: RateLimitStore, clock: Clock) -> None:
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

    async def full(self, key: str, buckets: Sequence[Bucket]) -> float | None:
        """Without recording, return None if one more event for key fits every bucket, else
        seconds until it would (for limits that count failures only: check, then `hit` on one).
        """
        if not buckets:
            return None
        now = self._clock.now()
        events = await self._storage.rate_limit_events(
            key, since=now - max(b.period for b in buckets)
        )
        wait = 0.0
        for bucket in buckets:
            recent = [at for at in events if at > now - bucket.period]
            if len(recent) >= bucket.requests:
                wait = max(wait, recent[len(recent) - bucket.requests] + bucket.period - now)
        if wait <= 0:
            return None
        return max(1, math.ceil(wait))
