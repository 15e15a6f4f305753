"""TOTP registrations and used time steps in SQLite: the TotpStore and EncryptionKeyStore roles
(which re-encrypts the identity token's generated keys too).

Secrets are encrypted and decrypted on the worker thread (portal/storage/encryption.py), so the
event loop never does the work and the clear secret never reaches SQLite.
"""

from __future__ import annotations

import sqlite3

from portal.storage.base import TotpConfiguration
from portal.storage.encryption import CHECK_NAME, SecretBox, identity_token_key_aad, totp_aad
from portal.storage.rows import (
    INSERT_TOTP,
    ON_CONFLICT_REPLACE_TOTP,
    SELECT_TOTP,
    totp_from_row,
    totp_params,
)
from portal.storage.sqlite.core import SqliteCore


class SqliteTotp(SqliteCore):
    """Play the TotpStore and EncryptionKeyStore roles on the SQLite file."""

    async def get_totp_configuration(self, username: str) -> TotpConfiguration | None:
        """Return the user's registration with its secret decrypted, or None."""
        box = self._secret_box()

        def get(conn: sqlite3.Connection) -> TotpConfiguration | None:
            row = conn.execute(SELECT_TOTP + " WHERE username = ?", (username,)).fetchone()
            return None if row is None else totp_from_row(row, box)

        return await self._read("get_totp_configuration", get)

    async def save_totp_configuration(self, configuration: TotpConfiguration) -> None:
        """Insert the registration or replace the user's existing one."""
        box = self._secret_box()
        await self._write(
            "save_totp_configuration",
            lambda conn: conn.execute(
                INSERT_TOTP + " VALUES (?, ?, ?, ?, ?, ?, ?, ?)" + ON_CONFLICT_REPLACE_TOTP,
                totp_params(configuration, box),
            ),
        )

    async def delete_totp_configuration(self, username: str) -> bool:
        """Delete the user's registration and used steps; True if there was a registration."""

        def delete(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM totp_history WHERE username = ?", (username,))
            cursor = conn.execute("DELETE FROM totp_configurations WHERE username = ?", (username,))
            return cursor.rowcount > 0

        return await self._write("delete_totp_configuration", delete)

    async def totp_step_use(self, username: str, step: int, *, at: float, keep_for: float) -> bool:
        """Record the use of a time step; True only for its first use, and when no later step
        of the user was used (replay prevention, RFC 6238 section 5.2)."""

        def use(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "DELETE FROM totp_history WHERE username = ? AND created_at < ?",
                (username, at - keep_for),
            )
            # The primary key (username, step) makes the first insert the only one; a step
            # older than one used already is refused too (RFC 6238 section 5.2).
            cursor = conn.execute(
                "INSERT INTO totp_history (username, step, created_at) SELECT ?, ?, ?"
                " WHERE NOT EXISTS (SELECT 1 FROM totp_history WHERE username = ? AND step > ?)"
                " ON CONFLICT (username, step) DO NOTHING",
                (username, step, at, username, step),
            )
            return cursor.rowcount == 1

        return await self._write("totp_step_use", use)

    async def touch_totp(self, username: str, at: float) -> None:
        """Record that the user's code was accepted at `at` (last_used_at)."""
        await self._write_count(
            "touch_totp",
            "UPDATE totp_configurations SET last_used_at = ? WHERE username = ?",
            (at, username),
        )

    async def change_encryption_key(self, new_key: str) -> int:
        """Re-encrypt every secret and the check value in one transaction; return how many."""
        old, new = self._secret_box(), SecretBox(new_key)

        def change(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT username, secret FROM totp_configurations").fetchall()
            for username, secret in rows:
                aad = totp_aad(username)
                conn.execute(
                    "UPDATE totp_configurations SET secret = ? WHERE username = ?",
                    (new.encrypt(old.decrypt(bytes(secret), aad), aad), username),
                )
            keys = conn.execute("SELECT key_id, private_key FROM identity_token_keys").fetchall()
            for key_id, private_key in keys:
                aad = identity_token_key_aad(key_id)
                conn.execute(
                    "UPDATE identity_token_keys SET private_key = ? WHERE key_id = ?",
                    (new.encrypt(old.decrypt(bytes(private_key), aad), aad), key_id),
                )
            conn.execute(
                "INSERT INTO encryption (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (CHECK_NAME, new.new_check_value()),
            )
            return len(rows) + len(keys)

        count = await self._write("change_encryption_key", change)
        self._box = new
        return count
