"""portal/storage/encryption.py: AES-256-GCM with a key derived from storage.encryption_key,
each value bound to where it lives; the SQLite file a dump would show holds no secret."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from portal.errors import DecryptionError, StartupCheckError
from portal.storage.base import TotpConfiguration
from portal.storage.encryption import SecretBox
from portal.storage.sqlite import SqliteStorage

KEY = "a-storage-encryption-key-of-40-characters"


def test_seal_and_open_round_trip_with_the_same_key_and_aad() -> None:
    box = SecretBox(KEY)
    token = box.seal(b"pending secret", "session:abc:totp")
    assert "pending" not in token and "=" not in token
    assert box.open(token, "session:abc:totp") == b"pending secret"
    assert SecretBox(KEY).open(token, "session:abc:totp") == b"pending secret"


def test_each_seal_uses_a_fresh_nonce() -> None:
    box = SecretBox(KEY)
    assert box.seal(b"same", "aad") != box.seal(b"same", "aad")


@pytest.mark.parametrize(
    ("key", "aad", "tamper"),
    [
        ("another-key-of-at-least-twenty-chars", "session:abc:totp", False),
        (KEY, "session:other:totp", False),
        (KEY, "session:abc:totp", True),
    ],
)
def test_another_key_another_aad_or_an_altered_token_does_not_open(
    key: str, aad: str, tamper: bool
) -> None:
    token = SecretBox(KEY).seal(b"pending secret", "session:abc:totp")
    if tamper:
        token = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(DecryptionError) as caught:
        SecretBox(key).open(token, aad)
    assert "pending" not in str(caught.value)


@pytest.mark.parametrize("token", ["", "not base64 !", "AAAA"])
def test_garbage_does_not_open(token: str) -> None:
    with pytest.raises(DecryptionError):
        SecretBox(KEY).open(token, "aad")


async def test_the_database_file_holds_no_secret_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "db"
    secret = b"THE-SHARED-TOTP-SECRET-0123456789"
    storage = SqliteStorage(path, encryption_key=KEY)
    await storage.startup_check()
    await storage.save_totp_configuration(
        TotpConfiguration("john", 1.0, None, "Example", "SHA1", 6, 30, secret=secret)
    )
    await storage.close()
    for name in ("db", "db-wal"):
        file = tmp_path / name
        if file.exists():
            assert secret not in file.read_bytes()
    with sqlite3.connect(path) as conn:
        (stored,) = conn.execute("SELECT secret FROM totp_configurations").fetchone()
    assert secret not in stored and len(stored) == 12 + len(secret) + 16


async def test_a_wrong_key_at_start_up_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    first = SqliteStorage(tmp_path / "db", encryption_key=KEY)
    await first.startup_check()
    await first.close()
    wrong = SqliteStorage(tmp_path / "db", encryption_key="some-other-key-of-twenty-plus")
    with pytest.raises(StartupCheckError) as caught:
        await wrong.startup_check()
    await wrong.close()
    assert str(caught.value).startswith(
        "storage: storage.encryption_key does not match the key this database was encrypted with"
    )
