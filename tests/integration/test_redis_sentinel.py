"""Redis Sentinel: the portal finds the master through a sentinel, and after the master is
stopped and its replica promoted, sessions work again without restarting anything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.clock import SystemClock
from portal.config import RedisConfig, SessionConfig, SessionCookieConfig
from portal.errors import StorageError
from portal.sessions import SessionStore
from portal.storage.redis import RedisSessionStore
from portal.users.base import User
from tests.conftest import SESSION_SECRET
from tests.integration.redis_server import MASTER_NAME, SentinelSet, running_sentinel_set

JOHN = User("john", "John Doe", ("john.doe@authelia.com",), ("admins",))
COOKIE = SessionConfig(
    cookies=(SessionCookieConfig(domain="example.com", authelia_url="https://auth.example.com"),)
).cookies[0]
FAILOVER_WITHIN = 30.0  # seconds: one to notice, then the election and the promotion


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    with running_sentinel_set(tmp_path / "redis") as servers:
        yield servers


def sentinel_config(servers: SentinelSet) -> RedisConfig:
    """Authelia's shape: the node credentials, the sentinel's own, and the sentinel as a node."""
    return RedisConfig.model_validate(
        {
            "username": servers.master.username,
            "password": servers.master.user_password,
            "high_availability": {
                "sentinel_name": MASTER_NAME,
                "sentinel_password": servers.sentinel.password,
                "nodes": [{"host": servers.sentinel.host, "port": servers.sentinel.port}],
            },
        }
    )


async def test_after_a_failover_sessions_work_again_without_a_restart(
    sentinel_set: SentinelSet,
) -> None:
    records = RedisSessionStore(
        sentinel_config(sentinel_set), secret=SESSION_SECRET, clock=SystemClock(), inactivity={}
    )
    await records.startup_check()
    sessions = SessionStore(records, SystemClock(), cache_ttl=0)
    try:
        before = await sessions.create(JOHN, COOKIE, remember_me=False)
        await asyncio.sleep(0.5)  # replicated (asynchronously) to the replica

        sentinel_set.master.stop()

        deadline = time.monotonic() + FAILOVER_WITHIN
        after = None
        while after is None and time.monotonic() < deadline:
            try:
                after = await sessions.create(JOHN, COOKIE, remember_me=False)
            except StorageError:
                await asyncio.sleep(0.2)  # 503s meanwhile: nothing is let through
        assert after is not None, "no new master within the failover time"
        assert await sessions.get(after, COOKIE) is not None
        assert await sessions.get(before, COOKIE) is not None  # it was on the replica
        assert await sessions.destroy_user("john") == 2
    finally:
        await records.close()
