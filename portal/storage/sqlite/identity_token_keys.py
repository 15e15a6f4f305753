"""The identity token's generated signing keys in SQLite: the IdentityTokenKeyStore role.

Keys are encrypted and decrypted on the worker thread (portal/storage/encryption.py). A new
key is one INSERT ... ON CONFLICT DO NOTHING: the primary key on `generation` lets one of two
replicas adding the same generation through.
"""

from __future__ import annotations

import sqlite3

from portal.storage.base import IdentityTokenSigningKey
from portal.storage.rows import (
    INSERT_SIGNING_KEY,
    SELECT_SIGNING_KEYS,
    identity_token_key_from_row,
    identity_token_key_params,
)
from portal.storage.sqlite.core import SqliteCore


class SqliteIdentityTokenKeys(SqliteCore):
    """Play the IdentityTokenKeyStore role on the SQLite file."""

    async def identity_token_keys(self) -> list[IdentityTokenSigningKey]:
        """Return every generated key, decrypted, oldest generation first."""
        box = self._secret_box()

        def get(conn: sqlite3.Connection) -> list[IdentityTokenSigningKey]:
            rows = conn.execute(SELECT_SIGNING_KEYS).fetchall()
            return [identity_token_key_from_row(row, box) for row in rows]

        return await self._read("identity_token_keys", get)

    async def add_identity_token_key(self, key: IdentityTokenSigningKey) -> bool:
        """Insert the key; False (nothing written) when its generation or key_id exists."""
        params = identity_token_key_params(key, self._secret_box())
        count = await self._write_count(
            "add_identity_token_key",
            INSERT_SIGNING_KEY + " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            params,
        )
        return count == 1

    async def purge_identity_token_keys(self, *, before_generation: int) -> int:
        """Delete the keys of generations below `before_generation`; return how many."""
        return await self._write_count(
            "purge_identity_token_keys",
            "DELETE FROM identity_token_keys WHERE generation < ?",
            (before_generation,),
        )
