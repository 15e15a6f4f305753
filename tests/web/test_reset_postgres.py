"""The password reset on PostgreSQL storage, as stories: two portals on one database stand for
two replicas, and PostgreSQL stopping and starting again under a running portal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.postgres import ROLE as POSTGRES_ROLE
from tests.integration.postgres import PostgresServer, start_server
from tests.web.conftest import (
    Portal,
    StartPortal,
    choose_password,
    open_link,
    request_reset,
    reset_link_from,
)

NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"
UNAVAILABLE = "temporarily unavailable"


def on_postgres(server: PostgresServer, database: str) -> dict[str, Any]:
    """The storage overrides that put a portal on `database` (as an admin writes them)."""
    return {
        "storage": {
            "local": None,
            "postgres": {
                "address": server.address(),
                "database": database,
                "username": POSTGRES_ROLE,
                "password": server.password,
                "timeout": "2s",
            },
        }
    }


async def test_a_link_asked_for_on_one_replica_is_used_on_the_other_once(
    postgres_server: PostgresServer, postgres_database: str, start_portal: StartPortal
) -> None:
    # (The database is asked for first so that it outlives the portals using it.)
    first = await start_portal(**on_postgres(postgres_server, postgres_database))
    second = await start_portal(**on_postgres(postgres_server, postgres_database))

    asked = await request_reset(first.client, "john")
    assert asked.status == 200
    link = reset_link_from(await first.next_mail())

    assert (await open_link(second.client, link)).status == 200
    done = await choose_password(second.client, NEW_PASSWORD)
    assert "Your password has been changed" in await done.text()

    # The record the other replica consumed is shared: the same link is dead on the first one.
    again = await open_link(first.client, link)
    assert again.status == 400
    assert "This link is invalid or has expired" in await again.text()
    consumed = postgres_server.psql(
        "SELECT count(*) FROM identity_verifications WHERE consumed_at IS NOT NULL",
        database=postgres_database,
    )
    assert consumed == "1"


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A cluster of its own, for a story that stops it."""
    server = start_server()
    yield server
    server.remove()


async def health(portal: Portal) -> tuple[int, dict[str, Any]]:
    response = await portal.client.get("/api/health")
    body: dict[str, Any] = await response.json()
    return response.status, body


async def test_postgres_stopped_then_started_again_without_restarting_the_portal(
    own_server: PostgresServer, start_portal: StartPortal
) -> None:
    portal = await start_portal(**on_postgres(own_server, own_server.create_database()))
    assert await health(portal) == (200, {"status": "OK"})

    own_server.stop()
    status, body = await health(portal)
    assert status == 503
    assert body["backends"] == {"users": "ok", "storage": "failing"}
    # Step 1 answers an existing and an unknown user alike: 503, never a silent "sent".
    answers = [await request_reset(portal.client, name) for name in ("john", "nobody-here")]
    assert [answer.status for answer in answers] == [503, 503]
    texts = [await answer.text() for answer in answers]
    assert UNAVAILABLE in texts[0] and texts[0] == texts[1]

    own_server.start()
    assert await health(portal) == (200, {"status": "OK"})
    asked = await request_reset(portal.client, "john")
    assert asked.status == 200
    link = reset_link_from(await portal.next_mail())
    await open_link(portal.client, link)
    done = await choose_password(portal.client, NEW_PASSWORD)
    assert "Your password has been changed" in await done.text()
