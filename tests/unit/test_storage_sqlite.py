"""SqliteStorage on real SQLite files in tmp_path: the file, its start-up, migrations and locks.

What every backend must do (atomic consume, the outbox lease, ...) is checked on SQLite too, by the
contract suites in tests/contract/; this file keeps what only SQLite has.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from portal.errors import StartupCheckError
from portal.storage.sqlite import SqliteStorage, packaged_migrations
from tests.contract.records import reset_link, session

LATEST = len(packaged_migrations())


# -- helpers ---------------------------------------------------------------------------------


async def open_storage(
    path: Path, migrations: Sequence[tuple[int, str]] | None = None
) -> SqliteStorage:
    """Start a SqliteStorage on `path` the way the app's cleanup context does."""
    storage = SqliteStorage(path, migrations=migrations)
    await storage.startup_check()
    return storage


def with_extra_migration(script: str) -> list[tuple[int, str]]:
    """Return the shipped migrations plus one more, as a future release would ship it."""
    return [*packaged_migrations(), (LATEST + 1, script)]


def inspect(path: Path, sql: str) -> list[Any]:
    """Query the file through a separate plain connection, as an operator would."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Point at a database file whose directory does not exist yet."""
    return tmp_path / "var" / "portal.sqlite3"


@pytest.fixture
async def storage(db_path: Path) -> AsyncIterator[SqliteStorage]:
    """Give a started storage on db_path, closed after the test."""
    started = await open_storage(db_path)
    yield started
    await started.close()


# -- start-up and migrations -----------------------------------------------------------------


async def test_a_fresh_file_is_created_owner_only_in_wal_mode_at_the_latest_version(
    db_path: Path, storage: SqliteStorage
) -> None:
    await storage.session_save(session())  # makes SQLite create the -wal file too

    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.with_name(db_path.name + "-wal").stat().st_mode) == 0o600
    assert inspect(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert LATEST >= 1
    assert await storage.schema_version() == LATEST
    assert inspect(db_path, "PRAGMA user_version") == [(LATEST,)]


async def test_reopening_a_file_is_idempotent_and_keeps_its_data(db_path: Path) -> None:
    first = await open_storage(db_path)
    await first.save_identity_verification(reset_link())
    await first.startup_check()  # a second check on a running instance is harmless too
    await first.close()

    for _ in range(2):
        reopened = await open_storage(db_path)
        assert await reopened.schema_version() == LATEST
        assert await reopened.get_identity_verification("jti-1") == reset_link()
        await reopened.close()


async def test_two_instances_starting_at_once_on_a_fresh_file_both_get_the_latest_schema(
    db_path: Path,
) -> None:
    first, second = SqliteStorage(db_path), SqliteStorage(db_path)

    await asyncio.gather(first.startup_check(), second.startup_check())

    assert await first.schema_version() == await second.schema_version() == LATEST
    await first.close()
    await second.close()


async def test_a_new_migration_upgrades_an_existing_database_and_keeps_its_data(
    db_path: Path,
) -> None:
    old = await open_storage(db_path)
    await old.session_save(session())
    await old.close()

    new = await open_storage(
        db_path, with_extra_migration("ALTER TABLE sessions ADD COLUMN user_agent TEXT;")
    )

    assert await new.schema_version() == LATEST + 1
    assert await new.session_get("cookie-hash-1") == session()
    columns = [row[1] for row in inspect(db_path, "PRAGMA table_info(sessions)")]
    assert "user_agent" in columns
    await new.close()


async def test_a_failing_migration_is_rolled_back_and_leaves_the_previous_version(
    db_path: Path,
) -> None:
    old = await open_storage(db_path)
    await old.session_save(session())
    await old.close()
    broken = with_extra_migration(
        "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);"
    )

    with pytest.raises(StartupCheckError, match=f"migration {LATEST + 1} failed"):
        await SqliteStorage(db_path, migrations=broken).startup_check()

    assert inspect(db_path, "PRAGMA user_version") == [(LATEST,)]
    assert inspect(db_path, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []
    survivor = await open_storage(db_path)
    assert await survivor.session_get("cookie-hash-1") == session()
    await survivor.close()


async def test_a_database_newer_than_the_code_refuses_to_start(db_path: Path) -> None:
    newer = await open_storage(db_path, with_extra_migration("CREATE TABLE later (x INTEGER);"))
    await newer.close()

    with pytest.raises(StartupCheckError, match="newer than this portal knows") as raised:
        await SqliteStorage(db_path).startup_check()

    assert str(db_path) in str(raised.value)
    assert inspect(db_path, "PRAGMA user_version") == [(LATEST + 1,)]


async def test_migrations_with_a_gap_in_their_versions_fail_the_startup_check(
    db_path: Path,
) -> None:
    gappy = [*packaged_migrations(), (LATEST + 2, "CREATE TABLE skipped (x INTEGER);")]

    with pytest.raises(StartupCheckError, match="without gaps"):
        await SqliteStorage(db_path, migrations=gappy).startup_check()


@pytest.mark.parametrize(
    "make_unusable",
    [
        pytest.param(lambda path: path.parent.write_text("a file"), id="parent-is-a-file"),
        pytest.param(lambda path: path.mkdir(parents=True), id="path-is-a-directory"),
        pytest.param(
            lambda path: (path.parent.mkdir(), path.write_bytes(b"not a database" * 100)),
            id="file-is-not-a-database",
        ),
    ],
)
async def test_an_unusable_path_fails_the_startup_check_naming_the_path(
    db_path: Path, make_unusable: Callable[[Path], object]
) -> None:
    make_unusable(db_path)

    with pytest.raises(StartupCheckError) as raised:
        await SqliteStorage(db_path).startup_check()

    assert str(db_path) in str(raised.value)


async def test_a_write_waiting_on_another_instances_lock_does_not_block_the_event_loop(
    db_path: Path, storage: SqliteStorage
) -> None:
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        write = asyncio.create_task(storage.session_save(session()))

        await asyncio.sleep(0.3)  # only returns on time if the loop is free while write waits
        assert not write.done()
        other.execute("COMMIT")

    await write
    assert await storage.session_get("cookie-hash-1") == session()
