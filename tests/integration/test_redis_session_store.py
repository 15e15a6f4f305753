"""The Redis session store beyond the shared contract: records expire in Redis by themselves,
the per-user index stays clean, and an unreachable Redis is a StorageError that names nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import trustme

from portal.config import RedisConfig, TlsConfig
from portal.errors import StartupCheckError, StorageError
from portal.storage.base import SessionRecord
from portal.storage.redis import CHANNEL, GRACE, RECORD, USER_INDEX, RedisSessionStore
from tests.conftest import FakeClock
from tests.contract.records import HOUR, NOW, session
from tests.integration.redis_server import RedisServer, running_redis

INACTIVITY = 300.0  # the cookie domain's inactivity, seconds


def idle_session(session_id: str = "cookie-hash-1", **changes: Any) -> SessionRecord:
    """A session of the example.com cookie domain, which has an inactivity of INACTIVITY."""
    return replace(session(session_id, data={"domain": "example.com"}), **changes)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
async def store(redis_server: RedisServer, clock: FakeClock) -> AsyncIterator[RedisSessionStore]:
    config = RedisConfig(
        host=redis_server.host,
        port=redis_server.port,
        username=redis_server.username,
        password=redis_server.user_password,
        minimum_idle_connections=2,
    )
    started = RedisSessionStore(config, clock=clock, inactivity={"example.com": INACTIVITY})
    await started.startup_check()
    yield started
    await started.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """What an administrator with redis-cli sees."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_a_session_expires_in_redis_at_its_inactivity_deadline_plus_grace(
    store: RedisSessionStore, raw: aioredis.Redis
) -> None:
    await store.session_save(idle_session())

    ttl = await raw.pttl(RECORD + "cookie-hash-1")

    assert (INACTIVITY + GRACE - 1) * 1000 < ttl <= (INACTIVITY + GRACE) * 1000


async def test_activity_pushes_the_deadline_but_never_past_the_absolute_expiration(
    store: RedisSessionStore, raw: aioredis.Redis, clock: FakeClock
) -> None:
    await store.session_save(idle_session(expires_at=NOW + 400))
    clock.advance(200)

    await store.session_touch("cookie-hash-1", at=NOW + 200)

    ttl = await raw.pttl(RECORD + "cookie-hash-1")
    assert (200 + GRACE - 1) * 1000 < ttl <= (200 + GRACE) * 1000  # NOW+400, not NOW+500


async def test_a_remembered_session_lives_until_its_expiration(
    store: RedisSessionStore, raw: aioredis.Redis
) -> None:
    await store.session_save(idle_session(remember_me=True, expires_at=NOW + 30 * 24 * HOUR))

    ttl = await raw.pttl(RECORD + "cookie-hash-1")

    assert ttl > 29 * 24 * HOUR * 1000


async def test_redis_deletes_a_session_by_itself_once_it_is_over(
    store: RedisSessionStore, raw: aioredis.Redis
) -> None:
    await store.session_save(idle_session(expires_at=NOW - GRACE + 0.3))
    assert await store.session_get("cookie-hash-1") is not None

    await asyncio.sleep(0.6)

    assert await store.session_get("cookie-hash-1") is None
    assert await raw.exists(RECORD + "cookie-hash-1") == 0


async def test_the_user_index_forgets_sessions_redis_expired(
    store: RedisSessionStore, raw: aioredis.Redis
) -> None:
    await store.session_save(idle_session("johns-old-laptop"))
    await raw.delete(RECORD + "johns-old-laptop")  # as its TTL would

    await store.session_save(idle_session("johns-phone"))

    assert await raw.smembers(USER_INDEX + "john") == {"johns-phone"}
    assert 0 < await raw.pttl(USER_INDEX + "john")  # the index expires too


async def test_a_session_saved_again_for_another_user_is_not_ended_with_the_first(
    store: RedisSessionStore,
) -> None:
    await store.session_save(idle_session("shared"))
    await store.session_save(idle_session("shared", username="mary"))

    assert await store.session_delete_user("john") == 0
    assert await store.session_get("shared") is not None
    assert await store.session_delete_user("mary") == 1


async def test_the_subscription_leaves_every_connection_of_the_pool_to_requests(
    redis_server: RedisServer, clock: FakeClock, raw: aioredis.Redis
) -> None:
    """maximum_active_connections: 1 still serves sessions while the replica listens for ended
    ones (the subscription used to hold the pool's only connection: every read was a 503)."""
    config = RedisConfig(
        host=redis_server.host,
        port=redis_server.port,
        username=redis_server.username,
        password=redis_server.user_password,
        timeout="1s",
        maximum_active_connections=1,
    )
    store = RedisSessionStore(config, clock=clock, inactivity={})
    await store.startup_check()
    listening = asyncio.create_task(store.listen(lambda kind, key: None))
    try:
        for _ in range(100):  # until the subscription holds its connection
            if (await raw.pubsub_numsub(CHANNEL))[0][1] == 1:
                break
            await asyncio.sleep(0.02)
        await store.session_save(session())

        assert await store.session_get("cookie-hash-1") == session()
        assert await store.session_delete("cookie-hash-1")
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await store.close()


async def test_an_unreachable_redis_is_a_storage_error_naming_no_id(
    store: RedisSessionStore, redis_server: RedisServer
) -> None:
    redis_server.stop()

    with pytest.raises(StorageError) as caught:
        await store.session_get("cookie-hash-secret")

    assert "cookie-hash-secret" not in str(caught.value)
    assert not await store.healthy()


async def test_a_store_that_cannot_log_in_fails_its_startup_check_without_the_password(
    redis_server: RedisServer,
) -> None:
    config = RedisConfig(
        host=redis_server.host, port=redis_server.port, username="portal", password="wrong-pw"
    )
    store = RedisSessionStore(config, clock=FakeClock(NOW), inactivity={})

    with pytest.raises(StartupCheckError) as caught:
        await store.startup_check()
    await store.close()

    assert "cannot connect to Redis or log in" in str(caught.value)
    assert "wrong-pw" not in str(caught.value)


async def test_tls_to_redis_trusts_a_private_ca_only_from_the_certificates_directory(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    trusted = tmp_path / "certificates"
    trusted.mkdir()
    ca.cert_pem.write_to_path(str(trusted / "redis-ca.pem"))
    with running_redis(tmp_path / "redis", tls_ca=ca) as server:
        config = RedisConfig(
            host=server.host,
            port=server.port,
            username=server.username,
            password=server.user_password,
            tls=TlsConfig(),
        )
        stranger = RedisSessionStore(config, clock=FakeClock(NOW), inactivity={})
        with pytest.raises(StartupCheckError) as caught:
            await stranger.startup_check()
        await stranger.close()
        store = RedisSessionStore(
            config, clock=FakeClock(NOW), inactivity={}, certificates_directory=trusted
        )
        await store.startup_check()
        try:
            await store.session_save(session())

            assert await store.session_get("cookie-hash-1") == session()
        finally:
            await store.close()

    assert "cannot connect to Redis or log in" in str(caught.value)
    assert server.user_password not in str(caught.value)
