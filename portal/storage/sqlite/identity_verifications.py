"""Reset-link records (Authelia's identity verifications) in SQLite: IdentityVerificationStore.

SECURITY: consuming and revoking are each one conditional UPDATE under the write lock, so two
requests (or two portal instances) can never both win the same link.
"""

from __future__ import annotations

from portal.storage.base import IdentityVerification
from portal.storage.rows import (
    INSERT_IDENTITY_VERIFICATION,
    SELECT_IDENTITY_VERIFICATIONS,
    identity_verification_from_row,
    identity_verification_params,
)
from portal.storage.sqlite.core import SqliteCore


class SqliteIdentityVerifications(SqliteCore):
    """Play the IdentityVerificationStore role on the SQLite file: reset-link records."""

    async def save_identity_verification(self, record: IdentityVerification) -> None:
        """Insert a new record; an existing jti is never overwritten (StorageError)."""
        # SECURITY: a plain INSERT, never an upsert: re-saving a jti must not make a consumed or
        # revoked link usable again.
        await self._write_count(
            "save_identity_verification",
            INSERT_IDENTITY_VERIFICATION + " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            identity_verification_params(record),
        )

    async def get_identity_verification(self, jti: str) -> IdentityVerification | None:
        """Return the record for `jti`, in whatever state, or None."""
        rows = await self._fetch(
            "get_identity_verification",
            SELECT_IDENTITY_VERIFICATIONS + " WHERE jti = ?",
            (jti,),
        )
        return identity_verification_from_row(rows[0]) if rows else None

    async def consume_identity_verification(self, jti: str, *, at: float, ip: str) -> bool:
        """Mark the record consumed if usable at `at`; True only for the single winner."""
        # SECURITY: one conditional UPDATE under the database write lock is the whole
        # check-and-set, so two requests (or two portal instances) can never both win.
        changed = await self._write_count(
            "consume_identity_verification",
            "UPDATE identity_verifications SET consumed_at = ?, consumed_ip = ?"
            " WHERE jti = ?"
            " AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > ?",
            (at, ip, jti, at),
        )
        return changed == 1

    async def release_identity_verification(self, jti: str, *, consumed_at: float) -> bool:
        """Undo our own consume (the write it guarded failed); True if it was ours to undo."""
        changed = await self._write_count(
            "release_identity_verification",
            "UPDATE identity_verifications SET consumed_at = NULL, consumed_ip = NULL"
            " WHERE jti = ? AND consumed_at = ? AND revoked_at IS NULL",
            (jti, consumed_at),
        )
        return changed == 1

    async def revoke_identity_verification(self, jti: str, *, at: float, ip: str) -> bool:
        """Revoke the record; True if it was usable and is now revoked."""
        changed = await self._write_count(
            "revoke_identity_verification",
            "UPDATE identity_verifications SET revoked_at = ?, revoked_ip = ?"
            " WHERE jti = ?"
            " AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > ?",
            (at, ip, jti, at),
        )
        return changed == 1

    async def revoke_identity_verifications_for(
        self, username: str, action: str, *, at: float, ip: str, keep_jti: str | None = None
    ) -> int:
        """Revoke every usable record of that user and action except `keep_jti`; return how many."""
        return await self._write_count(
            "revoke_identity_verifications_for",
            "UPDATE identity_verifications SET revoked_at = ?, revoked_ip = ?"
            " WHERE username = ? AND action = ? AND (? IS NULL OR jti <> ?)"
            " AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > ?",
            (at, ip, username, action, keep_jti, keep_jti, at),
        )

    async def purge_identity_verifications(self, *, expired_before: float) -> int:
        """Delete records that expired before `expired_before`; return how many."""
        return await self._write_count(
            "purge_identity_verifications",
            "DELETE FROM identity_verifications WHERE expires_at < ?",
            (expired_before,),
        )
