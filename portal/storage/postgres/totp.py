"""TOTP registrations and used time steps in PostgreSQL: the TotpStore and EncryptionKeyStore roles.

A step's first use is one INSERT ... ON CONFLICT DO NOTHING on the (username, step) primary key:
PostgreSQL lets exactly one of simultaneous inserts of one key through, across replicas.
"""

from __future__ import annotations

from typing import Any

from portal.storage.base import TotpConfiguration
from portal.storage.encryption import CHECK_NAME, SecretBox, identity_token_key_aad, totp_aad
from portal.storage.postgres.core import PostgresCore
from portal.storage.rows import (
    INSERT_TOTP,
    ON_CONFLICT_REPLACE_TOTP,
    SELECT_TOTP,
    totp_from_row,
    totp_params,
)


class PostgresTotp(PostgresCore):
    """Play the TotpStore and EncryptionKeyStore roles on PostgreSQL."""

    async def get_totp_configuration(self, username: str) -> TotpConfiguration | None:
        """Return the user's registration with its secret decrypted, or None."""
        box = self._secret_box()
        rows = await self._fetch(
            "get_totp_configuration", SELECT_TOTP + " WHERE username = $1", username
        )
        return totp_from_row(rows[0], box) if rows else None

    async def save_totp_configuration(self, configuration: TotpConfiguration) -> None:
        """Insert the registration or replace the user's existing one."""
        await self._execute_count(
            "save_totp_configuration",
            INSERT_TOTP + " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)" + ON_CONFLICT_REPLACE_TOTP,
            *totp_params(configuration, self._secret_box()),
        )

    async def delete_totp_configuration(self, username: str) -> bool:
        """Delete the user's registration and used steps; True if there was a registration."""

        async def delete(conn: Any) -> bool:
            await conn.execute("DELETE FROM totp_history WHERE username = $1", username)
            status: str = await conn.execute(
                "DELETE FROM totp_configurations WHERE username = $1", username
            )
            return status != "DELETE 0"

        return await self._run("delete_totp_configuration", delete)

    async def totp_step_use(self, username: str, step: int, *, at: float, keep_for: float) -> bool:
        """Record the use of a time step; True only for its first use, and when no later step
        of the user was used (replay prevention, RFC 6238 section 5.2)."""

        async def use(conn: Any) -> bool:
            await conn.execute(
                "DELETE FROM totp_history WHERE username = $1 AND created_at < $2",
                username,
                at - keep_for,
            )
            # The primary key (username, step) makes the first insert the only one; a step
            # older than one used already is refused too (RFC 6238 section 5.2).
            status: str = await conn.execute(
                "INSERT INTO totp_history (username, step, created_at) SELECT $1, $2, $3"
                " WHERE NOT EXISTS (SELECT 1 FROM totp_history WHERE username = $1 AND step > $2)"
                " ON CONFLICT (username, step) DO NOTHING",
                username,
                step,
                at,
            )
            return status == "INSERT 0 1"

        return await self._run("totp_step_use", use)

    async def touch_totp(self, username: str, at: float) -> None:
        """Record that the user's code was accepted at `at` (last_used_at)."""
        await self._execute_count(
            "touch_totp",
            "UPDATE totp_configurations SET last_used_at = $1 WHERE username = $2",
            at,
            username,
        )

    async def change_encryption_key(self, new_key: str) -> int:
        """Re-encrypt every secret and the check value in one transaction; return how many."""
        old, new = self._secret_box(), SecretBox(new_key)

        async def change(conn: Any) -> int:
            rows = await conn.fetch("SELECT username, secret FROM totp_configurations FOR UPDATE")
            for row in rows:
                aad = totp_aad(row["username"])
                await conn.execute(
                    "UPDATE totp_configurations SET secret = $1 WHERE username = $2",
                    new.encrypt(old.decrypt(bytes(row["secret"]), aad), aad),
                    row["username"],
                )
            keys = await conn.fetch(
                "SELECT key_id, private_key FROM identity_token_keys FOR UPDATE"
            )
            for key in keys:
                aad = identity_token_key_aad(key["key_id"])
                await conn.execute(
                    "UPDATE identity_token_keys SET private_key = $1 WHERE key_id = $2",
                    new.encrypt(old.decrypt(bytes(key["private_key"]), aad), aad),
                    key["key_id"],
                )
            await conn.execute(
                "INSERT INTO encryption (name, value) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                CHECK_NAME,
                new.new_check_value(),
            )
            return len(rows) + len(keys)

        count: int = await self._run("change_encryption_key", change)
        self._box = new
        return count
