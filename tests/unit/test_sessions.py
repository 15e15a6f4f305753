"""SessionStore on real SQLite files with a fake clock, and the session cookie's attributes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from portal.config import FileBackendConfig, SessionConfig, SessionCookieConfig
from portal.errors import BackendUnavailableError, ConfigError
from portal.session_cookies import cookie_attributes
from portal.sessions import MISS, Session, SessionStore
from portal.storage.base import SessionRecord
from portal.storage.sqlite import SqliteStorage
from portal.users.base import AccountState, User
from portal.users.file import FileUserBackend
from tests.conftest import START, ConfigFactory, FakeClock

HOUR = 3600.0
MINUTE = 60.0
CACHE_TTL = 1.0
TOUCH = 10.0

JOHN = User("john", "John Doe", ("john.doe@authelia.com",), ("admins", "dev"))
HARRY = User("harry", "Harry Potter", ("harry.potter@authelia.com",), ())


# -- helpers ---------------------------------------------------------------------------------


def cookie_for(
    domain: str = "example.com", authelia_url: str = "https://auth.example.com", **session: Any
) -> SessionCookieConfig:
    """Build a cookie the way the configuration hands it out: filled from the session section."""
    config = SessionConfig(
        cookies=(SessionCookieConfig(domain=domain, authelia_url=authelia_url),), **session
    )
    return config.cookies[0]


def stored_rows(db: Path) -> list[Any]:
    """Read the sessions table through a separate plain connection, as an operator would."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT id, username, last_active_at, expires_at, remember_me FROM sessions"
        ).fetchall()


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
async def other_instance_storage(db: Path, storage: SqliteStorage) -> AsyncIterator[SqliteStorage]:
    """A second connection to the same file, as another portal instance would hold."""
    store = SqliteStorage(db)
    await store.startup_check()
    yield store
    await store.close()


@pytest.fixture
def sessions(storage: SqliteStorage, clock: FakeClock) -> SessionStore:
    return SessionStore(storage, clock, cache_ttl=CACHE_TTL, touch_interval=TOUCH)


@pytest.fixture
def cookie() -> SessionCookieConfig:
    return cookie_for(
        expiration=timedelta(hours=1),
        inactivity=timedelta(minutes=5),
        remember_me=timedelta(days=30),
    )


# -- creating and reading ----------------------------------------------------------------------


async def test_create_returns_a_value_that_storage_only_knows_by_its_sha256(
    sessions: SessionStore, cookie: SessionCookieConfig, db: Path
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)

    rows = stored_rows(db)
    assert len(rows) == 1
    assert rows[0][0] == sha256(value)
    assert value not in str(rows)
    assert len(value) >= 43  # 256 random bits, URL-safe


async def test_every_create_returns_a_new_value(
    sessions: SessionStore, cookie: SessionCookieConfig
) -> None:
    first = await sessions.create(JOHN, cookie, remember_me=False)
    second = await sessions.create(JOHN, cookie, remember_me=False)

    assert first != second


async def test_get_returns_the_signed_in_user(
    sessions: SessionStore, cookie: SessionCookieConfig
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)

    session = await sessions.get(value, cookie)

    assert session is not None
    assert session.id == sha256(value)
    assert (session.username, session.display_name) == ("john", "John Doe")
    assert session.emails == ("john.doe@authelia.com",)
    assert session.groups == ("admins", "dev")
    assert session.created_at == START
    assert session.expires_at == START + HOUR
    assert session.remember_me is False


async def test_a_session_created_on_one_instance_works_at_once_on_another(
    storage: SqliteStorage,
    other_instance_storage: SqliteStorage,
    clock: FakeClock,
    cookie: SessionCookieConfig,
) -> None:
    here = SessionStore(storage, clock, cache_ttl=CACHE_TTL)
    there = SessionStore(other_instance_storage, clock, cache_ttl=CACHE_TTL)
    assert await there.get("A" * 43, cookie) is None  # a miss first: misses are not cached

    value = await here.create(JOHN, cookie, remember_me=False)

    session = await there.get(value, cookie)
    assert session is not None and session.username == "john"


async def test_a_session_does_not_open_another_cookie_domain(
    sessions: SessionStore, cookie: SessionCookieConfig
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)
    elsewhere = cookie_for("example.org", "https://auth.example.org")

    assert await sessions.get(value, elsewhere) is None
    assert await sessions.get(value, cookie) is not None


