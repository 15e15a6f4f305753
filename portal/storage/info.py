"""What `portal storage schema-info` and `portal storage migrate up` report, for either engine.

Authelia's command names and wording (internal/commands/storage_run.go): "Schema Version",
"Schema Upgrade Available", "Schema Tables", and "Storage schema migration from N to M is
complete".
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass

from portal.config import Config
from portal.deps import storage_from_config
from portal.errors import StartupCheckError
from portal.storage.postgres import PostgresStorage
from portal.storage.postgres import packaged_migrations as postgres_migrations
from portal.storage.sqlite import packaged_migrations as sqlite_migrations
from portal.storage.sqlite.schema import read_schema_info


@dataclass(frozen=True)
class SchemaInfo:
    """The schema a store is at: `version` (0: never migrated), `latest`, its `tables`."""

    version: int
    latest: int
    tables: list[str]

    def lines(self) -> list[str]:
        """Return the report as Authelia's schema-info prints it (N/A for nothing yet)."""
        upgrade = f"yes - version {self.latest}" if self.latest > self.version else "no"
        return [
            f"Schema Version: {self.version or 'N/A'}",
            f"Schema Upgrade Available: {upgrade}",
            f"Schema Tables: {', '.join(self.tables) or 'N/A'}",
        ]


async def schema_info(config: Config) -> SchemaInfo:
    """Read the configured store's schema without changing it; StartupCheckError if it cannot."""
    local = config.storage.local
    if local is not None:
        try:
            version, tables = await asyncio.to_thread(read_schema_info, local.path)
        except sqlite3.Error as exc:
            raise StartupCheckError(f"storage: sqlite: cannot read {local.path}: {exc}") from None
        return SchemaInfo(version, len(sqlite_migrations()), tables)
    assert config.storage.postgres is not None  # noqa: S101 - the model guarantees one of both
    store = PostgresStorage(
        config.storage.postgres, certificates_directory=config.certificates_directory
    )
    version, tables = await store.schema_info()
    return SchemaInfo(version, len(postgres_migrations()), tables)


async def migrate_up(config: Config) -> tuple[int, int]:
    """Migrate the configured store to the latest version; return (before, after).

    The same start-up check `portal serve` runs (under PostgreSQL's advisory lock, so running it
    while replicas start is safe). Raises StartupCheckError naming the step that failed.
    """
    before = (await schema_info(config)).version
    store = storage_from_config(config)
    try:
        await store.startup_check()
        after = await store.schema_version()
    finally:
        await store.close()
    return before, after
