"""SqliteCore: the one connection on its worker thread, its lifecycle and the call plumbing.

Every role module (identity_verifications.py, rate_limits.py, ...) subclasses SqliteCore and
reaches the database only through `_write`, `_write_count` and `_fetch`, so each call runs on the
worker thread and each write is one whole `BEGIN IMMEDIATE ... COMMIT` there.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from portal.errors import StartupCheckError, StorageError
from portal.storage.encryption import CHECK_NAME, WRONG_KEY, SecretBox
from portal.storage.migration_files import checked_migrations
from portal.storage.sqlite.connection import (
    connect,
    error_name,
    in_transaction,
    probe_write,
    user_version,
)
from portal.storage.sqlite.schema import migrate, packaged_migrations

_T = TypeVar("_T")


class SqliteCore:
    """Own one SQLite file's connection and worker thread (the StoreLifecycle role).

    `migrations` replaces the packaged ones (tests); each is a (version, script) pair.
    `encryption_key` is storage.encryption_key: with it, the start-up check proves it is the key
    the file's secrets were encrypted with (writing the check value into a fresh file); without
    it (tests of other roles) nothing encrypted can be read or written (StorageError).
    """

    def __init__(
        self,
        path: Path,
        *,
        migrations: Sequence[tuple[int, str]] | None = None,
        encryption_key: str | None = None,
    ) -> None:
        """Remember the file and start the worker thread; nothing is opened before startup_check."""
        self._path = path
        self._migrations = None if migrations is None else list(migrations)
        self._box = None if encryption_key is None else SecretBox(encryption_key)
        # One thread owns the connection: calls are serialised and never run on the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portal-sqlite")
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False

    async def startup_check(self) -> None:
        """Open or create the file, migrate it and prove it can write; raise StartupCheckError."""
        self._ensure_not_closed()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._start)

    async def close(self) -> None:
        """Close the connection and stop the worker thread; later calls raise StorageError."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_connection)
        finally:
            self._executor.shutdown(wait=False)

    async def schema_version(self) -> int:
        """Return the schema version the file is at."""
        return await self._read("schema_version", user_version)

    def _secret_box(self) -> SecretBox:
        if self._box is None:
            raise StorageError("sqlite storage: no storage.encryption_key to read or write secrets")
        return self._box

    # -- plumbing: everything below runs on, or hands work to, the worker thread -------------

    def _ensure_not_closed(self) -> None:
        if self._closed:
            raise StorageError("sqlite storage is closed")

    async def _call(self, op: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        self._ensure_not_closed()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, op, work)

    async def _read(self, op: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._call(op, work)

    async def _write(self, op: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._call(op, lambda conn: in_transaction(conn, work))

    async def _write_count(self, op: str, sql: str, params: Sequence[Any]) -> int:
        return await self._write(op, lambda conn: conn.execute(sql, params).rowcount)

    async def _fetch(self, op: str, sql: str, params: Sequence[Any]) -> list[Any]:
        return await self._read(op, lambda conn: conn.execute(sql, params).fetchall())

    def _guarded(self, op: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise StorageError(f"sqlite storage is not open ({op}); run startup_check() first")
        try:
            return work(conn)
        except sqlite3.Error as exc:
            # SECURITY: name the operation and SQLite's error code only: no file path and no
            # bound values (jtis, session ids) in a message that may reach a log or a page.
            raise StorageError(f"sqlite storage: {op} failed ({error_name(exc)})") from exc

    def _start(self) -> None:
        path = self._path
        if self._conn is not None:  # a repeated check only proves the file is still writable
            _checked_start_step(path, "cannot write to", probe_write, self._conn)
            return
        try:
            migrations = (
                packaged_migrations()
                if self._migrations is None
                else checked_migrations(self._migrations)
            )
            conn = connect(path)
        except (OSError, sqlite3.Error, ValueError) as exc:
            raise StartupCheckError(f"storage: sqlite: cannot open {path}: {exc}") from exc
        try:
            migrate(conn, path, migrations)
            _checked_start_step(path, "cannot write to", probe_write, conn)
            if self._box is not None:
                box = self._box
                _checked_start_step(
                    path, "cannot check the encryption key of", lambda c: check_key(c, box), conn
                )
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite storage: close failed ({error_name(exc)})") from exc


def _checked_start_step(
    path: Path, failure: str, step: Callable[[sqlite3.Connection], None], conn: sqlite3.Connection
) -> None:
    try:
        step(conn)
    except sqlite3.Error as exc:
        raise StartupCheckError(f"storage: sqlite: {failure} {path}: {exc}") from exc


def check_key(conn: sqlite3.Connection, box: SecretBox) -> None:
    """Write the check value into a fresh file; refuse a key that does not open an existing one.

    Raises StartupCheckError (WRONG_KEY) rather than let the portal compute garbage codes from
    secrets decrypted with another key.
    """

    def check(conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT value FROM encryption WHERE name = ?", (CHECK_NAME,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO encryption (name, value) VALUES (?, ?)",
                (CHECK_NAME, box.new_check_value()),
            )
        elif not box.opens_check_value(bytes(row[0])):
            raise StartupCheckError(WRONG_KEY)

    in_transaction(conn, check)