async def test_a_disabled_user_gets_no_session(
    sessions: SessionStore, cookie: SessionCookieConfig, db: Path
) -> None:
    disabled = User("bob", "Bob", (), (), disabled=True)

    with pytest.raises(ValueError, match="disabled"):
        await sessions.create(disabled, cookie, remember_me=False)
    assert stored_rows(db) == []


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x",
        "A" * 10_000,
        "é" * 43,
        "naïve-session-value-that-is-long-enough-xx",
        "A" * 42 + "\x00",
        "A" * 42 + "\n",
        "../../../../etc/passwd-and-more-characters",
        "A" * 43,  # well-formed but unknown
    ],
)
async def test_malformed_or_unknown_values_open_nothing_and_raise_nothing(
    sessions: SessionStore, cookie: SessionCookieConfig, value: str
) -> None:
    await sessions.create(JOHN, cookie, remember_me=False)

    assert await sessions.get(value, cookie) is None
    await sessions.destroy(value)  # harmless too


# -- expiration, inactivity, remember me ------------------------------------------------------


async def test_a_session_ends_at_its_absolute_expiration_even_while_in_use(
    sessions: SessionStore, cookie: SessionCookieConfig, clock: FakeClock, db: Path
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)
    for _ in range(14):  # every 4 minutes: never idle, 56 minutes in
        clock.advance(4 * MINUTE)
        assert await sessions.get(value, cookie) is not None

    clock.advance(4 * MINUTE)  # 60 minutes: the absolute expiration

    assert await sessions.get(value, cookie) is None
    assert stored_rows(db) == []  # ended sessions are deleted


async def test_an_idle_session_ends_after_inactivity_and_is_deleted(
    sessions: SessionStore, cookie: SessionCookieConfig, clock: FakeClock, db: Path
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)
    clock.advance(5 * MINUTE)
    assert await sessions.get(value, cookie) is not None  # exactly at the limit: still alive

    clock.advance(5 * MINUTE + 1)

    assert await sessions.get(value, cookie) is None
    assert stored_rows(db) == []
    clock.advance(-5 * MINUTE)  # even back within the window, it stays ended
    assert await sessions.get(value, cookie) is None


async def test_activity_keeps_a_session_alive_past_the_inactivity_period(
    sessions: SessionStore, cookie: SessionCookieConfig, clock: FakeClock
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)
    for _ in range(5):  # 20 minutes of use, a request every 4 minutes
        clock.advance(4 * MINUTE)
        assert await sessions.get(value, cookie) is not None


async def test_inactivity_zero_disables_the_idle_check(
    sessions: SessionStore, clock: FakeClock
) -> None:
    cookie = cookie_for(expiration=timedelta(hours=1), inactivity=timedelta(0))
    value = await sessions.create(JOHN, cookie, remember_me=False)

    clock.advance(HOUR - 1)

    assert await sessions.get(value, cookie) is not None


async def test_remember_me_ignores_inactivity_and_uses_the_remember_me_lifetime(
    sessions: SessionStore, cookie: SessionCookieConfig, clock: FakeClock, db: Path
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=True)
    session = await sessions.get(value, cookie)
    assert session is not None and session.remember_me is True
    assert session.expires_at == START + 30 * 24 * HOUR

    clock.advance(29 * 24 * HOUR)  # idle for 29 days, long past the hour and the 5 minutes
    assert await sessions.get(value, cookie) is not None

    clock.advance(24 * HOUR)
    assert await sessions.get(value, cookie) is None
    assert stored_rows(db) == []


async def test_remember_me_of_zero_gives_an_ordinary_session(
    sessions: SessionStore, clock: FakeClock
) -> None:
    cookie = cookie_for(remember_me=timedelta(0))
    value = await sessions.create(JOHN, cookie, remember_me=True)

    session = await sessions.get(value, cookie)

    assert session is not None and session.remember_me is False
    assert session.expires_at == START + HOUR  # the session section's default expiration


# -- touching --------------------------------------------------------------------------------


async def test_activity_is_written_at_most_once_per_touch_interval(
    sessions: SessionStore, cookie: SessionCookieConfig, clock: FakeClock, db: Path
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)
    writes: list[float] = []

    def last_active_at() -> float:
        return float(stored_rows(db)[0][2])

    for _ in range(60):  # a request every half second for 30 seconds
        clock.advance(0.5)
        assert await sessions.get(value, cookie) is not None
        if last_active_at() not in [START, *writes]:
            writes.append(last_active_at())

    assert writes == [START + 10, START + 20, START + 30]
    session = await sessions.get(value, cookie)
    assert session is not None and session.last_active_at == START + 30


async def test_activity_seen_on_another_instance_keeps_the_session_alive_here(
    storage: SqliteStorage,
    other_instance_storage: SqliteStorage,
    clock: FakeClock,
    cookie: SessionCookieConfig,
) -> None:
    # A cache here long enough to go stale: what it holds looks idle, storage knows better.
    here = SessionStore(storage, clock, cache_ttl=HOUR, touch_interval=TOUCH)
    there = SessionStore(other_instance_storage, clock, cache_ttl=CACHE_TTL, touch_interval=TOUCH)
    value = await here.create(JOHN, cookie, remember_me=False)
    assert await here.get(value, cookie) is not None  # cached here

    for _ in range(3):  # the user's requests all go to the other instance for 12 minutes
        clock.advance(4 * MINUTE)
        assert await there.get(value, cookie) is not None

    assert await here.get(value, cookie) is not None
    assert await there.get(value, cookie) is not None  # and it was not deleted


