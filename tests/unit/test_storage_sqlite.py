"""SqliteStorage on real SQLite files in tmp_path: start-up, migrations, atomicity, every record."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from portal.errors import StartupCheckError, StorageError
from portal.storage.base import IdentityVerification, SecurityAnswer, SessionRecord, Storage
from portal.storage.sqlite import SqliteStorage, packaged_migrations

NOW = 1_700_000_000.0
HOUR = 3600.0
LATEST = len(packaged_migrations())
RESET = "reset_password"


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


def reset_link(
    jti: str = "jti-1",
    *,
    username: str = "john",
    action: str = RESET,
    expires_at: float = NOW + HOUR,
) -> IdentityVerification:
    """Build a fresh, usable reset-link record issued at NOW."""
    return IdentityVerification(
        jti=jti,
        username=username,
        action=action,
        issued_at=NOW,
        issued_ip="192.0.2.1",
        expires_at=expires_at,
    )


def session(
    session_id: str = "cookie-hash-1",
    *,
    username: str = "john",
    expires_at: float = NOW + HOUR,
    data: dict[str, Any] | None = None,
) -> SessionRecord:
    """Build a session record created at NOW."""
    return SessionRecord(
        id=session_id,
        username=username,
        created_at=NOW,
        last_active_at=NOW,
        expires_at=expires_at,
        remember_me=False,
        data={"csrf": "abc"} if data is None else data,
    )


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Point at a database file whose directory does not exist yet."""
    return tmp_path / "var" / "portal.sqlite3"


@pytest.fixture
async def storage(db_path: Path) -> AsyncIterator[Storage]:
    """Give a started storage on db_path, closed after the test."""
    started = await open_storage(db_path)
    yield started
    await started.close()


@pytest.fixture
async def other_instance(db_path: Path, storage: Storage) -> AsyncIterator[Storage]:
    """Give a second portal instance's storage on the same file."""
    started = await open_storage(db_path)
    yield started
    await started.close()


# -- start-up and migrations -----------------------------------------------------------------


async def test_a_fresh_file_is_created_owner_only_in_wal_mode_at_the_latest_version(
    db_path: Path, storage: Storage
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
    db_path: Path, make_unusable: Any
) -> None:
    make_unusable(db_path)

    with pytest.raises(StartupCheckError) as raised:
        await SqliteStorage(db_path).startup_check()

    assert str(db_path) in str(raised.value)


async def test_calls_before_the_startup_check_or_after_close_raise_storage_error(
    db_path: Path,
) -> None:
    unstarted = SqliteStorage(db_path)
    with pytest.raises(StorageError, match="not open"):
        await unstarted.outbox_pending()
    await unstarted.close()

    closed = await open_storage(db_path)
    await closed.close()
    await closed.close()  # closing twice is harmless
    with pytest.raises(StorageError, match="closed"):
        await closed.outbox_pending()


async def test_a_write_waiting_on_another_instances_lock_does_not_block_the_event_loop(
    db_path: Path, storage: Storage
) -> None:
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        write = asyncio.create_task(storage.session_save(session()))

        await asyncio.sleep(0.3)  # only returns on time if the loop is free while write waits
        assert not write.done()
        other.execute("COMMIT")

    await write
    assert await storage.session_get("cookie-hash-1") == session()


# -- reset-link records ----------------------------------------------------------------------


async def test_a_saved_reset_link_reads_back_unchanged(storage: Storage) -> None:
    await storage.save_identity_verification(reset_link())

    assert await storage.get_identity_verification("jti-1") == reset_link()
    assert await storage.get_identity_verification("unknown") is None


async def test_saving_a_known_jti_again_fails_without_reviving_it_or_echoing_it(
    storage: Storage,
) -> None:
    await storage.save_identity_verification(reset_link("secret-jti"))
    await storage.consume_identity_verification("secret-jti", at=NOW + 1, ip="192.0.2.9")

    with pytest.raises(StorageError) as raised:
        await storage.save_identity_verification(reset_link("secret-jti"))

    assert "secret-jti" not in str(raised.value)
    record = await storage.get_identity_verification("secret-jti")
    assert record is not None and record.consumed_at == NOW + 1


