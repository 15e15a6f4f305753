"""RateLimiter.full: a look at the buckets that records nothing (the limit on refused partner
tokens checks it first, then counts only refusals with `hit`), on a real SQLite store."""

from __future__ import annotations

from pathlib import Path

from portal.ratelimit import Bucket, RateLimiter
from portal.storage.sqlite import SqliteStorage
from tests.conftest import FakeClock

BUCKETS = (Bucket(60, 2), Bucket(600, 3))


async def test_full_says_when_the_next_event_would_be_over_a_bucket(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "db.sqlite3")
    await storage.startup_check()
    clock = FakeClock()
    limiter = RateLimiter(storage, clock)
    try:
        assert await limiter.full("ip:a", BUCKETS) is None
        assert await limiter.full("ip:a", BUCKETS) is None, "looking records nothing"
        await limiter.hit("ip:a", BUCKETS)
        clock.advance(10)
        await limiter.hit("ip:a", BUCKETS)

        assert await limiter.full("ip:a", BUCKETS) == 50, "the first event leaves the minute"
        assert await limiter.full("ip:b", BUCKETS) is None, "keys are independent"
        clock.advance(50)
        assert await limiter.full("ip:a", BUCKETS) is None
        await limiter.hit("ip:a", BUCKETS)
        assert await limiter.full("ip:a", BUCKETS) == 540, "three in ten minutes"
        assert await limiter.full("ip:a", ()) is None, "no buckets: never full"
    finally:
        await storage.close()