# -- ending sessions -------------------------------------------------------------------------


async def test_destroy_ends_the_session_at_once_even_when_cached(
    sessions: SessionStore, cookie: SessionCookieConfig, db: Path
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)
    assert await sessions.get(value, cookie) is not None  # now cached

    await sessions.destroy(value)

    assert await sessions.get(value, cookie) is None
    assert stored_rows(db) == []


async def test_a_read_in_flight_during_destroy_does_not_bring_the_session_back(
    sessions: SessionStore, cookie: SessionCookieConfig
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)

    await asyncio.gather(sessions.get(value, cookie), sessions.destroy(value))

    assert await sessions.get(value, cookie) is None


async def test_destroy_user_ends_every_session_of_that_user_only(
    sessions: SessionStore, cookie: SessionCookieConfig
) -> None:
    laptop = await sessions.create(JOHN, cookie, remember_me=False)
    phone = await sessions.create(JOHN, cookie, remember_me=True)
    harry = await sessions.create(HARRY, cookie, remember_me=False)
    assert await sessions.get(laptop, cookie) is not None  # cached

    assert await sessions.destroy_user("john") == 2

    assert await sessions.get(laptop, cookie) is None
    assert await sessions.get(phone, cookie) is None
    assert await sessions.get(harry, cookie) is not None


async def test_a_sign_out_on_another_instance_is_seen_here_within_cache_ttl(
    storage: SqliteStorage,
    other_instance_storage: SqliteStorage,
    clock: FakeClock,
    cookie: SessionCookieConfig,
) -> None:
    here = SessionStore(storage, clock, cache_ttl=CACHE_TTL)
    there = SessionStore(other_instance_storage, clock, cache_ttl=CACHE_TTL)
    value = await here.create(JOHN, cookie, remember_me=False)
    assert await here.get(value, cookie) is not None

    await there.destroy(value)
    # Within cache_ttl this instance may still answer from its cache (no storage round trip).
    assert await here.get(value, cookie) is not None

    clock.advance(CACHE_TTL + 0.01)
    assert await here.get(value, cookie) is None


async def test_destroy_user_on_another_instance_is_seen_here_within_cache_ttl(
    storage: SqliteStorage,
    other_instance_storage: SqliteStorage,
    clock: FakeClock,
    cookie: SessionCookieConfig,
) -> None:
    here = SessionStore(storage, clock, cache_ttl=CACHE_TTL)
    there = SessionStore(other_instance_storage, clock, cache_ttl=CACHE_TTL)
    value = await here.create(JOHN, cookie, remember_me=True)
    assert await here.get(value, cookie) is not None

    assert await there.destroy_user("john") == 1

    clock.advance(CACHE_TTL + 0.01)
    assert await here.get(value, cookie) is None


async def test_purge_deletes_only_expired_rows(
    sessions: SessionStore, cookie: SessionCookieConfig, clock: FakeClock, db: Path
) -> None:
    await sessions.create(JOHN, cookie, remember_me=False)
    kept = await sessions.create(HARRY, cookie, remember_me=True)

    clock.advance(HOUR + 1)

    assert await sessions.purge() == 1
    assert [row[1] for row in stored_rows(db)] == ["harry"]
    assert await sessions.get(kept, cookie) is not None


async def test_the_cache_keeps_at_most_cache_size_sessions_and_rereads_the_oldest(
    storage: SqliteStorage,
    other_instance_storage: SqliteStorage,
    clock: FakeClock,
    cookie: SessionCookieConfig,
) -> None:
    here = SessionStore(storage, clock, cache_ttl=HOUR, cache_size=2)
    there = SessionStore(other_instance_storage, clock)
    values = [await here.create(JOHN, cookie, remember_me=True) for _ in range(3)]
    for value in values:
        assert await here.get(value, cookie) is not None
    for value in values:
        await there.destroy(value)

    # The oldest was evicted, so storage is read and the sign-out seen; the two newest are
    # still served from the (deliberately long-lived) cache.
    assert await here.get(values[0], cookie) is None
    assert await here.get(values[2], cookie) is not None


# -- cookie attributes -----------------------------------------------------------------------


def test_cookie_attributes_for_an_https_domain() -> None:
    cookie = cookie_for(same_site="lax")

    assert cookie_attributes(cookie, remember_me=False) == {
        "domain": "example.com",
        "path": "/",
        "secure": True,
        "httponly": True,
        "samesite": "Lax",
    }  # no max_age: a browser-session cookie


def test_cookie_attributes_for_127_0_0_1_are_host_only_and_not_secure() -> None:
    cookie = cookie_for("127.0.0.1", "http://127.0.0.1:9091", same_site="strict")

    attributes = cookie_attributes(cookie, remember_me=False)

    assert "domain" not in attributes
    assert attributes["secure"] is False
    assert attributes["samesite"] == "Strict"
    assert attributes["httponly"] is True


