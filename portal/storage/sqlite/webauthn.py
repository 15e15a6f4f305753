"""WebAuthn credentials in SQLite: the WebAuthnCredentialStore role.

The sign counter's compare-and-set is one conditional UPDATE inside a write transaction, so of
two simultaneous uses of one counter value only one changes the row.
"""

from __future__ import annotations

import sqlite3

from portal.errors import WebAuthnCredentialExistsError
from portal.storage.base import WebAuthnCredential
from portal.storage.rows import INSERT_WEBAUTHN, SELECT_WEBAUTHN, webauthn_from_row, webauthn_params
from portal.storage.sqlite.core import SqliteCore


class SqliteWebAuthn(SqliteCore):
    """Play the WebAuthnCredentialStore role on the SQLite file."""

    async def add_webauthn_credential(self, credential: WebAuthnCredential) -> int:
        """Insert the credential (its `id` is ignored) and return its new id."""

        def add(conn: sqlite3.Connection) -> int | None:
            try:
                cursor = conn.execute(
                    INSERT_WEBAUTHN + " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    webauthn_params(credential),
                )
            except sqlite3.IntegrityError:
                return None
            return int(cursor.lastrowid or 0)

        new_id = await self._write("add_webauthn_credential", add)
        if new_id is None:
            raise WebAuthnCredentialExistsError()
        return new_id

    async def list_webauthn_credentials(self, username: str) -> list[WebAuthnCredential]:
        """Return the user's credentials, oldest first."""
        rows = await self._fetch(
            "list_webauthn_credentials",
            SELECT_WEBAUTHN + " WHERE username = ? ORDER BY created_at, id",
            (username,),
        )
        return [webauthn_from_row(row) for row in rows]

    async def get_webauthn_credential(self, credential_id: bytes) -> WebAuthnCredential | None:
        """Return the credential with this authenticator credential id, or None."""
        rows = await self._fetch(
            "get_webauthn_credential",
            SELECT_WEBAUTHN + " WHERE credential_id = ?",
            (credential_id,),
        )
        return webauthn_from_row(rows[0]) if rows else None

    async def webauthn_credential_use(
        self, id: int, *, previous: int, sign_count: int, backup_state: bool, at: float
    ) -> bool:
        """Record a use: sign_count from `previous` to `sign_count` (compare-and-set)."""
        count = await self._write_count(
            "webauthn_credential_use",
            "UPDATE webauthn_credentials SET sign_count = ?, backup_state = ?, last_used_at = ?"
            " WHERE id = ? AND sign_count = ?",
            (sign_count, backup_state, at, id, previous),
        )
        return count == 1

    async def rename_webauthn_credential(self, username: str, id: int, description: str) -> bool:
        """Set the description; False when the user has no such credential."""

        def rename(conn: sqlite3.Connection) -> int | None:
            try:
                return conn.execute(
                    "UPDATE webauthn_credentials SET description = ? WHERE id = ? AND username = ?",
                    (description, id, username),
                ).rowcount
            except sqlite3.IntegrityError:
                return None

        count = await self._write("rename_webauthn_credential", rename)
        if count is None:
            raise WebAuthnCredentialExistsError()
        return count == 1

    async def delete_webauthn_credential(self, username: str, id: int) -> bool:
        """Delete the user's credential; False when the user has no such credential."""
        count = await self._write_count(
            "delete_webauthn_credential",
            "DELETE FROM webauthn_credentials WHERE id = ? AND username = ?",
            (id, username),
        )
        return count == 1