async def test_a_reset_link_is_consumed_once_and_remembers_when_and_from_where(
    storage: Storage,
) -> None:
    await storage.save_identity_verification(reset_link())

    assert await storage.consume_identity_verification("jti-1", at=NOW + 5, ip="192.0.2.7")
    assert not await storage.consume_identity_verification("jti-1", at=NOW + 6, ip="192.0.2.8")

    record = await storage.get_identity_verification("jti-1")
    assert record is not None
    assert (record.consumed_at, record.consumed_ip) == (NOW + 5, "192.0.2.7")
    assert not record.usable_at(NOW + 6)


async def test_a_consume_whose_write_failed_can_be_released_only_by_its_owner(
    storage: Storage,
) -> None:
    await storage.save_identity_verification(reset_link())
    assert await storage.consume_identity_verification("jti-1", at=NOW + 5, ip="192.0.2.7")

    assert not await storage.release_identity_verification("jti-1", consumed_at=NOW + 4)
    assert await storage.release_identity_verification("jti-1", consumed_at=NOW + 5)

    record = await storage.get_identity_verification("jti-1")
    assert record is not None and record.usable_at(NOW + 6)
    assert await storage.consume_identity_verification("jti-1", at=NOW + 6, ip="192.0.2.8")


async def test_an_expired_revoked_or_unknown_link_cannot_be_consumed(storage: Storage) -> None:
    await storage.save_identity_verification(reset_link("expiring", expires_at=NOW + 60))
    await storage.save_identity_verification(reset_link("revoked"))
    await storage.revoke_identity_verification("revoked", at=NOW + 1, ip="192.0.2.1")

    assert not await storage.consume_identity_verification("expiring", at=NOW + 60, ip="x")
    assert not await storage.consume_identity_verification("revoked", at=NOW + 2, ip="x")
    assert not await storage.consume_identity_verification("unknown", at=NOW + 2, ip="x")
    expiring = await storage.get_identity_verification("expiring")
    assert expiring is not None and expiring.consumed_at is None


async def test_twenty_concurrent_consumes_on_one_instance_have_exactly_one_winner(
    storage: Storage,
) -> None:
    await storage.save_identity_verification(reset_link())

    results = await asyncio.gather(
        *(
            storage.consume_identity_verification("jti-1", at=NOW + 1, ip=f"192.0.2.{n}")
            for n in range(20)
        )
    )

    assert results.count(True) == 1


async def test_concurrent_consumes_from_two_instances_on_one_file_have_exactly_one_winner(
    storage: Storage, other_instance: Storage
) -> None:
    jtis = [f"jti-{n}" for n in range(5)]
    for jti in jtis:
        await storage.save_identity_verification(reset_link(jti))

    for jti in jtis:
        results = await asyncio.gather(
            *(
                instance.consume_identity_verification(jti, at=NOW + 1, ip="192.0.2.1")
                for _ in range(10)
                for instance in (storage, other_instance)
            )
        )
        assert results.count(True) == 1, jti


async def test_revoking_a_usable_link_stops_it_and_says_so_once(storage: Storage) -> None:
    await storage.save_identity_verification(reset_link("open"))
    await storage.save_identity_verification(reset_link("used"))
    await storage.consume_identity_verification("used", at=NOW + 1, ip="192.0.2.1")

    assert await storage.revoke_identity_verification("open", at=NOW + 2, ip="192.0.2.5")
    assert not await storage.revoke_identity_verification("open", at=NOW + 3, ip="192.0.2.5")
    assert not await storage.revoke_identity_verification("used", at=NOW + 3, ip="192.0.2.5")
    assert not await storage.consume_identity_verification("open", at=NOW + 4, ip="192.0.2.1")
    record = await storage.get_identity_verification("open")
    assert record is not None
    assert (record.revoked_at, record.revoked_ip) == (NOW + 2, "192.0.2.5")


