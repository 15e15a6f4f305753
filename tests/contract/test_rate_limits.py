"""RateLimitStore's contract: a sliding-window log of event times per key."""

from __future__ import annotations

from portal.storage.base import RateLimitStore
from tests.contract.records import NOW

ROLE = "rate_limits"


async def test_rate_limit_events_slide_out_of_the_window(storage: RateLimitStore) -> None:
    for offset in (0, 10, 30):
        await storage.rate_limit_hit("ip:192.0.2.1", at=NOW + offset, keep_for=60)

    kept = await storage.rate_limit_hit("ip:192.0.2.1", at=NOW + 65, keep_for=60)

    assert kept == [NOW + 10, NOW + 30, NOW + 65]


async def test_rate_limit_keys_are_independent(storage: RateLimitStore) -> None:
    await storage.rate_limit_hit("user:john", at=NOW, keep_for=60)
    await storage.rate_limit_hit("user:john", at=NOW + 1, keep_for=60)

    assert await storage.rate_limit_hit("user:mary", at=NOW + 2, keep_for=60) == [NOW + 2]
    assert await storage.rate_limit_events("user:john", since=NOW) == [NOW, NOW + 1]


async def test_reading_rate_limit_events_records_nothing(storage: RateLimitStore) -> None:
    await storage.rate_limit_hit("user:john", at=NOW, keep_for=60)
    await storage.rate_limit_hit("user:john", at=NOW + 30, keep_for=60)

    assert await storage.rate_limit_events("user:john", since=NOW + 1) == [NOW + 30]
    assert await storage.rate_limit_events("user:john", since=NOW) == [NOW, NOW + 30]
    assert await storage.rate_limit_events("user:nobody", since=NOW) == []


async def test_purging_rate_limits_deletes_old_events_of_every_key(storage: RateLimitStore) -> None:
    await storage.rate_limit_hit("user:john", at=NOW, keep_for=3600)
    await storage.rate_limit_hit("user:mary", at=NOW + 5, keep_for=3600)
    await storage.rate_limit_hit("user:mary", at=NOW + 100, keep_for=3600)

    assert await storage.purge_rate_limits(before=NOW + 100) == 2
    assert await storage.rate_limit_events("user:john", since=0) == []
    assert await storage.rate_limit_events("user:mary", since=0) == [NOW + 100]
