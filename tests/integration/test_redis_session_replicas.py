"""Two portal replicas' session services on one Redis: what one ends, the other refuses within a
second, although each caches sessions for a minute here (pub/sub, not the cache's expiry)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from portal.clock import SystemClock
from portal.config import RedisConfig, SessionConfig, SessionCookieConfig
from portal.sessions import SessionStore
from portal.storage.redis import RedisSessionStore
from portal.users.base import User
from tests.conftest import SESSION_SECRET
from tests.integration.redis_server import RedisServer

JOHN = User("john", "John Doe", ("john.doe@authelia.com",), ("admins",))
MARY = User("mary", "Mary Jane", ("mary@authelia.com",), ())
COOKIE = SessionConfig(
    cookies=(SessionCookieConfig(domain="example.com", authelia_url="https://auth.example.com"),)
).cookies[0]
LONG_CACHE = 60.0  # seconds a replica trusts a cached session: far longer than the 1 s allowed


@dataclass
class Replica:
    sessions: SessionStore
    records: RedisSessionStore


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[Replica, Replica]]:
    """Two replicas, each with its own Redis store, session service and subscription."""
    config = RedisConfig(
        host=redis_server.host,
        port=redis_server.port,
        username=redis_server.username,
        password=redis_server.user_password,
    )
    made, tasks = [], []
    for _ in range(2):
        records = RedisSessionStore(
            config, secret=SESSION_SECRET, clock=SystemClock(), inactivity={"example.com": 300}
        )
        await records.startup_check()
        sessions = SessionStore(records, SystemClock(), cache_ttl=LONG_CACHE)
        tasks.append(asyncio.create_task(records.listen(sessions.invalidate)))
        made.append(Replica(sessions, records))
    await asyncio.sleep(0.2)  # both subscribed
    yield made[0], made[1]
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for replica in made:
        await replica.records.close()


async def refused_within(seconds: float, opens: Callable[[], Awaitable[bool]]) -> float | None:
    """Return how long it took until opens() is False, or None if it still opened after seconds."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if not await opens():
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    return None


async def test_a_session_signed_out_on_one_replica_is_refused_by_the_other_within_a_second(
    replicas: tuple[Replica, Replica],
) -> None:
    one, other = replicas
    value = await one.sessions.create(JOHN, COOKIE, remember_me=False)
    assert await other.sessions.get(value, COOKIE) is not None  # now in the other's cache

    await one.sessions.destroy(value)

    async def opens() -> bool:
        return await other.sessions.get(value, COOKIE) is not None

    assert await refused_within(1.0, opens) is not None


async def test_ending_a_users_sessions_on_one_replica_ends_them_on_the_other(
    replicas: tuple[Replica, Replica],
) -> None:
    one, other = replicas
    laptop = await one.sessions.create(JOHN, COOKIE, remember_me=False)
    phone = await other.sessions.create(JOHN, COOKIE, remember_me=True)
    marys = await one.sessions.create(MARY, COOKIE, remember_me=False)
    for value in (laptop, phone, marys):
        assert await other.sessions.get(value, COOKIE) is not None

    assert await one.sessions.destroy_user("john") == 2  # a password reset on one replica

    async def johns_open() -> bool:
        opened = [await other.sessions.get(v, COOKIE) for v in (laptop, phone)]
        return any(session is not None for session in opened)

    assert await refused_within(1.0, johns_open) is not None
    assert await other.sessions.get(marys, COOKIE) is not None


async def test_without_the_subscription_the_other_replica_would_still_open_it(
    redis_server: RedisServer,
) -> None:
    """The control: with a cache this long and no listener, the ended session still opens, so
    the tests above measure the pub/sub invalidation, not the cache running out."""
    config = RedisConfig(
        host=redis_server.host,
        port=redis_server.port,
        username=redis_server.username,
        password=redis_server.user_password,
    )
    stores = [
        RedisSessionStore(config, secret=SESSION_SECRET, clock=SystemClock(), inactivity={})
        for _ in range(2)
    ]
    for store in stores:
        await store.startup_check()
    one, other = (SessionStore(s, SystemClock(), cache_ttl=LONG_CACHE) for s in stores)
    try:
        value = await one.create(JOHN, COOKIE, remember_me=False)
        assert await other.get(value, COOKIE) is not None
        await one.destroy(value)
        await asyncio.sleep(0.3)

        assert await other.get(value, COOKIE) is not None
    finally:
        for store in stores:
            await store.close()
