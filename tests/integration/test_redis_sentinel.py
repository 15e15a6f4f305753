"""Redis Sentinel: the portal finds the master through a sentinel, and after the master is
stopped and its replica promoted, sessions work again without restarting anything; with
session.redis.tls the sentinel and the master are both reached over TLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from portal.clock import SystemClock
from portal.config import RedisConfig, SessionConfig, SessionCookieConfig
from portal.errors import StartupCheckError, StorageError
from portal.sessions import SessionStore
from portal.storage.redis import RedisSessionStore
from portal.users.base import User
from tests.conftest import SESSION_SECRET, FakeClock
from tests.contract.records import NOW, session
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


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_sentinel_set(tmp_path: Path, ca: trustme.CA) -> Iterator[SentinelSet]:
    """The same set, every server and the sentinel listening with TLS only (certificates by ca)."""
    with running_sentinel_set(tmp_path / "redis", tls_ca=ca) as servers:
        yield servers


@pytest.fixture
def trusted(tmp_path: Path, ca: trustme.CA) -> Path:
    """A certificates_directory holding the set's private CA, trusted nowhere else."""
    directory = tmp_path / "certificates"
    directory.mkdir()
    ca.cert_pem.write_to_path(str(directory / "redis-ca.pem"))
    return directory


def sentinel_config(servers: SentinelSet, **more: object) -> RedisConfig:
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
            **more,
        }
    )


async def test_after_a_failover_sessions_work_again_without_a_restart(
    sentinel_set: SentinelSet,
) -> None:
    await sessions_survive_a_failover(sentinel_set, sentinel_config(sentinel_set))


async def test_more_requests_than_connections_wait_for_one_as_without_sentinel(
    sentinel_set: SentinelSet,
) -> None:
    # maximum_active_connections bounds the pool; a request beyond it waits up to `timeout` for
    # a free connection (Authelia's pool does), it is not refused at once with a 503.
    config = sentinel_config(sentinel_set, maximum_active_connections=1, timeout="5s")
    store = RedisSessionStore(config, secret=SESSION_SECRET, clock=FakeClock(NOW), inactivity={})
    await store.startup_check()
    try:
        await store.session_save(session())
        found = await asyncio.gather(*(store.session_get("cookie-hash-1") for _ in range(20)))
        assert found == [session()] * 20
    finally:
        await store.close()


async def test_tls_reaches_the_sentinel_and_the_master_trusting_the_certificates_directory(
    tls_sentinel_set: SentinelSet, trusted: Path
) -> None:
    records = RedisSessionStore(
        sentinel_config(tls_sentinel_set, tls={}),
        secret=SESSION_SECRET,
        clock=SystemClock(),
        inactivity={},
        certificates_directory=trusted,
    )
    await records.startup_check()
    sessions = SessionStore(records, SystemClock(), cache_ttl=0)
    try:
        created = await sessions.create(JOHN, COOKIE, remember_me=False)

        assert await sessions.get(created, COOKIE) is not None
    finally:
        await records.close()


async def test_tls_sentinel_without_the_ca_trusted_fails_at_start_up_saying_why(
    tls_sentinel_set: SentinelSet,
) -> None:
    records = RedisSessionStore(
        sentinel_config(tls_sentinel_set, tls={}),
        secret=SESSION_SECRET,
        clock=SystemClock(),
        inactivity={},
    )
    with pytest.raises(StartupCheckError) as caught:
        await records.startup_check()
    await records.close()

    message = str(caught.value)
    assert "cannot connect to Redis" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message
    for secret in (tls_sentinel_set.sentinel.password, tls_sentinel_set.master.user_password):
        assert secret not in message


@pytest.mark.parametrize(
    ("server_name", "starts"), [("localhost", True), ("redis.example.net", False)]
)
async def test_tls_server_name_is_the_name_checked_on_the_sentinel_and_the_master(
    tls_sentinel_set: SentinelSet, trusted: Path, server_name: str, starts: bool
) -> None:
    """The certificates name 127.0.0.1 and localhost, not redis.example.net."""
    records = RedisSessionStore(
        sentinel_config(tls_sentinel_set, tls={"server_name": server_name}),
        secret=SESSION_SECRET,
        clock=SystemClock(),
        inactivity={},
        certificates_directory=trusted,
    )
    try:
        if starts:
            await records.startup_check()
            await records.session_save(session())
            assert await records.session_get("cookie-hash-1") == session()
        else:
            with pytest.raises(StartupCheckError, match="redis.example.net"):
                await records.startup_check()
    finally:
        await records.close()


async def test_after_a_failover_over_tls_sessions_work_again_without_a_restart(
    tls_sentinel_set: SentinelSet, trusted: Path
) -> None:
    await sessions_survive_a_failover(
        tls_sentinel_set, sentinel_config(tls_sentinel_set, tls={}), trusted
    )


async def sessions_survive_a_failover(
    servers: SentinelSet, config: RedisConfig, certificates_directory: Path | None = None
) -> None:
    """Start the store on the set, stop the master, and check sessions work once it is replaced."""
    records = RedisSessionStore(
        config,
        secret=SESSION_SECRET,
        clock=SystemClock(),
        inactivity={},
        certificates_directory=certificates_directory,
    )
    await records.startup_check()
    sessions = SessionStore(records, SystemClock(), cache_ttl=0)
    try:
        before = await sessions.create(JOHN, COOKIE, remember_me=False)
        await asyncio.sleep(0.5)  # replicated (asynchronously) to the replica

        servers.master.stop()

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
