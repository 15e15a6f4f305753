"""The Redis session store beyond the shared contract: records expire in Redis by themselves,
the per-user index stays clean, records are encrypted with session.secret (bound to their key),
and an unreachable Redis is a StorageError that names nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from portal.storage.redis.sealing import Sealer
from tests.conftest import SESSION_SECRET, FakeClock
from tests.contract.records import HOUR, NOW, session
from tests.integration.redis_server import RedisServer, running_redis

INACTIVITY = 300.0  # the cookie domain's inactivity, seconds
JOHN = Sealer(SESSION_SECRET).user_tag("john")  # the per-user index names john by this hash


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
    started = RedisSessionStore(
        config, secret=SESSION_SECRET, clock=clock, inactivity={"example.com": INACTIVITY}
    )
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

    assert await raw.smembers(USER_INDEX + JOHN) == {"johns-phone"}
    assert 0 < await raw.pttl(USER_INDEX + JOHN)  # the index expires too


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
    store = RedisSessionStore(config, secret=SESSION_SECRET, clock=clock, inactivity={})
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
    store = RedisSessionStore(config, secret=SESSION_SECRET, clock=FakeClock(NOW), inactivity={})

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
        stranger = RedisSessionStore(
            config, secret=SESSION_SECRET, clock=FakeClock(NOW), inactivity={}
        )
        with pytest.raises(StartupCheckError) as caught:
            await stranger.startup_check()
        await stranger.close()
        store = RedisSessionStore(
            config,
            secret=SESSION_SECRET,
            clock=FakeClock(NOW),
            inactivity={},
            certificates_directory=trusted,
        )
        await store.startup_check()
        try:
            await store.session_save(session())

            assert await store.session_get("cookie-hash-1") == session()
        finally:
            await store.close()

    assert "cannot connect to Redis or log in" in str(caught.value)
    assert server.user_password not in str(caught.value)


# --- encryption with session.secret ---------------------------------------------------------------

PRIVATE = {
    "domain": "example.com",
    "display_name": "Jonathan Quincy",
    "emails": ["jonathan.quincy@example.org"],
    "groups": ["payroll-admins"],
}


async def everything_in(raw: aioredis.Redis) -> str:
    """Return every key and value Redis holds as one text (what redis-cli would show)."""
    parts: list[str] = []
    async for key in raw.scan_iter("*"):
        kind = await raw.type(key)
        parts.append(str(key))
        if kind == "hash":
            parts += [f"{k!s}={v!s}" for k, v in (await raw.hgetall(key)).items()]
        elif kind == "set":
            parts += [str(member) for member in await raw.smembers(key)]
        elif kind == "zset":
            parts += [str(member) for member in await raw.zrange(key, 0, -1)]
        else:
            parts.append(str(await raw.get(key)))
    return "\n".join(parts)


async def test_redis_holds_no_username_name_address_or_group_in_clear(
    store: RedisSessionStore, raw: aioredis.Redis
) -> None:
    await store.session_save(idle_session(username="jquincy", data=PRIVATE))
    await store.session_update_data("cookie-hash-1", {**PRIVATE, "groups": ["audit-readers"]})

    stored = await everything_in(raw)
    for private in ["jquincy", "Jonathan Quincy", "jonathan.quincy@example.org", "payroll-admins"]:
        assert private not in stored
    assert "audit-readers" not in stored
    assert "cookie-hash-1" in stored  # the id (a cookie's hash) and the times stay readable
    record = await store.session_get("cookie-hash-1")
    assert record is not None and record.username == "jquincy"
    assert record.data["groups"] == ["audit-readers"]


async def test_a_record_moved_to_another_key_opens_no_session(
    store: RedisSessionStore, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await store.session_save(idle_session("victims-hash", username="admin", data=PRIVATE))
    await store.session_save(idle_session("attackers-hash", username="mallory"))

    # Someone with write access to Redis copies the admin's record over their own session's.
    victims = {str(k): str(v) for k, v in (await raw.hgetall(RECORD + "victims-hash")).items()}
    for field, value in victims.items():
        await raw.hset(RECORD + "attackers-hash", field, value)

    with caplog.at_level(logging.WARNING):
        assert await store.session_get("attackers-hash") is None
    assert (await store.session_get("victims-hash")) is not None  # the original still opens
    assert "cannot be decrypted" in caplog.text
    assert "attackers-hash" not in caplog.text and victims["data"] not in caplog.text


@pytest.mark.parametrize("field", ["identity", "data"])
async def test_an_altered_record_opens_no_session(
    store: RedisSessionStore, raw: aioredis.Redis, field: str
) -> None:
    await store.session_save(idle_session(data=PRIVATE))
    sealed = await raw.hget(RECORD + "cookie-hash-1", field)
    assert isinstance(sealed, str)
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    await raw.hset(RECORD + "cookie-hash-1", field, flipped)

    assert await store.session_get("cookie-hash-1") is None


async def test_a_record_whose_user_tag_was_changed_opens_no_session(
    store: RedisSessionStore, raw: aioredis.Redis
) -> None:
    """Else its user's sessions could not all be ended (the index and deletes go by the tag)."""
    await store.session_save(idle_session())
    await raw.hset(RECORD + "cookie-hash-1", "user_tag", Sealer(SESSION_SECRET).user_tag("mary"))

    assert await store.session_get("cookie-hash-1") is None


