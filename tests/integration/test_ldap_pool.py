"""LdapPool on its own, against a real slapd: connections handed back and reused, dead ones
replaced, a full pool waited for within the timeout then refused, an unreachable server tried
again within it (Authelia's pooling.timeout and pooling.retries, ldap_client_factory.go)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from portal.config import LdapBackendConfig
from portal.errors import BackendUnavailableError
from portal.users.ldap import LdapPool
from portal.users.ldap.connection import SUCCESS, Connector
from tests.integration.slapd import BASE_DN, SERVICE_DN, SERVICE_PASSWORD, Slapd

WHO_AM_I = f"dn:{SERVICE_DN}"
PoolFactory = Callable[..., LdapPool]


class Opener:
    """Open bound service connections to the test slapd, keeping every attempt and connection."""

    def __init__(self, slapd: Slapd) -> None:
        config = LdapBackendConfig.model_validate(
            {"address": slapd.url("ldap"), "base_dn": BASE_DN, "timeout": "2s"}
        )
        self.connector = Connector(config, None, logging.getLogger("tests.ldap_pool"))
        self.attempts = 0
        self.opened: list[Any] = []

    def __call__(self) -> Any:
        """Open one connection (in a pool's worker thread)."""
        self.attempts += 1
        conn = self.connector.connect(SERVICE_DN, SERVICE_PASSWORD)
        self.opened.append(conn)
        return conn

    def who_am_i(self, conn: Any) -> tuple[Any, str]:
        """Ask the server who this connection is bound as (RFC 4532); return it with the conn."""
        return conn, str(self.connector.ldap(lambda: conn.extend.standard.who_am_i()))

    def read_rootdse(self, conn: Any) -> int:
        """Read the RootDSE; return the result code."""
        return self.connector.read_rootdse(conn).code


@pytest.fixture
def opener(slapd: Slapd) -> Opener:
    return Opener(slapd)


@pytest.fixture
async def make_pool(opener: Opener) -> AsyncIterator[PoolFactory]:
    """Build pools on the opener; all are closed after the test."""
    made: list[LdapPool] = []

    def make(*, size: int = 2, timeout: float = 2.0, retry_pause: float | None = None) -> LdapPool:
        pool = LdapPool(
            opener,
            address="ldap://slapd",
            size=size,
            timeout=timeout,
            retry_pause=retry_pause,
            logger=logging.getLogger("tests.ldap_pool"),
        )
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


def blocked_until(event: threading.Event, opener: Opener) -> Callable[[Any], tuple[Any, str]]:
    """An operation that holds its connection until the event is set (at most 10 s)."""

    def op(conn: Any) -> tuple[Any, str]:
        event.wait(10)
        return opener.who_am_i(conn)

    return op


async def test_a_connection_is_handed_back_and_reused(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool()
    answers = [await pool.run(opener.who_am_i) for _ in range(3)]
    assert [who for _, who in answers] == [WHO_AM_I] * 3
    assert len(opener.opened) == 1
    assert all(conn is opener.opened[0] for conn, _ in answers)


async def test_a_write_gets_a_connection_of_its_own(make_pool: PoolFactory, opener: Opener) -> None:
    pool = make_pool()
    idle, _ = await pool.run(opener.who_am_i)
    fresh, who = await pool.run(opener.who_am_i, reuse=False)
    assert who == WHO_AM_I
    assert fresh is not idle and len(opener.opened) == 2


async def test_a_connection_the_server_dropped_is_replaced(
    make_pool: PoolFactory, opener: Opener, slapd: Slapd
) -> None:
    pool = make_pool()
    first, _ = await pool.run(opener.who_am_i)
    await asyncio.to_thread(slapd.restart)  # the idle connection is dead now
    second, who = await pool.run(opener.who_am_i)
    assert who == WHO_AM_I
    assert second is not first and len(opener.opened) == 2
    assert first.closed  # the dead one was let go, not kept
    assert await pool.run(opener.read_rootdse) == SUCCESS


async def test_a_call_waits_for_the_busy_connection_then_reuses_it_and_is_counted(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool(size=1, timeout=5.0)
    release = threading.Event()
    try:
        first = asyncio.create_task(pool.run(blocked_until(release, opener)))
        await asyncio.sleep(0.1)
        assert pool.waits == 0  # a free connection is no wait
        second = asyncio.create_task(pool.run(opener.who_am_i))
        await asyncio.sleep(0.3)
        assert not first.done() and not second.done()
    finally:
        release.set()
    (one, who_first), (other, who_second) = await first, await second
    assert who_first == who_second == WHO_AM_I
    assert one is other and len(opener.opened) == 1
    # What portal_ldap_pool_waits_total and ..._wait_seconds_total show.
    assert pool.waits == 1
    assert 0.25 < pool.wait_seconds < 5
    await pool.run(opener.who_am_i)
    assert pool.waits == 1


async def test_a_call_that_gets_no_connection_within_the_timeout_is_refused(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool(size=1, timeout=0.3)
    release = threading.Event()
    try:
        first = asyncio.create_task(pool.run(blocked_until(release, opener)))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(
            BackendUnavailableError,
            match=r"^authentication_backend\.ldap: all 1 connections to ldap://slapd stayed busy "
            r"for 0\.3s$",
        ):
            await pool.run(opener.who_am_i)
        assert 0.25 < time.monotonic() - started < 2
    finally:
        release.set()
    _, who = await first  # the busy one was never disturbed
    assert who == WHO_AM_I
    assert await pool.run(opener.read_rootdse) == SUCCESS  # and its slot came back


async def test_a_cancelled_caller_hands_the_connection_back_when_its_thread_is_done(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool(size=1, timeout=5.0)
    release = threading.Event()
    try:
        first = asyncio.create_task(pool.run(blocked_until(release, opener)))
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        waiting = asyncio.create_task(pool.run(opener.who_am_i))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # the thread still holds the connection
    finally:
        release.set()
    conn, who = await waiting
    assert who == WHO_AM_I
    assert conn is opener.opened[0] and len(opener.opened) == 1


async def test_an_unreachable_server_is_tried_again_until_the_timeout(
    make_pool: PoolFactory, opener: Opener, slapd: Slapd
) -> None:
    slapd.stop()
    for retry_pause, attempts in ((0.2, 3), (None, 1)):
        opener.attempts = 0
        pool = make_pool(timeout=0.6, retry_pause=retry_pause)
        with pytest.raises(BackendUnavailableError, match="cannot connect to"):
            await pool.run(opener.who_am_i)
        # Attempts at 0, 0.2 and 0.4 s; a fourth would come after the timeout. No pause: one.
        assert opener.attempts == attempts, retry_pause
    # A probe (the health check) asks once, whatever the pause.
    opener.attempts = 0
    with pytest.raises(BackendUnavailableError, match="cannot connect to"):
        await make_pool(timeout=0.6, retry_pause=0.2).run(opener.who_am_i, retry=False)
    assert opener.attempts == 1


async def test_a_server_back_within_the_timeout_answers_the_waiting_call(
    make_pool: PoolFactory, opener: Opener, slapd: Slapd
) -> None:
    slapd.stop()
    pool = make_pool(timeout=6.0, retry_pause=0.25)
    call = asyncio.create_task(pool.run(opener.who_am_i))
    await asyncio.sleep(0.6)
    assert not call.done()
    await asyncio.to_thread(slapd.start)
    _, who = await call
    assert who == WHO_AM_I
    assert opener.attempts >= 3


async def test_a_closed_pool_unbinds_its_idle_connections_and_refuses_calls(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool()
    await pool.run(opener.who_am_i)
    await pool.close()
    assert pool.closed and opener.opened[0].closed
    with pytest.raises(BackendUnavailableError, match="the backend is closed"):
        await pool.run(opener.who_am_i)


async def test_a_call_running_when_the_pool_closes_finishes_on_its_connection_then_unbinds_it(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool(size=1)
    idle, _ = await pool.run(opener.who_am_i)
    release = threading.Event()
    # Every worker thread (size + 2) busy, so the next call's operation waits in the queue.
    busy = [asyncio.ensure_future(pool.in_thread(release.wait, 10)) for _ in range(3)]
    try:
        call = asyncio.create_task(pool.run(opener.who_am_i))
        await asyncio.sleep(0.1)
        await pool.close()  # while the call holds the idle connection, its operation not yet run
    finally:
        release.set()
    conn, who = await call
    await asyncio.gather(*busy)
    assert who == WHO_AM_I
    # The operation ran on the connection it was handed, which was then unbound: not closed
    # before the operation, nor replaced by a connection opened after close().
    assert conn is idle and len(opener.opened) == 1
    for _ in range(50):
        if conn.closed:
            break
        await asyncio.sleep(0.02)
    assert conn.closed
