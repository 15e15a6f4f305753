"""TotpStore's and EncryptionKeyStore's contract: registrations with encrypted secrets, one use
per time step across instances, and a key change that re-encrypts everything."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from portal.errors import DecryptionError, StartupCheckError
from portal.storage.base import TotpConfiguration, TotpStore
from portal.storage.encryption import WRONG_KEY
from tests.contract.conftest import Backend
from tests.contract.records import NOW

ROLE = "totp"
SECRET = bytes(range(32))
NEW_KEY = "n" * 40


def registration(username: str = "john", **changes: Any) -> TotpConfiguration:
    base = TotpConfiguration(
        username=username,
        created_at=NOW,
        last_used_at=None,
        issuer="Example",
        algorithm="SHA1",
        digits=6,
        period=30,
        secret=SECRET,
    )
    return dataclasses.replace(base, **changes)


def is_postgres(storage: Any) -> bool:
    return hasattr(storage, "_pool")


async def raw_secrets(storage: Any) -> list[bytes]:
    """Read the secret column as stored, past the role (what a database dump shows)."""
    sql = "SELECT secret FROM totp_configurations ORDER BY username"
    if is_postgres(storage):
        rows = await storage._fetch("test", sql)
    else:
        rows = await storage._fetch("test", sql, ())
    return [bytes(row["secret"]) for row in rows]


async def test_a_registration_is_kept_per_user_with_its_parameters(storage: TotpStore) -> None:
    assert await storage.get_totp_configuration("john") is None
    john = registration()
    harry = registration("harry", algorithm="SHA512", digits=8, period=60, secret=b"h" * 20)
    await storage.save_totp_configuration(john)
    await storage.save_totp_configuration(harry)
    assert await storage.get_totp_configuration("john") == john
    assert await storage.get_totp_configuration("harry") == harry


async def test_saving_again_replaces_the_registration(storage: TotpStore) -> None:
    await storage.save_totp_configuration(registration())
    newer = registration(created_at=NOW + 60, secret=b"x" * 32, digits=8)
    await storage.save_totp_configuration(newer)
    assert await storage.get_totp_configuration("john") == newer


async def test_the_stored_column_never_holds_the_secret(storage: Any) -> None:
    await storage.save_totp_configuration(registration())
    (stored,) = await raw_secrets(storage)
    assert SECRET not in stored
    assert len(stored) == 12 + len(SECRET) + 16  # nonce, ciphertext, GCM tag


async def test_a_secret_moved_to_another_users_row_does_not_open(storage: Any) -> None:
    await storage.save_totp_configuration(registration("john"))
    await storage.save_totp_configuration(registration("mallory", secret=b"m" * 32))
    john_secret, _ = await raw_secrets(storage)  # ordered by username
    if is_postgres(storage):
        await storage._execute_count(
            "test",
            "UPDATE totp_configurations SET secret = $1 WHERE username = 'mallory'",
            john_secret,
        )
    else:
        await storage._write_count(
            "test",
            "UPDATE totp_configurations SET secret = ? WHERE username = 'mallory'",
            (john_secret,),
        )
    with pytest.raises(DecryptionError):
        await storage.get_totp_configuration("mallory")


async def test_deleting_removes_the_registration_and_its_used_steps(storage: TotpStore) -> None:
    await storage.save_totp_configuration(registration())
    await storage.save_totp_configuration(registration("harry"))
    assert await storage.totp_step_use("john", 100, at=NOW, keep_for=300)
    assert await storage.totp_step_use("harry", 100, at=NOW, keep_for=300)

    assert await storage.delete_totp_configuration("john") is True
    assert await storage.get_totp_configuration("john") is None
    assert await storage.delete_totp_configuration("john") is False
    # The step's history went with it; harry's stays.
    assert await storage.totp_step_use("john", 100, at=NOW, keep_for=300) is True
    assert await storage.totp_step_use("harry", 100, at=NOW, keep_for=300) is False
    assert await storage.get_totp_configuration("harry") is not None


async def test_a_step_is_used_once_per_user(storage: TotpStore) -> None:
    assert await storage.totp_step_use("john", 100, at=NOW, keep_for=300) is True
    assert await storage.totp_step_use("john", 100, at=NOW + 1, keep_for=300) is False
    assert await storage.totp_step_use("john", 101, at=NOW + 1, keep_for=300) is True
    assert await storage.totp_step_use("harry", 100, at=NOW + 1, keep_for=300) is True


async def test_a_step_older_than_one_used_is_refused(storage: TotpStore) -> None:
    # A code seen earlier (over a shoulder, in a phishing page) but not used, offered after a
    # later one was: refused while the later one is kept.
    assert await storage.totp_step_use("john", 101, at=NOW, keep_for=300) is True
    assert await storage.totp_step_use("john", 100, at=NOW + 1, keep_for=300) is False
    assert await storage.totp_step_use("john", 99, at=NOW + 1, keep_for=300) is False
    assert await storage.totp_step_use("harry", 100, at=NOW + 1, keep_for=300) is True
    assert await storage.totp_step_use("john", 102, at=NOW + 30, keep_for=300) is True


async def test_steps_older_than_keep_for_are_purged(storage: TotpStore) -> None:
    assert await storage.totp_step_use("john", 100, at=NOW, keep_for=300)
    assert not await storage.totp_step_use("john", 100, at=NOW + 300, keep_for=300)
    # Strictly older than at-keep_for: gone, so the step counts as new again.
    assert await storage.totp_step_use("john", 100, at=NOW + 300.5, keep_for=300)


async def test_simultaneous_uses_of_one_step_from_two_instances_let_exactly_one_through(
    storage: TotpStore, other_instance: TotpStore
) -> None:
    for step in range(20):
        results = await asyncio.gather(
            storage.totp_step_use("john", step, at=NOW, keep_for=300),
            other_instance.totp_step_use("john", step, at=NOW, keep_for=300),
            storage.totp_step_use("john", step, at=NOW, keep_for=300),
        )
        assert sorted(results) == [False, False, True]


async def test_touch_sets_last_used_and_ignores_unknown_users(storage: TotpStore) -> None:
    await storage.save_totp_configuration(registration())
    await storage.touch_totp("john", NOW + 42)
    await storage.touch_totp("nobody", NOW + 42)
    found = await storage.get_totp_configuration("john")
    assert found is not None and found.last_used_at == NOW + 42
    assert await storage.get_totp_configuration("nobody") is None


async def test_a_wrong_key_at_start_up_is_a_clear_error(backend: Backend, storage: Any) -> None:
    await storage.save_totp_configuration(registration())
    assert backend.with_key is not None
    wrong = backend.with_key("w" * 40)  # another storage.encryption_key
    with pytest.raises(StartupCheckError) as caught:
        await wrong.startup_check()
    assert str(caught.value) == WRONG_KEY
    assert "does not match the key this database was encrypted with" in str(caught.value)
    await wrong.close()


async def test_changing_the_key_re_encrypts_every_secret(backend: Backend, storage: Any) -> None:
    await storage.save_totp_configuration(registration())
    await storage.save_totp_configuration(registration("harry", secret=b"h" * 20))
    before = await raw_secrets(storage)

    assert await storage.change_encryption_key(NEW_KEY) == 2

    assert await raw_secrets(storage) != before
    assert await storage.get_totp_configuration("john") == registration()
    # A new instance with the old key is refused; with the new one it reads the secrets.
    old = backend.new()
    with pytest.raises(StartupCheckError, match="does not match"):
        await old.startup_check()
    await old.close()
    assert backend.with_key is not None
    new = backend.with_key(NEW_KEY)
    await new.startup_check()
    found = await new.get_totp_configuration("harry")
    assert found is not None and found.secret == b"h" * 20
    await new.close()
