"""Opening the SQLite file and running work in one transaction on its connection.

Everything here runs on the storage's worker thread (see core.py), never on the event loop.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")

BUSY_TIMEOUT_MS = 5000
_WAL_RETRY_PAUSE = 0.01
_WAL_ATTEMPTS = int(BUSY_TIMEOUT_MS / 1000 / _WAL_RETRY_PAUSE)


def connect(path: Path) -> sqlite3.Connection:
    """Create (owner-only) or open the file in WAL mode; raise OSError or sqlite3.Error."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # SECURITY: create the file owner-only before SQLite opens it: it holds reset-link records
    # and session ids. SQLite gives the -wal and -shm files the database file's mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
        check_same_thread=False,  # created and used on the worker thread, closed there too
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(conn)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection) -> None:
    # Switching a fresh file to WAL takes an exclusive lock and SQLite does not always wait on
    # the busy handler for it, so a second instance starting at the same moment retries here
    # (on the worker thread) for about as long as busy_timeout. WAL then sticks to the file.
    for attempt in range(_WAL_ATTEMPTS):
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or attempt == _WAL_ATTEMPTS - 1:
                raise
            time.sleep(_WAL_RETRY_PAUSE)
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL could not be enabled")


def probe_write(conn: sqlite3.Connection) -> None:
    """Make one real write that reaches the WAL on COMMIT; raise sqlite3.Error if it cannot."""

    # Rewriting user_version with its own value is a real write, so a read-only file,
    # directory or full disk shows up now rather than at the first reset.
    def rewrite(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA user_version = {user_version(conn)}")

    in_transaction(conn, rewrite)


def in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run work(conn) inside BEGIN IMMEDIATE ... COMMIT, rolling back if it raises."""
    # IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so a transaction
    # never fails half-way on a lock upgrade, and writers in other processes queue behind it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


def user_version(conn: sqlite3.Connection) -> int:
    """Return the file's `PRAGMA user_version`: the schema version it is at."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def error_name(exc: sqlite3.Error) -> str:
    """Return SQLite's error code name (SQLITE_BUSY, ...), else the exception's class name."""
    name = getattr(exc, "sqlite_errorname", None)
    return str(name) if name else type(exc).__name__
