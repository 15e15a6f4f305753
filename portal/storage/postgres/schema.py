"""PostgreSQL schema migrations: `portal/storage/postgres/migrations/NNNN_name.sql`.

The version is the highest row of `portal_schema_migrations` (one row per applied migration,
with the time it was applied). Each migration runs in its own transaction together with its row,
under a transaction-level advisory lock keyed on the schema name, so two replicas starting at
once never race: the second waits, re-reads the version and finds nothing left to do. A database
at a newer version than this portal knows is refused rather than downgraded.
"""

from __future__ import annotations

import time
from typing import Any

from portal.errors import StartupCheckError
from portal.storage.migration_files import checked_migrations, read_migrations
from portal.storage.postgres.connection import quote_identifier

__all__ = [
    "MIGRATIONS_TABLE",
    "checked_migrations",
    "migrate",
    "packaged_migrations",
    "probe_write",
    "schema_version",
]

MIGRATIONS_TABLE = "portal_schema_migrations"  # written out in the statements below
# pg_advisory_xact_lock takes a bigint: the lock is this text, hashed with the schema's name.
_LOCK_NAME = "portal.storage.migrations:"


def packaged_migrations() -> list[tuple[int, str]]:
    """Return the migrations shipped in portal/storage/postgres/migrations, as (version, script)."""
    return read_migrations("portal.storage.postgres")


async def schema_version(conn: Any) -> int:
    """Return the version the connection's schema is at; 0 before the first migration."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", MIGRATIONS_TABLE)
    if not exists:
        return 0
    return int(
        await conn.fetchval("SELECT coalesce(max(version), 0) FROM portal_schema_migrations")
    )


async def migrate(conn: Any, schema: str, migrations: list[tuple[int, str]]) -> None:
    """Apply every migration newer than the schema's version; StartupCheckError if too new.

    Creates the schema first when it does not exist (the role needs CREATE on the database for
    that; an existing schema needs only CREATE on itself).
    """
    latest = len(migrations)
    async with conn.transaction():
        await _lock(conn, schema)
        await _prepare(conn, schema)
        current = await schema_version(conn)
    if current > latest:
        # SECURITY: never run old code on a newer schema; a silent downgrade could lose the
        # consumed/revoked marks that keep reset links single-use.
        raise StartupCheckError(
            f"storage: postgres: migrate: schema '{schema}' is at version {current}, newer than "
            f"this portal knows ({latest}); refusing to start rather than downgrade it"
        )
    for version, script in migrations:
        if version > current:
            await _apply(conn, schema, version, script)


async def probe_write(conn: Any) -> None:
    """Make one real write (rewrite the newest migration row as it is); raise if it cannot."""
    # An UPDATE that changes nothing is still a write: a read-only replica or a role without
    # UPDATE shows up now rather than at the first reset.
    async with conn.transaction():
        await conn.execute(
            "UPDATE portal_schema_migrations SET applied_at = applied_at"
            " WHERE version = (SELECT max(version) FROM portal_schema_migrations)"
        )


async def _lock(conn: Any, schema: str) -> None:
    # Released when the transaction ends, committed or not: a replica that dies mid-migration
    # never leaves the lock behind.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _LOCK_NAME + schema)


async def _prepare(conn: Any, schema: str) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    if not exists:
        await conn.execute(f"CREATE SCHEMA {quote_identifier(schema)}")
    # Only when missing: a migrated database needs no CREATE right (and a read-only one gets as
    # far as the write probe, which names the problem).
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", MIGRATIONS_TABLE):
        await conn.execute(
            "CREATE TABLE portal_schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )


async def _apply(conn: Any, schema: str, version: int, script: str) -> None:
    try:
        async with conn.transaction():
            await _lock(conn, schema)
            # Re-read under the lock: another replica may have migrated meanwhile.
            if await schema_version(conn) >= version:
                return
            await conn.execute(script)
            await conn.execute(
                "INSERT INTO portal_schema_migrations (version, applied_at) VALUES ($1, $2)",
                version,
                time.time(),
            )
    except StartupCheckError:
        raise
    except Exception as exc:
        first_line = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise StartupCheckError(
            f"storage: postgres: migrate: migration {version} failed and was rolled back, "
            f"schema '{schema}' stays at version {version - 1}: {first_line}"
        ) from None