async def test_a_store_with_another_secret_reads_no_session_and_warns_once(
    store: RedisSessionStore,
    redis_server: RedisServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await store.session_save(idle_session("cookie-hash-1", data=PRIVATE))
    await store.session_save(idle_session("cookie-hash-2", data=PRIVATE))
    config = RedisConfig(
        host=redis_server.host,
        port=redis_server.port,
        username=redis_server.username,
        password=redis_server.user_password,
    )
    other = RedisSessionStore(config, secret="another-secret-" * 3, clock=clock, inactivity={})
    await other.startup_check()
    try:
        with caplog.at_level(logging.WARNING):
            assert await other.session_get("cookie-hash-1") is None
            assert await other.session_get("cookie-hash-2") is None
        # Its user index is another hash: ending john's sessions there ends none of these.
        assert await other.session_delete_user("john") == 0
    finally:
        await other.close()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "another-secret" not in caplog.text and "cookie-hash" not in caplog.text
    assert await store.session_get("cookie-hash-1") is not None


async def test_a_redis_that_may_evict_keys_is_warned_of_at_start_up(
    redis_server: RedisServer,
    clock: FakeClock,
    raw: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = RedisConfig(
        host=redis_server.host,
        port=redis_server.port,
        username=redis_server.username,
        password=redis_server.user_password,
    )
    warnings = []
    for policy in ("allkeys-lru", "noeviction"):
        await raw.config_set("maxmemory-policy", policy)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="portal.storage.redis"):
            started = RedisSessionStore(config, secret=SESSION_SECRET, clock=clock, inactivity={})
            await started.startup_check()
            await started.close()
        warnings.append([r.getMessage() for r in caplog.records if "maxmemory" in r.getMessage()])
    assert len(warnings[0]) == 1 and "allkeys-lru" in warnings[0][0]
    assert "noeviction" in warnings[0][0]
    assert warnings[1] == []


async def test_only_a_session_that_existed_is_announced_to_the_other_replicas(
    store: RedisSessionStore, raw: aioredis.Redis
) -> None:
    # A flood of sign-outs with made-up cookies must not make every replica drop cache entries.
    pubsub = raw.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"
        assert not await store.session_delete("no-such-session")
        await store.session_save(idle_session())
        assert await store.session_delete("cookie-hash-1")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None and message["data"] == "session:cookie-hash-1"
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it bare
