"""The Redis fixture itself: it serves, it refuses strangers, and it stops for good."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from tests.integration.process import accepts
from tests.integration.redis_server import RedisServer


async def test_the_server_takes_its_acl_user_and_refuses_anyone_else(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.ping()
        assert (await client.acl_whoami()) in ("portal", b"portal")
    finally:
        await client.aclose()
    stranger = aioredis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await stranger.set("k", "v")
    finally:
        await stranger.aclose()


def test_a_stopped_server_no_longer_listens(redis_server: RedisServer) -> None:
    redis_server.stop()

    assert not accepts(redis_server.host, redis_server.port)
