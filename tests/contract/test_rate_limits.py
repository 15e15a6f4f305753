"""RateLimitStore's contract: a sliding-window log of event times per key."""

from __future__ import annotations

import asyncio

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


async def test_clearing_a_key_deletes_its_events_and_no_others(storage: RateLimitStore) -> None:
    await storage.rate_limit_hit("user:john", at=NOW, keep_for=60)
    await storage.rate_limit_hit("user:john", at=NOW + 1, keep_for=60)
    await storage.rate_limit_hit("user:mary", at=NOW, keep_for=60)

    assert await storage.rate_limit_clear("user:john") == 2
    assert await storage.rate_limit_clear("user:john") == 0
    assert await storage.rate_limit_events("user:john", since=0) == []
    assert await storage.rate_limit_events("user:mary", since=0) == [NOW]


async def test_listing_keys_by_prefix_finds_recent_events_and_no_wildcards(
    storage: RateLimitStore,
) -> None:
    await storage.rate_limit_hit("regulation:user:john", at=NOW, keep_for=600)
    await storage.rate_limit_hit("regulation:user:john", at=NOW + 20, keep_for=600)
    await storage.rate_limit_hit("regulation:ip:192.0.2.1", at=NOW + 5, keep_for=600)
    await storage.rate_limit_hit("regulation:user:old", at=NOW - 100, keep_for=600)
    await storage.rate_limit_hit("regulationXuser:mary", at=NOW, keep_for=600)
    await storage.rate_limit_hit("ip:reset-start:192.0.2.1", at=NOW, keep_for=600)

    found = await storage.rate_limit_keys("regulation:", since=NOW)

    assert found == {
        "regulation:ip:192.0.2.1": [NOW + 5],
        "regulation:user:john": [NOW, NOW + 20],
    }
    # `_` and `%` are text: LIKE would have matched "regulationXuser:mary".
    assert await storage.rate_limit_keys("regulation_", since=0) == {}
    assert await storage.rate_limit_keys("%", since=0) == {}


async def test_simultaneous_hits_from_two_instances_are_all_counted(
    storage: RateLimitStore, other_instance: RateLimitStore
) -> None:
    hits = [(instance, NOW + n) for n in range(10) for instance in (storage, other_instance)]

    seen = await asyncio.gather(
        *(instance.rate_limit_hit("ip:192.0.2.1", at=at, keep_for=3600) for instance, at in hits)
    )

    # Recording and reading are one step: each caller saw its own event, and a different count.
    assert all(at in kept for (_, at), kept in zip(hits, seen, strict=True))
    assert sorted(len(kept) for kept in seen) == list(range(1, 21))
    expected = sorted(at for _, at in hits)
    assert await other_instance.rate_limit_events("ip:192.0.2.1", since=0) == expected
