"""PostgresCore: the asyncpg pool, its lifecycle, and the call plumbing every role uses.

Every role module (identity_verifications.py, rate_limits.py, ...) subclasses PostgresCore and
reaches the database only through `_execute_count`, `_fetch` and `_transaction`, so that every
failure is named the same way: an engine that cannot be reached (refused, reset, shut down,
timed out) raises StorageUnavailableError (503, the same for everyone) and the pool drops its idle
connections so that the next call connects afresh once the engine is back; any other error raises
StorageError naming the operation and PostgreSQL's SQLSTATE, never a bound value.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from portal.config.storage import PostgresStorageConfig
from portal.errors import StartupCheckError, StorageError, StorageUnavailableError
from portal.storage.encryption import CHECK_NAME, WRONG_KEY, SecretBox
from portal.storage.postgres.connection import (
    UNREACHABLE,
    connect_options,
    describe,
    describe_address,
    server_name_problem,
)
from portal.storage.postgres.schema import (
    checked_migrations,
    migrate,
    packaged_migrations,
    probe_write,
    schema_version,
)
from portal.tls import client_context

_T = TypeVar("_T")
POOL_MAX_SIZE = 10


class PostgresCore:
    """Own the connection pool to one PostgreSQL database (the StoreLifecycle role).

    PostgresCore(config, certificates_directory=None, migrations=None): `config` is
    storage.postgres; `certificates_directory` the top-level one (private CAs for `tls`);
    `migrations` replaces the packaged ones (tests), each a (version, script) pair.
    `encryption_key` is storage.encryption_key: with it, the start-up check proves it is the key
    the database's secrets were encrypted with (writing the check value into a fresh database);
    without it (tests of other roles) nothing encrypted can be read or written (StorageError).
    Nothing connects before startup_check.
    """

    def __init__(
        self,
        config: PostgresStorageConfig,
        *,
        certificates_directory: Path | None = None,
        migrations: Sequence[tuple[int, str]] | None = None,
        encryption_key: str | None = None,
    ) -> None:
        """Remember the settings; nothing connects before startup_check."""
        self._config = config
        self._certificates_directory = certificates_directory
        self._migrations = None if migrations is None else list(migrations)
        self._box = None if encryption_key is None else SecretBox(encryption_key)
        self._pool: asyncpg.Pool | None = None
        self._closed = False

    async def startup_check(self) -> None:
        """Connect, sign in, migrate under the advisory lock and prove a write works.

        Raises StartupCheckError whose one line says which step failed: `connect` (nothing
        answers, TLS, no such database), `authenticate` (the server refused the username or
        password), `migrate` or `write`; never the password.
        """
        if self._closed:
            raise StorageError("postgres storage is closed")
        if self._pool is not None:  # a repeated check only proves a write still works
            await self._checked_step("write", self._pool, probe_write)
            return
        options = await self._options()
        migrations = (
            packaged_migrations()
            if self._migrations is None
            else checked_migrations(self._migrations)
        )
        pool = asyncpg.create_pool(**options, min_size=0, max_size=POOL_MAX_SIZE)
        await pool
        try:
            await self._first_connection(pool)
            await self._checked_step(
                "migrate", pool, lambda conn: migrate(conn, self._config.schema_, migrations)
            )
            await self._checked_step("write", pool, probe_write)
            if self._box is not None:
                box = self._box
                await self._checked_step("encryption", pool, lambda conn: check_key(conn, box))
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        """Close the pool; later calls raise StorageError; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self._timeout())
        except UNREACHABLE:
            pool.terminate()

    async def schema_version(self) -> int:
        """Return the schema version the database is at (its last applied migration)."""
        async with self._connection("schema_version") as conn:
            return await schema_version(conn)

    async def schema_info(self) -> tuple[int, list[str]]:
        """Return (version, table names) of the configured schema without migrating anything.

        For `portal storage schema-info`: one connection of its own, closed after; works on an
        instance that was never started. Raises StartupCheckError (connect or authenticate).
        """
        options = await self._options()
        try:
            conn = await asyncpg.connect(**options)
        except (*UNREACHABLE, asyncpg.PostgresError) as exc:
            raise self._connect_failure(exc) from None
        try:
            version = await schema_version(conn)
            rows = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename",
                self._config.schema_,
            )
        finally:
            await conn.close()
        return version, [str(row["tablename"]) for row in rows]

    def _secret_box(self) -> SecretBox:
        if self._box is None:
            raise StorageError(
                "postgres storage: no storage.encryption_key to read or write secrets"
            )
        return self._box

    # -- plumbing -------------------------------------------------------------------------------

    def _timeout(self) -> float:
        return self._config.timeout.total_seconds()

    async def _options(self) -> dict[str, Any]:
        context: ssl.SSLContext | None = None
        tls = self._config.tls
        problem = server_name_problem(self._config)
        if problem is not None:
            raise StartupCheckError(problem)
        if tls is not None:
            # client_context reads certificate files: a worker thread, not the event loop.
            context = await asyncio.to_thread(
                client_context,
                tls,
                self._certificates_directory,
                "storage.postgres.tls",
            )
        return connect_options(self._config, context)

    async def _first_connection(self, pool: asyncpg.Pool) -> None:
        try:
            conn = await pool.acquire(timeout=self._timeout())
        except (*UNREACHABLE, asyncpg.PostgresError) as exc:
            raise self._connect_failure(exc) from None
        await pool.release(conn)

    def _connect_failure(self, exc: BaseException) -> StartupCheckError:
        where = describe_address(self._config)
        if isinstance(
            exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
        ):
            return StartupCheckError(
                f"storage: postgres: authenticate: {where} refused user "
                f"'{self._config.username}': {describe(exc, self._config)}"
            )
        return StartupCheckError(
            f"storage: postgres: connect: cannot connect to {where}: {describe(exc, self._config)}"
        )

    async def _checked_step(
        self, step: str, pool: asyncpg.Pool, work: Callable[[Any], Awaitable[None]]
    ) -> None:
        where = describe_address(self._config)
        try:
            async with pool.acquire(timeout=self._timeout()) as conn:
                await work(conn)
        except StartupCheckError:
            raise
        except (*UNREACHABLE, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StartupCheckError(
                f"storage: postgres: {step}: {where} database '{self._config.database}' "
                f"schema '{self._config.schema_}': {describe(exc, self._config)}"
            ) from None

    def _open_pool(self, op: str) -> asyncpg.Pool:
        if self._closed:
            raise StorageError("postgres storage is closed")
        if self._pool is None:
            raise StorageError(f"postgres storage is not open ({op}); run startup_check() first")
        return self._pool

    @asynccontextmanager
    async def _connection(self, op: str) -> AsyncIterator[Any]:
        """Lend a pooled connection for one operation, naming its failures (see the module)."""
        pool = self._open_pool(op)
        try:
            async with pool.acquire(timeout=self._timeout()) as conn:
                yield conn
        except UNREACHABLE as exc:
            # The engine went away (or is still away): connections made before are dead, so
            # drop them all now rather than fail once per pooled connection when it is back.
            await pool.expire_connections()
            if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
                raise StorageUnavailableError(
                    f"postgres storage: {op}: no server accepts writes now (standby or read-only)"
                ) from None
            raise StorageUnavailableError(
                f"postgres storage: {op}: the database cannot be reached ({type(exc).__name__})"
            ) from None
        except asyncpg.ReadOnlySQLTransactionError as exc:
            # A standby, or a failover in progress: writes cannot happen now, the same 503 for
            # everyone as a database that cannot be reached (never a 500).
            raise StorageUnavailableError(
                f"postgres storage: {op}: the database is read-only now (SQLSTATE {exc.sqlstate})"
            ) from None
        except asyncpg.PostgresError as exc:
            # SECURITY: SQLSTATE and class only: no bound values (jtis, session ids) in a
            # message that may reach a log.
            raise StorageError(
                f"postgres storage: {op} failed ({type(exc).__name__}, SQLSTATE {exc.sqlstate})"
            ) from None

    @asynccontextmanager
    async def _transaction(self, op: str) -> AsyncIterator[Any]:
        """Lend a connection inside one transaction (READ COMMITTED), committed on success."""
        async with self._connection(op) as conn, conn.transaction():
            yield conn

    async def _execute_count(self, op: str, sql: str, *args: Any) -> int:
        """Run one statement and return how many rows it changed."""
        async with self._connection(op) as conn:
            status: str = await conn.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def _fetch(self, op: str, sql: str, *args: Any) -> list[Any]:
        """Run one query and return its rows (asyncpg Records, read by column name)."""
        async with self._connection(op) as conn:
            rows: list[Any] = await conn.fetch(sql, *args)
        return rows

    async def _run(self, op: str, work: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run work(conn) inside one transaction and return what it returns."""
        async with self._transaction(op) as conn:
            return await work(conn)


async def check_key(conn: Any, box: SecretBox) -> None:
    """Write the check value into a fresh database; refuse a key that does not open it.

    Raises StartupCheckError (WRONG_KEY) rather than let the portal compute garbage codes from
    secrets decrypted with another key. Replicas starting together insert once (ON CONFLICT).
    """
    await conn.execute(
        "INSERT INTO encryption (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        CHECK_NAME,
        box.new_check_value(),
    )
    value = await conn.fetchval("SELECT value FROM encryption WHERE name = $1", CHECK_NAME)
    if not box.opens_check_value(bytes(value)):
        raise StartupCheckError(WRONG_KEY)
