"""The signed-in password change with the sessions in Redis (session.redis) and in PostgreSQL:
two portals on one store stand for two replicas; the change made on one ends john's session on
the other and keeps the one it was made from, seen from both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.postgres import PostgresServer
from tests.integration.redis_server import running_redis
from tests.web.conftest import DEMO_PASSWORD, Client, StartPortal, sign_in, signed_in
from tests.web.test_password_change import API, NEW_PASSWORD, OPEN
from tests.web.test_redis_sessions import redis_of
from tests.web.test_reset_postgres import on_postgres
from tests.web.test_totp_registration import elevate


@pytest.fixture(params=["redis", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The overrides that put the session records in Redis or in PostgreSQL."""
    if request.param == "redis":
        with running_redis(tmp_path / "redis") as server:
            yield {"session": {"redis": redis_of(server)}}
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        yield on_postgres(postgres, request.getfixturevalue("postgres_database"))


async def test_the_change_on_one_replica_ends_the_other_session_and_keeps_this_one(
    store: dict[str, Any], start_portal: StartPortal
) -> None:
    here = await start_portal(**store, **OPEN)
    there = await start_portal(**store, **OPEN)
    assert (await sign_in(here.client)).status == 302
    assert (await sign_in(there.client)).status == 302
    await elevate(here, {})

    body = {"old_password": DEMO_PASSWORD, "new_password": NEW_PASSWORD}
    assert (await here.client.post(API, json=body)).status == 200
    here.clock.advance(2)  # past session cache_ttl: replicas without news read the store again

    assert await signed_in(there.client) == 401
    assert await signed_in(here.client) == 200
    # The kept session opens on the other replica too: it is in the shared store.
    jar = here.client.session.cookie_jar.filter_cookies(here.client.make_url("/"))
    kept = jar["portal_session"].value
    browser: Client = TestClient(there.client.server)  # type: ignore[assignment]
    try:
        seen_there = await browser.get(
            "/api/authz/auth-request",
            headers={
                "X-Original-URL": "http://127.0.0.1/private",
                "X-Original-Method": "GET",
                "Cookie": f"portal_session={kept}",
            },
        )
        assert seen_there.status == 200
    finally:
        await browser.session.close()
