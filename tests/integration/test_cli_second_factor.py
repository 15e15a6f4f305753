"""`portal users second-factor delete` and `portal storage encryption check / change-key`
(Authelia's names), run as an admin runs them: a real process on a real SQLite file and PostgreSQL
database, the users file of the tests."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from portal.storage.base import TotpConfiguration, WebAuthnCredential
from portal.storage.sqlite import SqliteStorage
from tests.conftest import ENCRYPTION_KEY
from tests.integration.postgres import PostgresServer
from tests.integration.test_cli import portal
from tests.integration.test_cli_storage import config_file, postgres_storage

NEW_KEY = "a-brand-new-storage-encryption-key-0123"
SECRET = b"THE-SHARED-TOTP-SECRET-0123456789"


def register(db: Path, username: str = "john", key: str = ENCRYPTION_KEY) -> None:
    async def save() -> None:
        storage = SqliteStorage(db, encryption_key=key)
        await storage.startup_check()
        await storage.save_totp_configuration(
            TotpConfiguration(username, 1.0, None, "Portal", "SHA1", 6, 30, secret=SECRET)
        )
        await storage.close()

    asyncio.run(save())


def read(db: Path, key: str, username: str = "john") -> TotpConfiguration | None:
    async def get() -> TotpConfiguration | None:
        storage = SqliteStorage(db, encryption_key=key)
        await storage.startup_check()
        try:
            return await storage.get_totp_configuration(username)
        finally:
            await storage.close()

    return asyncio.run(get())


def test_an_admin_deletes_a_users_second_factor_and_the_user_is_mailed(
    tmp_path: Path, users_file: Path
) -> None:
    config = str(config_file(tmp_path, users_file))
    register(tmp_path / "db")

    result = portal("users", "second-factor", "delete", "john", "-c", config)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Deleted the TOTP second factor of user 'john'; they were mailed about it."
    ]
    assert read(tmp_path / "db", ENCRYPTION_KEY) is None
    with sqlite3.connect(tmp_path / "db") as conn:
        kinds = [row[0] for row in conn.execute("SELECT kind FROM outbox")]
    assert kinds == ["second_factor_removed"]
    # The audit event, on the log (stderr by default), names the admin as the actor.
    assert 'totp_removed username="john" actor="admin"' in result.stderr


def test_an_admin_deletes_a_users_passkeys_too(tmp_path: Path, users_file: Path) -> None:
    config = str(config_file(tmp_path, users_file))

    async def add_passkeys() -> None:
        storage = SqliteStorage(tmp_path / "db", encryption_key=ENCRYPTION_KEY)
        await storage.startup_check()
        for number in (1, 2):
            await storage.add_webauthn_credential(
                WebAuthnCredential(
                    0, "john", f"Key {number}", f"cred-{number}".encode(), b"\xa0", 0,
                    "00000000-0000-0000-0000-000000000000", (), False, False, 1.0,
                )
            )  # fmt: skip
        await storage.close()

    asyncio.run(add_passkeys())

    result = portal("users", "second-factor", "delete", "john", "-c", config)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Deleted 2 passkeys of user 'john'; they were mailed about it."
    ]
    with sqlite3.connect(tmp_path / "db") as conn:
        left = conn.execute("SELECT count(*) FROM webauthn_credentials").fetchone()[0]
        kinds = [row[0] for row in conn.execute("SELECT kind FROM outbox")]
    assert left == 0
    assert kinds == ["second_factor_removed"] * 2
    assert 'webauthn_removed username="john" actor="admin"' in (result.stderr)


def test_deleting_for_an_unknown_user_or_a_user_without_a_device_is_one_clear_line(
    tmp_path: Path, users_file: Path
) -> None:
    config = str(config_file(tmp_path, users_file))

    unknown = portal("users", "second-factor", "delete", "nobody", "-c", config)
    none = portal("users", "second-factor", "delete", "harry", "-c", config)

    assert unknown.returncode == 1
    assert unknown.stderr.splitlines() == ["error: no user 'nobody'"]
    assert none.returncode == 1
    assert none.stderr.splitlines()[-1:] == ["error: user 'harry' has no second factor registered"]
    assert "Traceback" not in unknown.stderr + none.stderr


def test_check_then_change_key_then_check_again(tmp_path: Path, users_file: Path) -> None:
    config = str(config_file(tmp_path, users_file))
    register(tmp_path / "db")
    register(tmp_path / "db", "harry")

    ok = portal("storage", "encryption", "check", "-c", config)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "Storage encryption key is valid."

    changed = portal(
        "storage", "encryption", "change-key", "--new-encryption-key", NEW_KEY, "-c", config
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.startswith("Storage encryption key changed: 2 secret(s) re-encrypted.")
    assert NEW_KEY not in changed.stdout + changed.stderr

    stale = portal("storage", "encryption", "check", "-c", config)
    assert stale.returncode == 1
    assert stale.stderr.splitlines() == [
        "error: storage.encryption_key does not match the key this database was encrypted with"
    ]
    env = {"PORTAL_STORAGE_ENCRYPTION_KEY": NEW_KEY}
    fresh = portal("storage", "encryption", "check", "-c", config, env=env)
    assert fresh.returncode == 0, fresh.stderr
    found = read(tmp_path / "db", NEW_KEY)
    assert found is not None and found.secret == SECRET


def test_the_new_key_may_come_from_a_file_and_a_short_or_same_key_is_refused(
    tmp_path: Path, users_file: Path
) -> None:
    config = str(config_file(tmp_path, users_file))
    register(tmp_path / "db")
    short = portal(
        "storage", "encryption", "change-key", "--new-encryption-key", "x" * 19, "-c", config
    )
    assert short.returncode == 1
    assert short.stderr.splitlines() == [
        "error: the new encryption key must be at least 20 characters"
    ]
    same = portal(
        "storage", "encryption", "change-key", "--new-encryption-key", ENCRYPTION_KEY, "-c", config
    )
    assert same.returncode == 1
    assert "must be different" in same.stderr
    assert read(tmp_path / "db", ENCRYPTION_KEY) is not None  # nothing changed

    key_file = tmp_path / "new.key"
    key_file.write_text(NEW_KEY + "\n")
    changed = portal(
        "storage",
        "encryption",
        "change-key",
        "--new-encryption-key-file",
        str(key_file),
        "-c",
        config,
    )
    assert changed.returncode == 0, changed.stderr
    found = read(tmp_path / "db", NEW_KEY)
    assert found is not None and found.secret == SECRET


def test_a_wrong_key_on_postgres_is_reported_by_check(
    tmp_path: Path, users_file: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    storage = postgres_storage(postgres_server, postgres_database)
    config = str(config_file(tmp_path, users_file, storage))
    env = {"PORTAL_STORAGE_POSTGRES_PASSWORD": postgres_server.password}
    first = portal("storage", "encryption", "check", "-c", config, env=env)
    assert first.returncode == 0, first.stderr
    wrong = portal(
        "storage",
        "encryption",
        "check",
        "-c",
        config,
        env={**env, "PORTAL_STORAGE_ENCRYPTION_KEY": NEW_KEY},
    )
    assert wrong.returncode == 1
    assert wrong.stderr.splitlines() == [
        "error: storage.encryption_key does not match the key this database was encrypted with"
    ]
