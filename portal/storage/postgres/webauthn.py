"""WebAuthn credentials in PostgreSQL: the WebAuthnCredentialStore role.

The sign counter's compare-and-set is one conditional UPDATE: PostgreSQL's row lock lets one of
two simultaneous updates of one counter value through, and the other then matches no row.
"""

from __future__ import annotations

import asyncpg

from portal.errors import WebAuthnCredentialExistsError
from portal.storage.base import WebAuthnCredential
from portal.storage.postgres.core import PostgresCore
from portal.storage.rows import INSERT_WEBAUTHN, SELECT_WEBAUTHN, webauthn_from_row, webauthn_params


class PostgresWebAuthn(PostgresCore):
    """Play the WebAuthnCredentialStore role on PostgreSQL."""

    async def add_webauthn_credential(self, credential: WebAuthnCredential) -> int:
        """Insert the credential (its `id` is ignored) and return its new id."""
        sql = INSERT_WEBAUTHN + (
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT DO NOTHING RETURNING id"
        )
        rows = await self._fetch("add_webauthn_credential", sql, *webauthn_params(credential))
        if not rows:
            raise WebAuthnCredentialExistsError()
        return int(rows[0]["id"])

    async def list_webauthn_credentials(self, username: str) -> list[WebAuthnCredential]:
        """Return the user's credentials, oldest first."""
        rows = await self._fetch(
            "list_webauthn_credentials",
            SELECT_WEBAUTHN + " WHERE username = $1 ORDER BY created_at, id",
            username,
        )
        return [webauthn_from_row(row) for row in rows]

    async def get_webauthn_credential(self, credential_id: bytes) -> WebAuthnCredential | None:
        """Return the credential with this authenticator credential id, or None."""
        rows = await self._fetch(
            "get_webauthn_credential", SELECT_WEBAUTHN + " WHERE credential_id = $1", credential_id
        )
        return webauthn_from_row(rows[0]) if rows else None

    async def webauthn_credential_use(
        self, id: int, *, previous: int, sign_count: int, backup_state: bool, at: float
    ) -> bool:
        """Record a use: sign_count from `previous` to `sign_count` (compare-and-set)."""
        count = await self._execute_count(
            "webauthn_credential_use",
            "UPDATE webauthn_credentials SET sign_count = $1, backup_state = $2,"
            " last_used_at = $3 WHERE id = $4 AND sign_count = $5",
            sign_count,
            backup_state,
            at,
            id,
            previous,
        )
        return count == 1

    async def rename_webauthn_credential(self, username: str, id: int, description: str) -> bool:
        """Set the description; False when the user has no such credential."""
        async with self._connection("rename_webauthn_credential") as conn:
            try:
                status: str = await conn.execute(
                    "UPDATE webauthn_credentials SET description = $1"
                    " WHERE id = $2 AND username = $3",
                    description,
                    id,
                    username,
                )
            except asyncpg.UniqueViolationError:
                raise WebAuthnCredentialExistsError() from None
        return status == "UPDATE 1"

    async def delete_webauthn_credential(self, username: str, id: int) -> bool:
        """Delete the user's credential; False when the user has no such credential."""
        count = await self._execute_count(
            "delete_webauthn_credential",
            "DELETE FROM webauthn_credentials WHERE id = $1 AND username = $2",
            id,
            username,
        )
        return count == 1
