"""Mailed one-time codes (Authelia 4.39's one_time_code) in PostgreSQL: OneTimeCodeStore.

SECURITY: consuming and revoking are each one conditional UPDATE (WHERE consumed_at IS NULL ...):
PostgreSQL row-locks the record, and a second UPDATE waiting on that lock re-checks the condition
once the first commits, so two requests on any replicas can never both win the same code.
"""

from __future__ import annotations

from portal.storage.base import OneTimeCode
from portal.storage.postgres.core import PostgresCore
from portal.storage.rows import (
    INSERT_ONE_TIME_CODE,
    SELECT_ONE_TIME_CODES,
    one_time_code_from_row,
    one_time_code_params,
)


class PostgresOneTimeCodes(PostgresCore):
    """Play the OneTimeCodeStore role on PostgreSQL: mailed one-time codes."""

    async def save_one_time_code(self, record: OneTimeCode) -> None:
        """Insert a new record; an existing public_id is never overwritten (StorageError)."""
        await self._execute_count(
            "save_one_time_code",
            INSERT_ONE_TIME_CODE + " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            *one_time_code_params(record),
        )

    async def get_one_time_code(self, public_id: str) -> OneTimeCode | None:
        """Return the record with that public id, in whatever state, or None."""
        rows = await self._fetch(
            "get_one_time_code", SELECT_ONE_TIME_CODES + " WHERE public_id = $1", public_id
        )
        return one_time_code_from_row(rows[0]) if rows else None

    async def consume_one_time_code(
        self, username: str, intent: str, code_hash: str, *, at: float, ip: str
    ) -> bool:
        """Mark the usable record of that user, intent and code hash consumed; True only for the
        single winner."""
        changed = await self._execute_count(
            "consume_one_time_code",
            "UPDATE one_time_codes SET consumed_at = $4, consumed_ip = $5"
            " WHERE username = $1 AND intent = $2 AND code_hash = $3"
            " AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $4",
            username,
            intent,
            code_hash,
            at,
            ip,
        )
        return changed > 0

    async def revoke_one_time_code(self, public_id: str, *, at: float, ip: str) -> bool:
        """Revoke the record; True if it was usable and is now revoked."""
        changed = await self._execute_count(
            "revoke_one_time_code",
            "UPDATE one_time_codes SET revoked_at = $2, revoked_ip = $3"
            " WHERE public_id = $1"
            " AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $2",
            public_id,
            at,
            ip,
        )
        return changed == 1

    async def purge_one_time_codes(self, *, expired_before: float) -> int:
        """Delete records that expired before `expired_before`; return how many."""
        return await self._execute_count(
            "purge_one_time_codes",
            "DELETE FROM one_time_codes WHERE expires_at < $1",
            expired_before,
        )