def test_cookie_attributes_for_localhost_are_host_only() -> None:
    cookie = cookie_for("localhost", "http://localhost:9091")

    assert "domain" not in cookie_attributes(cookie, remember_me=False)


def test_cookie_attributes_with_remember_me_carry_max_age() -> None:
    cookie = cookie_for(remember_me=timedelta(days=30), same_site="none")

    attributes = cookie_attributes(cookie, remember_me=True)

    assert attributes["max_age"] == 30 * 24 * 3600
    assert attributes["samesite"] == "None"
    assert "max_age" not in cookie_attributes(cookie, remember_me=False)


class CountingStorage(SqliteStorage):
    """The real SQLite storage, counting session reads (to see a thundering herd)."""

    reads = 0

    async def session_get(self, session_id: str) -> SessionRecord | None:
        self.reads += 1
        return await super().session_get(session_id)


async def test_many_requests_for_an_uncached_session_read_storage_once(
    db: Path, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    storage = CountingStorage(db)
    await storage.startup_check()
    try:
        value = await SessionStore(storage, clock).create(JOHN, cookie, remember_me=False)
        cold = SessionStore(storage, clock)  # another instance: nothing cached yet
        sessions = await asyncio.gather(*(cold.get(value, cookie) for _ in range(64)))
        assert all(s is not None and s.username == "john" for s in sessions)
        assert storage.reads == 1
    finally:
        await storage.close()


# -- refreshing details from the user backend (Authelia's refresh_interval) ---------------------


class Directory:
    """A user backend over a dict, as an admin edits it; it can also be down or slow."""

    def __init__(self, *users: User) -> None:
        self.users = {u.username: u for u in users}
        self.lookups = 0
        self.down = False
        self.during_lookup: Callable[[], Awaitable[None]] | None = None

    async def get_user(self, identifier: str) -> User | None:
        self.lookups += 1
        await asyncio.sleep(0)  # a real backend answers from a worker thread, later
        if self.during_lookup is not None:
            await self.during_lookup()
        if self.down:
            raise BackendUnavailableError("the directory cannot be reached")
        return self.users.get(identifier)


def refreshing(
    storage: SqliteStorage, clock: FakeClock, directory: Directory, interval: float | None
) -> SessionStore:
    return SessionStore(
        storage, clock, users=directory, refresh_interval=interval, cache_ttl=CACHE_TTL
    )


async def test_new_groups_reach_the_session_once_the_refresh_interval_has_passed(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    directory = Directory(JOHN)
    sessions = refreshing(storage, clock, directory, 5 * MINUTE)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    directory.users["john"] = replace(JOHN, groups=("dev",), display_name="John D.")

    clock.advance(4 * MINUTE)
    session = await sessions.get(value, cookie)
    assert session is not None and session.groups == ("admins", "dev")  # not yet due

    clock.advance(MINUTE)
    session = await sessions.get(value, cookie)
    assert session is not None
    assert (session.groups, session.display_name) == (("dev",), "John D.")
    # Written through: another instance, with nothing cached, sees the new groups at once.
    there = SessionStore(storage, clock)
    fresh = await there.get(value, cookie)
    assert fresh is not None and fresh.groups == ("dev",)


async def test_a_refresh_is_written_once_per_interval_not_once_per_request(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    directory = Directory(JOHN)
    sessions = refreshing(storage, clock, directory, 5 * MINUTE)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    for _ in range(4 * 60):  # a request every 2.5 s for 10 minutes, cache lapsing in between
        clock.advance(2.5)
        assert await sessions.get(value, cookie) is not None
    assert directory.lookups == 2


async def test_always_reads_the_backend_on_every_request(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    directory = Directory(JOHN)
    sessions = refreshing(storage, clock, directory, 0.0)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    # The clock never moves: every get is inside the 1 s cache, and each still asks the backend.
    seen = []
    for _ in range(2):
        session = await sessions.get(value, cookie)
        assert session is not None
        seen.append(session.groups)
    directory.users["john"] = replace(JOHN, groups=())
    for _ in range(2):
        session = await sessions.get(value, cookie)
        assert session is not None
        seen.append(session.groups)
    assert seen == [JOHN.groups, JOHN.groups, (), ()]  # the edit shows on the very next get
    assert directory.lookups == 4


async def test_disable_never_reads_the_backend(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    directory = Directory(JOHN)
    sessions = refreshing(storage, clock, directory, None)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    directory.users.clear()
    for _ in range(10):  # 40 minutes of use, within the inactivity limit each time
        clock.advance(4 * MINUTE)
        assert await sessions.get(value, cookie) is not None
    assert directory.lookups == 0


@pytest.mark.parametrize("change", ["disabled", "deleted", "renamed", "must_change", "expired"])
async def test_the_session_of_a_disabled_or_deleted_user_ends_at_the_next_refresh(
    storage: SqliteStorage,
    clock: FakeClock,
    cookie: SessionCookieConfig,
    db: Path,
    change: str,
) -> None:
    directory = Directory(JOHN)
    sessions = refreshing(storage, clock, directory, 5 * MINUTE)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    if change == "disabled":
        directory.users["john"] = replace(JOHN, disabled=True)
    elif change == "must_change":  # an administrator demands a new password
        directory.users["john"] = replace(JOHN, state=AccountState.MUST_CHANGE)
    elif change == "expired":
        directory.users["john"] = replace(JOHN, state=AccountState.PASSWORD_EXPIRED)
    elif change == "deleted":
        del directory.users["john"]
    else:  # the lookup answers with another account (a case-folding backend, say)
        directory.users["john"] = replace(JOHN, username="John")
    clock.advance(5 * MINUTE)
    assert await sessions.get(value, cookie) is None
    assert stored_rows(db) == []
    directory.users["john"] = JOHN
    assert await sessions.get(value, cookie) is None  # ended, not paused


async def test_a_lockout_from_failed_sign_ins_does_not_end_the_session(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    """Anyone can lock an account out by guessing wrong; that must not sign its owner out."""
    directory = Directory(JOHN)
    sessions = refreshing(storage, clock, directory, 5 * MINUTE)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    directory.users["john"] = replace(JOHN, state=AccountState.LOCKED_OUT)
    clock.advance(5 * MINUTE)
    assert await sessions.get(value, cookie) is not None
    assert directory.lookups == 1


@pytest.mark.parametrize("state", [AccountState.MUST_CHANGE, AccountState.PASSWORD_EXPIRED])
async def test_no_session_opens_for_a_password_that_must_change(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig, state: AccountState
) -> None:
    sessions = SessionStore(storage, clock)
    with pytest.raises(ValueError, match="refusing to open a session"):
        await sessions.create(replace(JOHN, state=state), cookie, remember_me=False)


async def test_a_backend_outage_refuses_the_session_but_keeps_it_for_later(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig, db: Path
) -> None:
    directory = Directory(JOHN)
    sessions = refreshing(storage, clock, directory, 5 * MINUTE)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    directory.down = True
    clock.advance(5 * MINUTE)
    assert await sessions.get(value, cookie) is None  # fail closed
    assert len(stored_rows(db)) == 1
    directory.down = False
    session = await sessions.get(value, cookie)
    assert session is not None and session.username == "john"


async def test_a_refresh_never_brings_back_a_session_ended_meanwhile(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig, db: Path
) -> None:
    directory = Directory(JOHN)
    sessions = refreshing(storage, clock, directory, 5 * MINUTE)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    directory.users["john"] = replace(JOHN, groups=("dev",))

    async def password_reset_elsewhere() -> None:
        directory.during_lookup = None
        await SessionStore(storage, clock).destroy_user("john")

    directory.during_lookup = password_reset_elsewhere
    clock.advance(5 * MINUTE)
    assert await sessions.get(value, cookie) is None
    assert stored_rows(db) == []


async def test_a_burst_of_requests_makes_one_backend_lookup(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    directory = Directory(JOHN)
    sessions = refreshing(storage, clock, directory, 5 * MINUTE)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    assert await sessions.get(value, cookie) is not None  # cached
    clock.advance(5 * MINUTE)
    found = await asyncio.gather(*(sessions.get(value, cookie) for _ in range(20)))
    assert all(s is not None for s in found)
    assert directory.lookups == 1


async def test_the_real_users_file_edited_by_an_admin_reaches_the_session(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig, users_file: Path
) -> None:
    backend = FileUserBackend(FileBackendConfig(path=users_file, watch=True), watch_interval=0.02)
    await backend.startup_check()
    try:
        sessions = SessionStore(storage, clock, users=backend, refresh_interval=0.0)
        john = await backend.get_user("john")
        assert john is not None and "admins" in john.groups
        value = await sessions.create(john, cookie, remember_me=False)
        text = users_file.read_text(encoding="utf-8")
        users_file.write_text(text.replace("      - admins\n", "", 1), encoding="utf-8")
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            session = await sessions.get(value, cookie)
            assert session is not None
            if "admins" not in session.groups:
                break
            assert asyncio.get_running_loop().time() < deadline, "the edit never arrived"
            await asyncio.sleep(0.02)
        assert session.groups == ("dev",)
    finally:
        await backend.close()


@pytest.mark.parametrize(
    ("backend", "interval", "seconds"),
    [
        ("file", None, 0.0),  # Authelia's default for the file backend: always
        ("ldap", None, 300.0),  # and for LDAP: 5 minutes
        ("file", "always", 0.0),
        ("ldap", "disable", None),
        ("ldap", "90s", 90.0),
        ("file", "2 minutes", 120.0),
    ],
)
def test_refresh_interval_reads_as_authelia_means_it(
    make_config: ConfigFactory, backend: str, interval: str | None, seconds: float | None
) -> None:
    section: dict[str, Any] = {"refresh_interval": interval} if interval else {}
    if backend == "ldap":
        section["file"] = None
        section["ldap"] = {
            "address": "ldap://127.0.0.1",
            "base_dn": "dc=example,dc=com",
            "implementation": "rfc2307bis",  # its filters: a section that loads
            "user": "cn=admin,dc=example,dc=com",
            "password": "secret",
        }
    config = make_config(authentication_backend=section)
    assert config.authentication_backend.refresh_seconds == seconds


def test_a_refresh_interval_that_is_no_duration_is_a_configuration_error(
    make_config: ConfigFactory,
) -> None:
    with pytest.raises(ConfigError, match=r"authentication_backend\.refresh_interval"):
        make_config(authentication_backend={"refresh_interval": "sometimes"})


# -- authentication levels and elevation --------------------------------------------------------


async def test_a_new_session_is_one_factor_with_the_password_as_its_method(
    sessions: SessionStore, cookie: SessionCookieConfig, clock: FakeClock
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)
    session = await sessions.get(value, cookie)
    assert session is not None
    assert (session.level, session.amr, session.auth_time) == (1, ("pwd",), clock.now())
    assert session.elevated_until is None and not session.elevated("127.0.0.1", clock.now())


async def test_raise_level_rotates_the_id_and_records_the_second_factor(
    sessions: SessionStore,
    cookie: SessionCookieConfig,
    clock: FakeClock,
    other_instance_storage: SqliteStorage,
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=True)
    clock.advance(30)
    raised = await sessions.raise_level(value, cookie, method="otp")
    assert raised != value
    # The value seen before the second factor opens nothing any more, here or elsewhere.
    assert await sessions.get(value, cookie) is None
    elsewhere = SessionStore(other_instance_storage, clock)
    assert await elsewhere.get(value, cookie) is None
    session = await elsewhere.get(raised, cookie)
    assert session is not None
    assert (session.level, session.amr, session.auth_time) == (2, ("pwd", "otp"), clock.now())
    assert session.remember_me and session.username == "john"
    # The record keeps its expiry: a second factor does not extend the session.
    assert session.expires_at == START + 30 * 24 * HOUR


async def test_raise_level_of_an_ended_session_raises_lookup_error(
    sessions: SessionStore, cookie: SessionCookieConfig
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)
    await sessions.destroy(value)
    with pytest.raises(LookupError):
        await sessions.raise_level(value, cookie, method="otp")


async def test_an_elevation_holds_for_its_address_until_its_end_and_not_past_a_raise(
    sessions: SessionStore, cookie: SessionCookieConfig, clock: FakeClock
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)
    session = await sessions.get(value, cookie)
    assert session is not None
    now = clock.now()
    updated = await sessions.update(
        session.id, {"elevated_until": now + 600, "elevated_ip": "192.0.2.7"}
    )
    assert updated is not None and updated.elevated("192.0.2.7", now)
    # The cache does not hide the change from the next read.
    again = await sessions.get(value, cookie)
    assert again is not None and again.elevated("192.0.2.7", now)
    assert not again.elevated("192.0.2.8", now)
    assert not again.elevated("192.0.2.7", now + 600)
    raised = await sessions.raise_level(value, cookie, method="otp")
    after = await sessions.get(raised, cookie)
    assert after is not None and not after.elevated("192.0.2.7", now)


async def test_update_of_an_ended_session_returns_none_and_creates_nothing(
    sessions: SessionStore, cookie: SessionCookieConfig, db: Path
) -> None:
    value = await sessions.create(JOHN, cookie, remember_me=False)
    session = await sessions.get(value, cookie)
    assert session is not None
    await sessions.destroy(value)
    assert await sessions.update(session.id, {"elevated_until": 1.0}) is None
    assert stored_rows(db) == []


async def test_a_session_ended_while_its_level_rises_stays_ended(
    storage: SqliteStorage,
    sessions: SessionStore,
    cookie: SessionCookieConfig,
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A password reset on another instance ends every session of john between raise_level's
    # read and its write: the second factor must not bring the ended session back.
    value = await sessions.create(JOHN, cookie, remember_me=False)
    real_get = storage.session_get
    reads = 0

    async def read_then_end_everything(session_id: str) -> SessionRecord | None:
        nonlocal reads
        reads += 1
        record = await real_get(session_id)
        if reads == 2:  # raise_level's own read, after get()'s
            await storage.session_delete_user("john")
        return record

    monkeypatch.setattr(storage, "session_get", read_then_end_everything)
    with pytest.raises(LookupError):
        await sessions.raise_level(value, cookie, method="otp")
    monkeypatch.undo()
    assert stored_rows(db) == []


async def test_a_refresh_keeps_what_was_written_while_it_asked_the_backend(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    directory = Directory(JOHN)
    sessions = refreshing(storage, clock, directory, 5 * MINUTE)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    session = await sessions.get(value, cookie)
    assert session is not None
    directory.users["john"] = replace(JOHN, groups=("dev",))

    async def elevate_elsewhere() -> None:  # another request, while the backend answers
        await SessionStore(storage, clock).update(
            session.id, {"elevated_until": clock.now() + 600, "elevated_ip": "192.0.2.7"}
        )

    directory.during_lookup = elevate_elsewhere
    clock.advance(5 * MINUTE)
    refreshed = await sessions.get(value, cookie)
    directory.during_lookup = None
    assert refreshed is not None and refreshed.groups == ("dev",)
    assert refreshed.elevated("192.0.2.7", clock.now())


# -- the user's list of sessions ---------------------------------------------------------------


async def test_a_users_list_keeps_address_and_user_agent_and_marks_the_current_one(
    sessions: SessionStore, cookie: SessionCookieConfig, clock: FakeClock
) -> None:
    laptop = await sessions.create(
        JOHN, cookie, remember_me=False, ip="192.0.2.1", user_agent="x" * 600
    )
    clock.advance(5)
    await sessions.create(JOHN, cookie, remember_me=False, ip="192.0.2.2", user_agent="curl/8")
    await sessions.create(HARRY, cookie, remember_me=False)
    current = await sessions.get(laptop, cookie)
    assert current is not None

    listed = await sessions.list_user_sessions("john", [cookie], current_id=current.id)

    assert [(s.current, s.ip, len(s.user_agent)) for s in listed] == [
        (True, "192.0.2.1", 512),
        (False, "192.0.2.2", 6),
    ]
    assert listed[0].id == sessions.public_id(current.id) != current.id
    clock.advance(10 * MINUTE)  # past inactivity: no longer live, no longer listed
    assert await sessions.list_user_sessions("john", [cookie]) == []


async def test_public_ids_depend_on_the_secret_and_only_the_owner_ends_a_session(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    one = SessionStore(storage, clock, public_id_secret="a secret")
    same = SessionStore(storage, clock, public_id_secret="a secret")
    other = SessionStore(storage, clock, public_id_secret="another secret")
    value = await one.create(JOHN, cookie, remember_me=False)
    session = await one.get(value, cookie)
    assert session is not None
    public = one.public_id(session.id)
    assert public == same.public_id(session.id) != other.public_id(session.id)

    assert await one.end_user_session("harry", public) is None
    assert await one.get(value, cookie) is not None
    assert await same.end_user_session("john", public) == session.id
    clock.advance(1.0)  # the other instance trusts its cached copy for cache_ttl at most
    assert await one.get(value, cookie) is None


# -- the synchronous fast path (auth_request: a cached session, an in-memory user backend) --------


class LoadedDirectory(Directory):
    """A Directory whose users are in memory, as the users file's are (FileUserBackend)."""

    def __init__(self, *users: User) -> None:
        super().__init__(*users)
        self.loaded = True

    def loaded_user(self, username: str) -> User | None:
        if not self.loaded:
            raise LookupError("not loaded")
        return self.users.get(username)


async def test_with_refresh_always_a_cached_session_needs_no_backend_call_and_sees_changes_at_once(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    directory = LoadedDirectory(JOHN)
    sessions = SessionStore(storage, clock, users=directory, refresh_interval=0.0, cache_ttl=HOUR)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    first = await sessions.first_live([value], cookie)
    assert first is not None and first.groups == ("admins", "dev")
    lookups = directory.lookups
    for _ in range(50):
        assert await sessions.first_live(["not-a-value", value], cookie) == first
    assert directory.lookups == lookups  # answered from memory: no round trip per request

    # Every change is seen on the very next request, as with Authelia's `always`.
    directory.users["john"] = replace(JOHN, groups=("dev",))
    changed = await sessions.first_live([value], cookie)
    assert changed is not None and changed.groups == ("dev",)
    # The Remote-* headers nginx passes on follow (each session read builds its own).
    assert first.remote_headers["Remote-Groups"] == "admins,dev"
    assert changed.remote_headers["Remote-Groups"] == "dev"
    directory.users["john"] = replace(JOHN, groups=("dev",), disabled=True)
    assert await sessions.first_live([value], cookie) is None
    assert await sessions.get(value, cookie) is None  # ended, not just refused


async def test_the_fast_path_answers_as_the_slow_one_when_time_passes(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    directory = LoadedDirectory(JOHN)
    sessions = SessionStore(
        storage, clock, users=directory, refresh_interval=0.0, cache_ttl=CACHE_TTL
    )
    value = await sessions.create(JOHN, cookie, remember_me=False)
    directory.loaded = False  # nothing in memory yet: the backend is asked
    assert await sessions.first_live([value], cookie) is not None
    directory.loaded = True
    # Activity is still written every touch_interval, and inactivity still ends the session.
    clock.advance(TOUCH)
    touched = await sessions.first_live([value], cookie)
    assert touched is not None and touched.last_active_at == clock.now()
    clock.advance(6 * MINUTE)
    assert await sessions.first_live([value], cookie) is None
    # Another domain's cookie opens nothing, and a value of another shape is skipped.
    other_domain = cookie_for(domain="example.org", authelia_url="https://auth.example.org")
    other = await sessions.create(JOHN, other_domain, remember_me=False)
    assert await sessions.first_live([other], cookie) is None
    assert await sessions.first_live(["x"], cookie) is None


async def test_the_cache_drops_expired_entries_as_it_goes_not_only_when_full(
    storage: SqliteStorage, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    sessions = SessionStore(storage, clock, cache_ttl=CACHE_TTL, cache_size=10_000)
    values = [await sessions.create(JOHN, cookie, remember_me=True) for _ in range(50)]
    for value in values:
        assert await sessions.first_live([value], cookie) is not None
        clock.advance(CACHE_TTL / 10)
    # Only the entries read within the last cache_ttl are still held, far below cache_size.
    assert len(sessions._cache) <= 11
    for value in values:  # and every session still opens: dropped entries are read again
        assert await sessions.first_live([value], cookie) is not None


# -- reading ahead on nginx's path (first_live_cached) ------------------------------------------


async def settle() -> None:
    """Let tasks the store started in the background run to their end."""
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


async def test_a_busy_session_is_read_again_before_its_cache_ttl_lapses(
    db: Path, clock: FakeClock, cookie: SessionCookieConfig
) -> None:
    # Without it, every cache_ttl all of nginx's questions about a busy session stall together
    # on one storage read (the p99 of auth_request): past half of cache_ttl, the cached answer
    # is given and the row read again meanwhile, so the next period starts from memory.
    storage = CountingStorage(db)
    await storage.startup_check()
    try:
        sessions = SessionStore(storage, clock, cache_ttl=CACHE_TTL, touch_interval=TOUCH)
        value = await sessions.create(JOHN, cookie, remember_me=False)
        assert await sessions.first_live_read([value], cookie) is not None
        reads = storage.reads
        clock.advance(CACHE_TTL * 0.25)
        assert isinstance(sessions.first_live_cached([value], cookie), Session)
        await settle()
        assert storage.reads == reads  # young entry: nothing read
        clock.advance(CACHE_TTL * 0.35)  # 0.6 of cache_ttl
        answers = [sessions.first_live_cached([value], cookie) for _ in range(5)]
        assert all(isinstance(a, Session) for a in answers)
        assert len(asyncio.all_tasks()) == 2  # this test's and one read ahead for the five
        await settle()
        assert storage.reads == reads + 1  # one read for the five
        clock.advance(CACHE_TTL * 0.6)  # 1.2 of cache_ttl after the first read
        assert isinstance(sessions.first_live_cached([value], cookie), Session)
    finally:
        await storage.close()


async def test_reading_ahead_never_serves_past_cache_ttl_what_another_instance_ended(
    storage: SqliteStorage,
    other_instance_storage: SqliteStorage,
    clock: FakeClock,
    cookie: SessionCookieConfig,
) -> None:
    here = SessionStore(storage, clock, cache_ttl=CACHE_TTL, touch_interval=TOUCH)
    there = SessionStore(other_instance_storage, clock, cache_ttl=CACHE_TTL)
    value = await here.create(JOHN, cookie, remember_me=False)
    assert await here.first_live_read([value], cookie) is not None
    await there.destroy(value)
    clock.advance(CACHE_TTL * 0.6)
    assert isinstance(here.first_live_cached([value], cookie), Session)  # within cache_ttl
    await settle()  # the read ahead finds no row
    assert here.first_live_cached([value], cookie) is MISS
    assert await here.first_live_read([value], cookie) is None


async def test_a_read_ahead_that_fails_changes_nothing_and_raises_nowhere(
    db: Path, clock: FakeClock, cookie: SessionCookieConfig, caplog: pytest.LogCaptureFixture
) -> None:
    storage = SqliteStorage(db)
    await storage.startup_check()
    sessions = SessionStore(storage, clock, cache_ttl=CACHE_TTL, touch_interval=TOUCH)
    value = await sessions.create(JOHN, cookie, remember_me=False)
    assert await sessions.first_live_read([value], cookie) is not None
    await storage.close()  # the database is gone: every read fails
    clock.advance(CACHE_TTL * 0.6)
    assert isinstance(sessions.first_live_cached([value], cookie), Session)
    await settle()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    clock.advance(CACHE_TTL * 0.5)  # past cache_ttl: the usual way, which says the store is down
    assert sessions.first_live_cached([value], cookie) is MISS