async def test_revoking_a_users_links_spares_keep_jti_other_actions_and_other_users(
    storage: Storage,
) -> None:
    for record in (
        reset_link("old-1"),
        reset_link("old-2"),
        reset_link("newest"),
        reset_link("already-used"),
        reset_link("other-action", action="verify_email"),
        reset_link("marys", username="mary"),
    ):
        await storage.save_identity_verification(record)
    await storage.consume_identity_verification("already-used", at=NOW + 1, ip="192.0.2.1")

    revoked = await storage.revoke_identity_verifications_for(
        "john", RESET, at=NOW + 2, ip="192.0.2.1", keep_jti="newest"
    )

    assert revoked == 2
    for gone in ("old-1", "old-2"):
        assert not await storage.consume_identity_verification(gone, at=NOW + 3, ip="x")
    for kept in ("newest", "other-action", "marys"):
        assert await storage.consume_identity_verification(kept, at=NOW + 3, ip="x")


async def test_revoking_a_users_links_without_keep_jti_revokes_them_all(storage: Storage) -> None:
    await storage.save_identity_verification(reset_link("a"))
    await storage.save_identity_verification(reset_link("b"))

    assert await storage.revoke_identity_verifications_for("john", RESET, at=NOW, ip="x") == 2
    assert await storage.revoke_identity_verifications_for("john", RESET, at=NOW, ip="x") == 0


async def test_purging_links_deletes_only_those_expired_before_the_cutoff(
    storage: Storage,
) -> None:
    await storage.save_identity_verification(reset_link("expired", expires_at=NOW + 10))
    await storage.save_identity_verification(reset_link("at-cutoff", expires_at=NOW + 20))

    assert await storage.purge_identity_verifications(expired_before=NOW + 20) == 1
    assert await storage.get_identity_verification("expired") is None
    assert await storage.get_identity_verification("at-cutoff") is not None


# -- rate limits -----------------------------------------------------------------------------


async def test_rate_limit_events_slide_out_of_the_window(storage: Storage) -> None:
    for offset in (0, 10, 30):
        await storage.rate_limit_hit("ip:192.0.2.1", at=NOW + offset, keep_for=60)

    kept = await storage.rate_limit_hit("ip:192.0.2.1", at=NOW + 65, keep_for=60)

    assert kept == [NOW + 10, NOW + 30, NOW + 65]


async def test_rate_limit_keys_are_independent(storage: Storage) -> None:
    await storage.rate_limit_hit("user:john", at=NOW, keep_for=60)
    await storage.rate_limit_hit("user:john", at=NOW + 1, keep_for=60)

    assert await storage.rate_limit_hit("user:mary", at=NOW + 2, keep_for=60) == [NOW + 2]
    assert await storage.rate_limit_events("user:john", since=NOW) == [NOW, NOW + 1]


async def test_reading_rate_limit_events_records_nothing(storage: Storage) -> None:
    await storage.rate_limit_hit("user:john", at=NOW, keep_for=60)
    await storage.rate_limit_hit("user:john", at=NOW + 30, keep_for=60)

    assert await storage.rate_limit_events("user:john", since=NOW + 1) == [NOW + 30]
    assert await storage.rate_limit_events("user:john", since=NOW) == [NOW, NOW + 30]
    assert await storage.rate_limit_events("user:nobody", since=NOW) == []


async def test_purging_rate_limits_deletes_old_events_of_every_key(storage: Storage) -> None:
    await storage.rate_limit_hit("user:john", at=NOW, keep_for=3600)
    await storage.rate_limit_hit("user:mary", at=NOW + 5, keep_for=3600)
    await storage.rate_limit_hit("user:mary", at=NOW + 100, keep_for=3600)

    assert await storage.purge_rate_limits(before=NOW + 100) == 2
    assert await storage.rate_limit_events("user:john", since=0) == []
    assert await storage.rate_limit_events("user:mary", since=0) == [NOW + 100]


# -- outbox ----------------------------------------------------------------------------------


