"""The portal with session.redis: sessions live in Redis under their cookie's hash, encrypted
with session.secret; when Redis is down nothing is let through and /api/health says so; once it
is back, all works again."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from portal.storage.redis import RECORD
from portal.users.hashing import verify_password
from tests.integration.redis_server import RedisServer, running_redis
from tests.web.conftest import (
    Portal,
    StartPortal,
    choose_password,
    open_link,
    request_reset,
    reset_link_from,
    sign_in,
    signed_in,
)
from tests.web.test_reset_flow import NEW_PASSWORD, stored_hash


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def portal(redis_server: RedisServer, start_portal: StartPortal) -> Portal:
    """A portal keeping its sessions in the test's Redis (started first, so stopped last)."""
    return await start_portal(
        session={"redis": redis_of(redis_server)}, access_control={"default_policy": "one_factor"}
    )


def redis_of(server: RedisServer) -> dict[str, Any]:
    """Return the session.redis block logging in to the server as its ACL user."""
    return {
        "host": server.host,
        "port": server.port,
        "username": server.username,
        "password": server.user_password,
    }


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """What an administrator with redis-cli sees."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_a_session_lives_in_redis_under_the_hash_of_its_cookie_only(
    portal: Portal, raw: aioredis.Redis
) -> None:
    signed = await sign_in(portal.client, "john")
    assert signed.status == 302
    value = signed.cookies["portal_session"].value
    assert await signed_in(portal.client) == 200

    keys = [key async for key in raw.scan_iter(RECORD + "*")]
    session_id = hashlib.sha256(value.encode()).hexdigest()
    assert keys == [RECORD + session_id]
    everything = [key async for key in raw.scan_iter("*")]
    stored = [str(await raw.hgetall(k)) for k in everything if await raw.type(k) == "hash"]
    assert not any(value in text for text in [*everything, *stored])
    assert await portal.storage.session_get(session_id) is None  # not in SQLite


async def test_what_redis_holds_of_a_session_names_nobody_in_clear(
    portal: Portal, raw: aioredis.Redis
) -> None:
    assert (await sign_in(portal.client, "john")).status == 302
    assert await signed_in(portal.client) == 200

    stored: list[str] = []
    async for key in raw.scan_iter("*"):
        stored.append(str(key))
        kind = await raw.type(key)
        if kind == "hash":
            stored += [str(part) for item in (await raw.hgetall(key)).items() for part in item]
        elif kind == "set":
            stored += [str(member) for member in await raw.smembers(key)]
    text = "\n".join(stored)
    # john's username, display name, address and groups (tests/fixtures/users.yml)
    for private in ["john", "John Doe", "john.doe@authelia.com", "admins"]:
        assert private not in text
    assert "dev" not in stored  # the other group, as a value of its own (3 letters: base64 has it)


async def test_a_portal_with_another_session_secret_opens_no_session_of_the_first(
    portal: Portal, redis_server: RedisServer, start_portal: StartPortal
) -> None:
    signed = await sign_in(portal.client, "john")
    cookie = {"Cookie": f"portal_session={signed.cookies['portal_session'].value}"}
    other = await start_portal(
        session={"secret": "another-session-secret-" * 2, "redis": redis_of(redis_server)},
        access_control={"default_policy": "one_factor"},
    )

    authz = {"X-Original-URL": "http://127.0.0.1/private", "X-Original-Method": "GET"}
    response = await other.client.get(
        "/api/authz/auth-request", headers={**authz, **cookie}, allow_redirects=False
    )

    assert response.status == 401  # no session (not a 500): signing in again is the way
    assert await signed_in(portal.client) == 200  # the first portal still reads it
    assert (await sign_in(other.client, "john")).status == 302
    assert await signed_in(other.client) == 200


async def test_signing_out_ends_the_session_in_redis(portal: Portal, raw: aioredis.Redis) -> None:
    assert (await sign_in(portal.client, "john")).status == 302

    await portal.client.get("/logout", allow_redirects=False)

    assert [key async for key in raw.scan_iter(RECORD + "*")] == []
    assert await signed_in(portal.client) == 401


async def test_with_redis_down_nothing_is_let_through_and_health_names_sessions(
    portal: Portal, redis_server: RedisServer
) -> None:
    assert (await sign_in(portal.client, "john")).status == 302
    assert await signed_in(portal.client) == 200

    redis_server.stop()
    portal.clock.advance(2)  # past the cache's second of trust

    assert await signed_in(portal.client) == 503
    page = await portal.client.get("/")  # the sign-in page: it looks for a session first
    assert page.status == 503 and "temporarily unavailable" in await page.text()
    health = await portal.client.get("/api/health")
    assert health.status == 503
    assert (await health.json())["backends"] == {
        "users": "ok",
        "storage": "ok",
        "sessions": "failing",
    }

    redis_server.start()  # back, empty (no persistence): no restart of the portal needed

    assert (await portal.client.get("/api/health")).status == 200
    assert await signed_in(portal.client) == 401
    assert (await sign_in(portal.client, "john")).status == 302
    assert await signed_in(portal.client) == 200


async def test_a_reset_redis_refuses_to_end_the_sessions_of_leaves_no_old_session_alive(
    portal: Portal, raw: aioredis.Redis
) -> None:
    """A new password with the old sessions still open is the one outcome that must not be: the
    sessions end before the password is written, so a store that cannot end them stops the reset
    (503, nothing written, the link still good) until it can."""
    assert (await sign_in(portal.client, "john")).status == 302
    assert await signed_in(portal.client) == 200
    response = await request_reset(portal.client, "john")
    assert response.status == 200
    await open_link(portal.client, reset_link_from(await portal.next_mail()))
    # Redis answers reads but refuses the scripts that end sessions (an outage, made exact).
    await raw.acl_setuser("portal", enabled=True, commands=["-evalsha", "-eval"])

    refused = await choose_password(portal.client, NEW_PASSWORD)

    assert refused.status == 503
    assert not verify_password(NEW_PASSWORD, await stored_hash(portal.users_file, "john"))
    await raw.acl_setuser("portal", enabled=True, categories=["+@all"])
    portal.clock.advance(2)  # past the cache's second of trust
    assert await signed_in(portal.client) == 200, "nothing changed: still signed in"
    # Redis is back: the same link sets the password, and the old session ends with it.
    done = await choose_password(portal.client, NEW_PASSWORD)
    assert done.status == 200 and "Your password has been changed" in await done.text()
    assert verify_password(NEW_PASSWORD, await stored_hash(portal.users_file, "john"))
    portal.clock.advance(2)
    assert await signed_in(portal.client) == 401
