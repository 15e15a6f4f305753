"""Mailed one-time codes (Authelia 4.39's one_time_code) in SQLite: OneTimeCodeStore.

SECURITY: consuming and revoking are each one conditional UPDATE under the write lock, so two
requests (or two portal instances) can never both win the same code.
"""

from __future__ import annotations

from portal.storage.base import OneTimeCode
from portal.storage.rows import (
    INSERT_ONE_TIME_CODE,
    SELECT_ONE_TIME_CODES,
    one_time_code_from_row,
    one_time_code_params,
)
from portal.storage.sqlite.core import SqliteCore


class SqliteOneTimeCodes(SqliteCore):
    """Play the OneTimeCodeStore role on the SQLite file: mailed one-time codes."""

    async def save_one_time_code(self, record: OneTimeCode) -> None:
        """Insert a new record; an existing public_id is never overwritten (StorageError)."""
        await self._write_count(
            "save_one_time_code",
            INSERT_ONE_TIME_CODE + " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            one_time_code_params(record),
        )

    async def get_one_time_code(self, public_id: str) -> OneTimeCode | None:
        """Return the record with that public id, in whatever state, or None."""
        rows = await self._fetch(
            "get_one_time_code", SELECT_ONE_TIME_CODES + " WHERE public_id = ?", (public_id,)
        )
        return one_time_code_from_row(rows[0]) if rows else None

    async def consume_one_time_code(
        self, username: str, intent: str, code_hash: str, *, at: float, ip: str
    ) -> bool:
        """Mark the usable record of that user, intent and code hash consumed; True only for the
        single winner."""
        # SECURITY: one conditional UPDATE under the database write lock is the whole
        # check-and-set, so two requests (or two portal instances) can never both win.
        changed = await self._write_count(
            "consume_one_time_code",
            "UPDATE one_time_codes SET consumed_at = ?, consumed_ip = ?"
            " WHERE username = ? AND intent = ? AND code_hash = ?"
            " AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > ?",
            (at, ip, username, intent, code_hash, at),
        )
        return changed > 0

    async def revoke_one_time_code(self, public_id: str, *, at: float, ip: str) -> bool:
        """Revoke the record; True if it was usable and is now revoked."""
        changed = await self._write_count(
            "revoke_one_time_code",
            "UPDATE one_time_codes SET revoked_at = ?, revoked_ip = ?"
            " WHERE public_id = ?"
            " AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > ?",
            (at, ip, public_id, at),
        )
        return changed == 1

    async def purge_one_time_codes(self, *, expired_before: float) -> int:
        """Delete records that expired before `expired_before`; return how many."""
        return await self._write_count(
            "purge_one_time_codes",
            "DELETE FROM one_time_codes WHERE expires_at < ?",
            (expired_before,),
        )
