"""The identity token's generated signing keys in PostgreSQL: the IdentityTokenKeyStore role.

A new key is one INSERT ... ON CONFLICT DO NOTHING: the primary key on `generation` lets exactly
one of simultaneous inserts of one generation through, across replicas.
"""

from __future__ import annotations

from portal.storage.base import IdentityTokenSigningKey
from portal.storage.postgres.core import PostgresCore
from portal.storage.rows import (
    INSERT_SIGNING_KEY,
    SELECT_SIGNING_KEYS,
    identity_token_key_from_row,
    identity_token_key_params,
)


class PostgresIdentityTokenKeys(PostgresCore):
    """Play the IdentityTokenKeyStore role on PostgreSQL."""

    async def identity_token_keys(self) -> list[IdentityTokenSigningKey]:
        """Return every generated key, decrypted, oldest generation first."""
        box = self._secret_box()
        rows = await self._fetch("identity_token_keys", SELECT_SIGNING_KEYS)
        return [identity_token_key_from_row(row, box) for row in rows]

    async def add_identity_token_key(self, key: IdentityTokenSigningKey) -> bool:
        """Insert the key; False (nothing written) when its generation or key_id exists."""
        count = await self._execute_count(
            "add_identity_token_key",
            INSERT_SIGNING_KEY + " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            *identity_token_key_params(key, self._secret_box()),
        )
        return count == 1

    async def purge_identity_token_keys(self, *, before_generation: int) -> int:
        """Delete the keys of generations below `before_generation`; return how many."""
        return await self._execute_count(
            "purge_identity_token_keys",
            "DELETE FROM identity_token_keys WHERE generation < $1",
            before_generation,
        )
