"""Reset-link records (Authelia's identity verifications) in PostgreSQL: IdentityVerificationStore.

SECURITY: consuming and revoking are each one conditional UPDATE (WHERE consumed_at IS NULL ...):
PostgreSQL row-locks the record, and a second UPDATE waiting on that lock re-checks the condition
once the first commits, so two requests on any replicas can never both win the same link.
"""

from __future__ import annotations

from portal.storage.base import IdentityVerification
from portal.storage.postgres.core import PostgresCore
from portal.storage.rows import (
    INSERT_IDENTITY_VERIFICATION,
    SELECT_IDENTITY_VERIFICATIONS,
    identity_verification_from_row,
    identity_verification_params,
)


class PostgresIdentityVerifications(PostgresCore):
    """Play the IdentityVerificationStore role on PostgreSQL: reset-link records."""

    async def save_identity_verification(self, record: IdentityVerification) -> None:
        """Insert a new record; an existing jti is never overwritten (StorageError)."""
        # SECURITY: a plain INSERT, never an upsert: re-saving a jti must not make a consumed or
        # revoked link usable again (a duplicate is a unique violation, hence StorageError).
        await self._execute_count(
            "save_identity_verification",
            INSERT_IDENTITY_VERIFICATION + " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            *identity_verification_params(record),
        )

    async def get_identity_verification(self, jti: str) -> IdentityVerification | None:
        """Return the record for `jti`, in whatever state, or None."""
        rows = await self._fetch(
            "get_identity_verification",
            SELECT_IDENTITY_VERIFICATIONS + " WHERE jti = $1",
            jti,
        )
        return identity_verification_from_row(rows[0]) if rows else None

    async def consume_identity_verification(self, jti: str, *, at: float, ip: str) -> bool:
        """Mark the record consumed if usable at `at`; True only for the single winner."""
        changed = await self._execute_count(
            "consume_identity_verification",
            "UPDATE identity_verifications SET consumed_at = $3, consumed_ip = $2"
            " WHERE jti = $1"
            " AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
            jti,
            ip,
            at,
        )
        return changed == 1

    async def release_identity_verification(self, jti: str, *, consumed_at: float) -> bool:
        """Undo our own consume (the write it guarded failed); True if it was ours to undo."""
        changed = await self._execute_count(
            "release_identity_verification",
            "UPDATE identity_verifications SET consumed_at = NULL, consumed_ip = NULL"
            " WHERE jti = $1 AND consumed_at = $2 AND revoked_at IS NULL",
            jti,
            consumed_at,
        )
        return changed == 1

    async def revoke_identity_verification(self, jti: str, *, at: float, ip: str) -> bool:
        """Revoke the record; True if it was usable and is now revoked."""
        changed = await self._execute_count(
            "revoke_identity_verification",
            "UPDATE identity_verifications SET revoked_at = $3, revoked_ip = $2"
            " WHERE jti = $1"
            " AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
            jti,
            ip,
            at,
        )
        return changed == 1

    async def revoke_identity_verifications_for(
        self, username: str, action: str, *, at: float, ip: str, keep_jti: str | None = None
    ) -> int:
        """Revoke every usable record of that user and action except `keep_jti`; return how many."""
        return await self._execute_count(
            "revoke_identity_verifications_for",
            "UPDATE identity_verifications SET revoked_at = $3, revoked_ip = $2"
            " WHERE username = $1 AND action = $4 AND ($5::text IS NULL OR jti <> $5)"
            " AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
            username,
            ip,
            at,
            action,
            keep_jti,
        )

    async def purge_identity_verifications(self, *, expired_before: float) -> int:
        """Delete records that expired before `expired_before`; return how many."""
        return await self._execute_count(
            "purge_identity_verifications",
            "DELETE FROM identity_verifications WHERE expires_at < $1",
            expired_before,
        )