async def test_claimed_messages_come_oldest_first_with_their_payload_and_lease(
    storage: Storage,
) -> None:
    first = await storage.outbox_enqueue("reset_mail", {"to": "john", "n": 1}, at=NOW)
    second = await storage.outbox_enqueue("reset_mail", {"to": "mary", "n": 2}, at=NOW + 1)
    await storage.outbox_enqueue("reset_mail", {"to": "paul", "n": 3}, at=NOW + 2)

    claimed = await storage.outbox_claim(at=NOW + 5, lease=30, limit=2)

    assert [message.id for message in claimed] == [first, second]
    assert claimed[0].payload == {"to": "john", "n": 1}
    assert claimed[0].kind == "reset_mail"
    assert claimed[0].created_at == NOW
    assert all(message.attempts == 1 for message in claimed)
    assert all(message.next_attempt_at == NOW + 35 for message in claimed)
    assert await storage.outbox_pending() == 3


async def test_a_message_not_yet_due_is_not_claimed(storage: Storage) -> None:
    await storage.outbox_enqueue("reset_mail", {}, at=NOW + 10)

    assert await storage.outbox_claim(at=NOW + 9, lease=30) == []
    assert len(await storage.outbox_claim(at=NOW + 10, lease=30)) == 1


async def test_a_claimed_message_comes_back_only_when_its_lease_runs_out(
    storage: Storage,
) -> None:
    message_id = await storage.outbox_enqueue("reset_mail", {"to": "john"}, at=NOW)
    await storage.outbox_claim(at=NOW, lease=30)

    assert await storage.outbox_claim(at=NOW + 29, lease=30) == []
    reclaimed = await storage.outbox_claim(at=NOW + 30, lease=30)

    assert [(message.id, message.attempts) for message in reclaimed] == [(message_id, 2)]


async def test_a_retried_message_comes_back_when_due_with_its_error(storage: Storage) -> None:
    message_id = await storage.outbox_enqueue("reset_mail", {"to": "john"}, at=NOW)
    await storage.outbox_claim(at=NOW, lease=30)

    await storage.outbox_retry(message_id, next_attempt_at=NOW + 300, error="smtp: 451 later")

    assert await storage.outbox_claim(at=NOW + 299, lease=30) == []
    (again,) = await storage.outbox_claim(at=NOW + 300, lease=30)
    assert (again.id, again.attempts, again.last_error) == (message_id, 2, "smtp: 451 later")


async def test_a_done_message_is_gone(storage: Storage) -> None:
    message_id = await storage.outbox_enqueue("reset_mail", {"to": "john"}, at=NOW)
    await storage.outbox_claim(at=NOW, lease=30)

    await storage.outbox_done(message_id)

    assert await storage.outbox_pending() == 0
    assert await storage.outbox_claim(at=NOW + 3600, lease=30) == []


async def test_a_restart_loses_no_outbox_message(db_path: Path) -> None:
    before = await open_storage(db_path)
    leased = await before.outbox_enqueue("reset_mail", {"to": "john"}, at=NOW)
    queued = await before.outbox_enqueue("reset_mail", {"to": "mary"}, at=NOW + 1)
    await before.outbox_claim(at=NOW, lease=30, limit=1)  # the worker dies mid-send
    await before.close()

    after = await open_storage(db_path)

    assert await after.outbox_pending() == 2
    assert [m.id for m in await after.outbox_claim(at=NOW + 1, lease=30)] == [queued]
    assert [m.id for m in await after.outbox_claim(at=NOW + 30, lease=30)] == [leased]
    await after.close()


@pytest.mark.parametrize(
    "payload",
    [{"when": object()}, {"ratio": float("nan")}, {(1, 2): "tuple key"}],
    ids=["object", "nan", "tuple-key"],
)
async def test_a_payload_that_is_not_json_is_refused_at_enqueue(
    storage: Storage, payload: dict[Any, Any]
) -> None:
    with pytest.raises(TypeError):
        await storage.outbox_enqueue("reset_mail", payload, at=NOW)

    assert await storage.outbox_pending() == 0


# -- sessions --------------------------------------------------------------------------------


async def test_a_saved_session_reads_back_unchanged(storage: Storage) -> None:
    remembered = SessionRecord(
        id="cookie-hash-1",
        username="john",
        created_at=NOW,
        last_active_at=NOW + 1,
        expires_at=NOW + 30 * 24 * HOUR,
        remember_me=True,
        data={"csrf": "abc", "groups": ["admins"], "level": 2},
    )

    await storage.session_save(remembered)

    assert await storage.session_get("cookie-hash-1") == remembered
    assert await storage.session_get("unknown") is None


