"""Regulator on a real SQLite file with a fake clock: Authelia's bans after failed sign-ins."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

from portal.config import RegulationConfig
from portal.regulation import Regulator
from portal.storage.sqlite import SqliteStorage
from tests.conftest import START, FakeClock

FIND_TIME = 120.0
BAN_TIME = 300.0
Mode = Literal["user", "ip"]


def regulator_for(
    storage: SqliteStorage,
    clock: FakeClock,
    *,
    modes: Sequence[Mode] = ("user", "ip"),
    max_retries: int = 3,
) -> Regulator:
    """Build a Regulator with Authelia's default times (find 2 minutes, ban 5 minutes)."""
    config = RegulationConfig(
        modes=tuple(modes),
        max_retries=max_retries,
        find_time=timedelta(seconds=FIND_TIME),
        ban_time=timedelta(seconds=BAN_TIME),
    )
    return Regulator(storage, clock, config)


async def fail(
    regulator: Regulator,
    clock: FakeClock,
    times: int,
    *,
    every: float = 10.0,
    username: str = "john",
    ip: str = "192.0.2.1",
) -> None:
    """Record `times` failed sign-ins, `every` seconds apart (the first one right now)."""
    for attempt in range(times):
        if attempt:
            clock.advance(every)
        await regulator.record_failure(username, ip)


async def test_three_failures_in_find_time_ban_user_and_ip_for_ban_time_from_the_last(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock)
    await fail(regulator, clock, 2)
    assert await regulator.banned_until("john", "192.0.2.1") is None  # two are not enough

    clock.advance(10)
    await regulator.record_failure("john", "192.0.2.1")

    last = START + 20
    assert await regulator.banned_until("john", "192.0.2.1") == last + BAN_TIME
    assert await regulator.banned_until("john", "198.51.100.7") == last + BAN_TIME  # the user
    assert await regulator.banned_until("harry", "192.0.2.1") == last + BAN_TIME  # the ip


async def test_the_ban_ends_after_ban_time(storage: SqliteStorage, clock: FakeClock) -> None:
    regulator = regulator_for(storage, clock)
    await fail(regulator, clock, 3)

    clock.advance(BAN_TIME - 0.01)
    assert await regulator.banned_until("john", "192.0.2.1") is not None
    clock.advance(0.01)
    assert await regulator.banned_until("john", "192.0.2.1") is None


async def test_failures_spread_wider_than_find_time_do_not_ban(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock)

    await fail(regulator, clock, 6, every=FIND_TIME / 2 + 1)  # any three span more than 2 min

    assert await regulator.banned_until("john", "192.0.2.1") is None


async def test_failures_exactly_find_time_apart_still_ban(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock)

    await fail(regulator, clock, 3, every=FIND_TIME / 2)

    assert await regulator.banned_until("john", "192.0.2.1") == clock.now() + BAN_TIME


async def test_mode_user_only_bans_the_user_not_the_ip(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock, modes=["user"])

    await fail(regulator, clock, 3)

    assert await regulator.banned_until("john", "203.0.113.9") is not None
    assert await regulator.banned_until("harry", "192.0.2.1") is None


async def test_mode_ip_only_bans_the_ip_not_the_user(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock, modes=["ip"])

    await fail(regulator, clock, 3)

    assert await regulator.banned_until("harry", "192.0.2.1") is not None
    assert await regulator.banned_until("john", "203.0.113.9") is None


async def test_failures_for_different_users_from_one_ip_add_up_when_ip_is_a_mode(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock)

    for username in ("john", "harry", "bob"):  # password spraying
        await regulator.record_failure(username, "192.0.2.1")

    assert await regulator.banned_until("alice", "192.0.2.1") is not None
    assert await regulator.banned_until("alice", "203.0.113.9") is None


async def test_max_retries_zero_never_bans_and_records_nothing(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock, max_retries=0)

    await fail(regulator, clock, 20, every=1)

    assert await regulator.banned_until("john", "192.0.2.1") is None
    assert await storage.rate_limit_events("regulation:user:john", since=0) == []
    assert await storage.rate_limit_events("regulation:ip:192.0.2.1", since=0) == []


async def test_failures_are_kept_under_the_documented_keys(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock)

    await regulator.record_failure("John", "192.0.2.1")

    assert await storage.rate_limit_events("regulation:user:john", since=0) == [START]
    assert await storage.rate_limit_events("regulation:ip:192.0.2.1", since=0) == [START]


async def test_usernames_differing_in_case_or_width_share_one_count(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock, modes=["user"])

    for username in ("john", "JOHN", "\uff2a\uff4f\uff48\uff4e"):  # full-width 'John'
        await regulator.record_failure(username, "192.0.2.1")

    assert await regulator.banned_until("john", "203.0.113.9") is not None


async def test_one_address_written_two_ways_shares_one_count(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock, modes=["ip"])

    for ip in ("2001:db8::1", "2001:0db8:0:0::1", "2001:DB8::0001"):
        await regulator.record_failure("john", ip)

    assert await regulator.banned_until("harry", "2001:db8::1") is not None


async def test_unknown_usernames_are_counted_like_known_ones(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock, modes=["user"])

    await fail(regulator, clock, 3, username="nobody-by-this-name")

    assert await regulator.banned_until("nobody-by-this-name", "203.0.113.9") is not None


async def test_a_failure_recorded_during_a_ban_never_shortens_it(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock, modes=["user"])
    await fail(regulator, clock, 3, every=1)
    until = START + 2 + BAN_TIME

    clock.advance(FIND_TIME + 60)
    await regulator.record_failure("john", "192.0.2.1")

    assert await regulator.banned_until("john", "192.0.2.1") == until


async def test_the_later_of_the_user_and_the_ip_ban_is_returned(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock)
    await fail(regulator, clock, 3, username="john", ip="192.0.2.1")
    clock.advance(60)
    await fail(regulator, clock, 3, username="harry", ip="192.0.2.1")

    assert await regulator.banned_until("john", "192.0.2.1") == clock.now() + BAN_TIME


async def test_a_ban_is_shared_by_every_instance_on_the_same_storage(
    tmp_path: Path, storage: SqliteStorage, clock: FakeClock
) -> None:
    other = SqliteStorage(tmp_path / "db")
    await other.startup_check()
    try:
        await fail(regulator_for(storage, clock), clock, 3)

        assert await regulator_for(other, clock).banned_until("john", "203.0.113.9") is not None
    finally:
        await other.close()


async def test_bans_lists_running_bans_only_with_when_they_end(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock)
    await fail(regulator, clock, 2, username="mary", ip="")  # two: not banned
    await fail(regulator, clock, 3, username="JOHN", ip="::0:1")
    until = clock.now() + BAN_TIME

    assert [(b.kind, b.subject, b.until) for b in await regulator.bans()] == [
        ("user", "john", until),  # folded, as counted
        ("ip", "::1", until),  # canonical
    ]
    clock.advance(BAN_TIME)
    assert await regulator.bans() == []  # over


async def test_unban_lifts_a_users_or_an_addresss_ban_at_once(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulator = regulator_for(storage, clock)
    await fail(regulator, clock, 3, username="john", ip="192.0.2.1")

    assert await regulator.unban(" John ") == 3
    assert await regulator.banned_until("john", "198.51.100.1") is None
    assert await regulator.banned_until("mary", "192.0.2.1") is not None
    assert await regulator.unban("192.0.2.1") == 3
    assert await regulator.banned_until("john", "192.0.2.1") is None
    assert await regulator.unban("john") == 0