async def test_saving_a_session_again_replaces_it(storage: Storage) -> None:
    await storage.session_save(session())

    await storage.session_save(session(expires_at=NOW + 2 * HOUR, data={"step": 2}))

    assert await storage.session_get("cookie-hash-1") == session(
        expires_at=NOW + 2 * HOUR, data={"step": 2}
    )


async def test_touching_a_session_moves_its_last_activity_forward_only(
    storage: Storage,
) -> None:
    await storage.session_save(session())

    await storage.session_touch("cookie-hash-1", at=NOW + 50)
    await storage.session_touch("cookie-hash-1", at=NOW + 20)  # a late, out-of-order request
    await storage.session_touch("unknown", at=NOW + 50)

    touched = await storage.session_get("cookie-hash-1")
    assert touched is not None and touched.last_active_at == NOW + 50
    assert await storage.session_get("unknown") is None


async def test_deleting_a_session_says_whether_it_existed(storage: Storage) -> None:
    await storage.session_save(session())

    assert await storage.session_delete("cookie-hash-1")
    assert not await storage.session_delete("cookie-hash-1")
    assert await storage.session_get("cookie-hash-1") is None


async def test_deleting_a_users_sessions_leaves_other_users_alone(storage: Storage) -> None:
    await storage.session_save(session("johns-laptop"))
    await storage.session_save(session("johns-phone"))
    await storage.session_save(session("marys-laptop", username="mary"))

    assert await storage.session_delete_user("john") == 2
    assert await storage.session_get("johns-phone") is None
    assert await storage.session_get("marys-laptop") is not None


async def test_purging_sessions_deletes_only_those_expired_before_the_cutoff(
    storage: Storage,
) -> None:
    await storage.session_save(session("expired", expires_at=NOW + 10))
    await storage.session_save(session("at-cutoff", expires_at=NOW + 20))

    assert await storage.purge_sessions(expired_before=NOW + 20) == 1
    assert await storage.session_get("expired") is None
    assert await storage.session_get("at-cutoff") is not None


# -- security answers ------------------------------------------------------------------------


def answers(*questions: str, at: float = NOW) -> list[SecurityAnswer]:
    """Build one answer record per question, hashes standing in as 'hash-<position>'."""
    return [SecurityAnswer(i, q, f"hash-{i}", at) for i, q in enumerate(questions)]


async def test_security_answers_are_kept_per_user_in_order(storage: Storage) -> None:
    assert await storage.get_security_answers("john") == []
    await storage.set_security_answers("john", answers("Q1?", "Q2?", "Q3?"))
    await storage.set_security_answers("harry", answers("Q9?"))
    assert await storage.get_security_answers("john") == answers("Q1?", "Q2?", "Q3?")
    assert [a.question for a in await storage.get_security_answers("harry")] == ["Q9?"]


async def test_setting_security_answers_replaces_the_whole_set(storage: Storage) -> None:
    await storage.set_security_answers("john", answers("Q1?", "Q2?", "Q3?"))
    await storage.set_security_answers("john", answers("Q4?", "Q5?", at=NOW + HOUR))
    assert await storage.get_security_answers("john") == answers("Q4?", "Q5?", at=NOW + HOUR)


async def test_a_failed_replacement_keeps_the_old_answers(storage: Storage) -> None:
    await storage.set_security_answers("john", answers("Q1?", "Q2?"))
    duplicate = [SecurityAnswer(0, "Q4?", "h", NOW), SecurityAnswer(0, "Q5?", "h", NOW)]
    with pytest.raises(StorageError):
        await storage.set_security_answers("john", duplicate)
    assert await storage.get_security_answers("john") == answers("Q1?", "Q2?")


async def test_security_answers_can_be_deleted(storage: Storage) -> None:
    await storage.set_security_answers("john", answers("Q1?", "Q2?"))
    assert await storage.delete_security_answers("john") == 2
    assert await storage.get_security_answers("john") == []
    assert await storage.delete_security_answers("john") == 0
