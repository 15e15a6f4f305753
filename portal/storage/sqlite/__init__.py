"""SqliteStorage: the Storage seam over one SQLite file, plus its schema migrations.

One connection lives on one dedicated worker thread, so the event loop never blocks and calls are
serialised; every write is one `BEGIN IMMEDIATE ... COMMIT` run whole on that thread. Several
portal instances may share the file: SQLite's write lock (WAL mode, busy_timeout) serialises them,
and every check-and-set is a single conditional statement inside such a transaction.

The schema version is `PRAGMA user_version`; migrations are `migrations/NNNN_name.sql`, each
applied in its own transaction together with its version bump.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from portal.errors import StartupCheckError, StorageError
from portal.storage.base import (
    IdentityVerification,
    OutboxMessage,
    SecurityAnswer,
    SessionRecord,
)

_T = TypeVar("_T")

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_BUSY_TIMEOUT_MS = 5000
_MAX_ERROR_CHARS = 1000
_WAL_RETRY_PAUSE = 0.01
_WAL_ATTEMPTS = int(_BUSY_TIMEOUT_MS / 1000 / _WAL_RETRY_PAUSE)


def packaged_migrations() -> list[tuple[int, str]]:
    """Return the migrations shipped in portal/storage/migrations, as (version, script)."""
    folder = resources.files("portal.storage").joinpath("migrations")
    found: list[tuple[int, str]] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return _checked_migrations(found)


class SqliteStorage:
    """Keep the portal's durable state in one SQLite file."""

    def __init__(self, path: Path, *, migrations: Sequence[tuple[int, str]] | None = None) -> None:
        self._path = path
        self._migrations = None if migrations is None else list(migrations)
        # One thread owns the connection: calls are serialised and never run on the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portal-sqlite")
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

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
        return await self._read("schema_version", _user_version)

    # -- reset-link records --------------------------------------------------------------------

    async def save_identity_verification(self, record: IdentityVerification) -> None:
        """Insert a new record; an existing jti is never overwritten (StorageError)."""
        # SECURITY: a plain INSERT, never an upsert: re-saving a jti must not make a consumed or
        # revoked link usable again.
        await self._write_count(
            "save_identity_verification",
            "INSERT INTO identity_verifications (jti, username, action, issued_at, issued_ip,"
            " expires_at, consumed_at, consumed_ip, revoked_at, revoked_ip)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.jti,
                record.username,
                record.action,
                record.issued_at,
                record.issued_ip,
                record.expires_at,
                record.consumed_at,
                record.consumed_ip,
                record.revoked_at,
                record.revoked_ip,
            ),
        )

    async def get_identity_verification(self, jti: str) -> IdentityVerification | None:
        """Return the record for `jti`, in whatever state, or None."""
        rows = await self._fetch(
            "get_identity_verification",
            "SELECT jti, username, action, issued_at, issued_ip, expires_at,"
            " consumed_at, consumed_ip, revoked_at, revoked_ip"
            " FROM identity_verifications WHERE jti = ?",
            (jti,),
        )
        return _verification_from_row(rows[0]) if rows else None

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

    # -- rate limits ---------------------------------------------------------------------------

    async def rate_limit_hit(self, key: str, *, at: float, keep_for: float) -> list[float]:
        """Record an event, drop the key's events older than at-keep_for, return those kept."""
        if keep_for < 0:
            raise ValueError("keep_for must not be negative")

        def hit(conn: sqlite3.Connection) -> list[float]:
            conn.execute("INSERT INTO rate_limit_events (key, at) VALUES (?, ?)", (key, at))
            conn.execute(
                "DELETE FROM rate_limit_events WHERE key = ? AND at < ?", (key, at - keep_for)
            )
            rows = conn.execute(
                "SELECT at FROM rate_limit_events WHERE key = ? ORDER BY at", (key,)
            ).fetchall()
            return [float(row[0]) for row in rows]

        return await self._write("rate_limit_hit", hit)

    async def rate_limit_events(self, key: str, *, since: float) -> list[float]:
        """Return the key's event times at or after `since`, ascending, without recording."""
        rows = await self._fetch(
            "rate_limit_events",
            "SELECT at FROM rate_limit_events WHERE key = ? AND at >= ? ORDER BY at",
            (key, since),
        )
        return [float(row[0]) for row in rows]

    async def rate_limit_clear(self, key: str) -> int:
        """Delete every event of the key (a ban lifted); return how many."""
        return await self._write_count(
            "rate_limit_clear", "DELETE FROM rate_limit_events WHERE key = ?", (key,)
        )

    async def purge_rate_limits(self, *, before: float) -> int:
        """Delete every key's events older than `before`; return how many."""
        return await self._write_count(
            "purge_rate_limits", "DELETE FROM rate_limit_events WHERE at < ?", (before,)
        )

    # -- outbox --------------------------------------------------------------------------------

    async def outbox_enqueue(self, kind: str, payload: Mapping[str, Any], *, at: float) -> int:
        """Queue a message due at `at` and return its id; TypeError if payload is not JSON."""
        encoded = _to_json(payload)  # before any I/O: a bad payload never reaches the queue

        def enqueue(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO outbox (kind, payload, created_at, attempts, next_attempt_at)"
                " VALUES (?, ?, ?, 0, ?)",
                (kind, encoded, at, at),
            )
            if cursor.lastrowid is None:  # pragma: no cover - an INSERT always sets it
                raise StorageError("sqlite storage: outbox_enqueue got no row id")
            return cursor.lastrowid

        return await self._write("outbox_enqueue", enqueue)

    async def outbox_claim(
        self, *, at: float, lease: float, limit: int = 10
    ) -> list[OutboxMessage]:
        """Take up to `limit` due messages, oldest first, leasing each until at+lease."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if lease <= 0:
            raise ValueError("lease must be positive")

        def claim(conn: sqlite3.Connection) -> list[OutboxMessage]:
            # Pushing next_attempt_at past the lease is the claim: a worker that dies mid-send
            # leaves the message to come back once the lease runs out.
            rows = conn.execute(
                "UPDATE outbox SET next_attempt_at = ?, attempts = attempts + 1"
                " WHERE id IN (SELECT id FROM outbox WHERE next_attempt_at <= ?"
                " ORDER BY created_at, id LIMIT ?)"
                " RETURNING id, kind, payload, created_at, attempts, next_attempt_at, last_error",
                (at + lease, at, limit),
            ).fetchall()
            messages = [_message_from_row(row) for row in rows]
            return sorted(messages, key=lambda message: (message.created_at, message.id))

        return await self._write("outbox_claim", claim)

    async def outbox_done(self, message_id: int) -> None:
        """Remove a delivered message."""
        await self._write_count("outbox_done", "DELETE FROM outbox WHERE id = ?", (message_id,))

    async def outbox_retry(self, message_id: int, *, next_attempt_at: float, error: str) -> None:
        """Put a failed message back, due at `next_attempt_at`, remembering the error."""
        await self._write_count(
            "outbox_retry",
            "UPDATE outbox SET next_attempt_at = ?, last_error = ? WHERE id = ?",
            (next_attempt_at, error[:_MAX_ERROR_CHARS], message_id),
        )

    async def outbox_pending(self) -> int:
        """Return how many messages are queued, leased or not."""
        rows = await self._fetch("outbox_pending", "SELECT count(*) FROM outbox", ())
        return int(rows[0][0])

    # -- sessions ------------------------------------------------------------------------------

    async def session_save(self, record: SessionRecord) -> None:
        """Insert the session or replace the one with the same id."""
        data = _to_json(record.data)
        await self._write_count(
            "session_save",
            "INSERT INTO sessions (id, username, created_at, last_active_at, expires_at,"
            " remember_me, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET username = excluded.username,"
            " created_at = excluded.created_at, last_active_at = excluded.last_active_at,"
            " expires_at = excluded.expires_at, remember_me = excluded.remember_me,"
            " data = excluded.data",
            (
                record.id,
                record.username,
                record.created_at,
                record.last_active_at,
                record.expires_at,
                int(record.remember_me),
                data,
            ),
        )

    async def session_get(self, session_id: str) -> SessionRecord | None:
        """Return the session with that id, expired or not, or None."""
        rows = await self._fetch(
            "session_get",
            "SELECT id, username, created_at, last_active_at, expires_at, remember_me, data"
            " FROM sessions WHERE id = ?",
            (session_id,),
        )
        return _session_from_row(rows[0]) if rows else None

    async def session_touch(self, session_id: str, *, at: float) -> None:
        """Record activity on the session at `at` (never moving it backwards)."""
        await self._write_count(
            "session_touch",
            "UPDATE sessions SET last_active_at = max(last_active_at, ?) WHERE id = ?",
            (at, session_id),
        )

    async def session_update_data(self, session_id: str, data: dict[str, Any]) -> bool:
        """Replace the data of an existing session (never creating one); True if it existed."""
        changed = await self._write_count(
            "session_update_data",
            "UPDATE sessions SET data = ? WHERE id = ?",
            (_to_json(data), session_id),
        )
        return changed == 1

    async def session_delete(self, session_id: str) -> bool:
        """Delete the session; True if it existed."""
        changed = await self._write_count(
            "session_delete", "DELETE FROM sessions WHERE id = ?", (session_id,)
        )
        return changed == 1

    async def session_delete_user(self, username: str) -> int:
        """Delete every session of that user; return how many."""
        return await self._write_count(
            "session_delete_user", "DELETE FROM sessions WHERE username = ?", (username,)
        )

    async def purge_sessions(self, *, expired_before: float) -> int:
        """Delete sessions that expired before `expired_before`; return how many."""
        return await self._write_count(
            "purge_sessions", "DELETE FROM sessions WHERE expires_at < ?", (expired_before,)
        )

    # -- security questions --------------------------------------------------------------------

    async def get_security_answers(self, username: str) -> list[SecurityAnswer]:
        """Return the user's questions and answer hashes by position (empty if none)."""
        rows = await self._fetch(
            "get_security_answers",
            "SELECT position, question, answer_hash, set_at FROM security_answers"
            " WHERE username = ? ORDER BY position",
            (username,),
        )
        return [
            SecurityAnswer(row["position"], row["question"], row["answer_hash"], row["set_at"])
            for row in rows
        ]

    async def set_security_answers(
        self, username: str, answers: Sequence[SecurityAnswer]
    ) -> None:
        """Replace all of the user's questions and answer hashes at once."""
        rows = [(username, a.position, a.question, a.answer_hash, a.set_at) for a in answers]

        def replace_all(conn: sqlite3.Connection) -> None:
            # One transaction: a reader sees the old set or the new one, never a mix.
            conn.execute("DELETE FROM security_answers WHERE username = ?", (username,))
            conn.executemany(
                "INSERT INTO security_answers (username, position, question, answer_hash,"
                " set_at) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

        await self._write("set_security_answers", replace_all)

    async def delete_security_answers(self, username: str) -> int:
        """Delete the user's questions and answer hashes; return how many rows went."""
        return await self._write_count(
            "delete_security_answers",
            "DELETE FROM security_answers WHERE username = ?",
            (username,),
        )

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
        return await self._call(op, lambda conn: _in_transaction(conn, work))

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
            raise StorageError(f"sqlite storage: {op} failed ({_error_name(exc)})") from exc

    def _start(self) -> None:
        path = self._path
        if self._conn is not None:  # a repeated check only proves the file is still writable
            _checked_start_step(path, "cannot write to", _probe_write, self._conn)
            return
        try:
            migrations = (
                packaged_migrations()
                if self._migrations is None
                else _checked_migrations(self._migrations)
            )
            conn = _connect(path)
        except (OSError, sqlite3.Error, ValueError) as exc:
            raise StartupCheckError(f"storage: sqlite: cannot open {path}: {exc}") from exc
        try:
            _migrate(conn, path, migrations)
            _checked_start_step(path, "cannot write to", _probe_write, conn)
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
            raise StorageError(f"sqlite storage: close failed ({_error_name(exc)})") from exc


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # SECURITY: create the file owner-only before SQLite opens it: it holds reset-link records
    # and session ids. SQLite gives the -wal and -shm files the database file's mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(
        path,
        timeout=_BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
        check_same_thread=False,  # created and used on the worker thread, closed there too
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
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


def _checked_start_step(
    path: Path, failure: str, step: Callable[[sqlite3.Connection], None], conn: sqlite3.Connection
) -> None:
    try:
        step(conn)
    except sqlite3.Error as exc:
        raise StartupCheckError(f"storage: sqlite: {failure} {path}: {exc}") from exc


def _checked_migrations(migrations: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    ordered = sorted(migrations, key=lambda migration: migration[0])
    versions = [version for version, _ in ordered]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must run 1, 2, 3 ... without gaps, got {versions}")
    return ordered


def _migrate(conn: sqlite3.Connection, path: Path, migrations: list[tuple[int, str]]) -> None:
    latest = len(migrations)
    try:
        current = _user_version(conn)
    except sqlite3.Error as exc:
        raise StartupCheckError(f"storage: sqlite: cannot read {path}: {exc}") from exc
    too_new = _too_new(path, current, latest)
    if too_new is not None:
        raise StartupCheckError(f"storage: sqlite: {too_new}")
    for version, script in migrations:
        if version <= current:
            continue
        try:
            _apply_migration(conn, version, script)
        except sqlite3.Error as exc:
            raise StartupCheckError(
                f"storage: sqlite: {path}: migration {version} failed and was rolled back, "
                f"the database stays at version {_user_version(conn)}: {exc}"
            ) from exc


def _too_new(path: Path, current: int, latest: int) -> str | None:
    if current <= latest:
        return None
    # SECURITY: never run old code on a newer schema; a silent downgrade could lose the
    # consumed/revoked marks that keep reset links single-use.
    return (
        f"{path} is at schema version {current}, newer than this portal knows ({latest}); "
        "refusing to start rather than downgrade it"
    )


def check_database_file(path: Path) -> str | None:
    """Say why startup_check would refuse an existing file, only reading it; None if it would not.

    A file that is not a SQLite database, or one at a newer schema than this portal's, is
    refused. A missing file is not a problem here: startup_check creates it.
    """
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            current = _user_version(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"cannot read {path}: {exc}"
    return _too_new(path, current, len(packaged_migrations()))


def _apply_migration(conn: sqlite3.Connection, version: int, script: str) -> None:
    def apply(conn: sqlite3.Connection) -> None:
        # Re-read under the write lock: another instance may have migrated meanwhile.
        if _user_version(conn) >= version:
            return
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(version)}")

    # Statement by statement rather than executescript(), which would COMMIT first and so split
    # the script from its version bump.
    _in_transaction(conn, apply)


def _statements(script: str) -> list[str]:
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    statements.append(pending[:-1])  # the last piece gained a ';' the script never had
    # Drop what holds only comments, blanks or bare ';'; an unfinished statement stays and fails.
    return [sql for sql in statements if _without_comments(sql).strip(" \t\r\n;")]


def _without_comments(sql: str) -> str:
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.DOTALL)
    return re.sub(r"--[^\n]*", " ", sql)


def _probe_write(conn: sqlite3.Connection) -> None:
    # Rewriting user_version with its own value is a real write that reaches the WAL on COMMIT,
    # so a read-only file, directory or full disk shows up now rather than at the first reset.
    def rewrite(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA user_version = {_user_version(conn)}")

    _in_transaction(conn, rewrite)


def _in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], _T]) -> _T:
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


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _error_name(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return str(name) if name else type(exc).__name__


def _to_json(value: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(value), sort_keys=True, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:  # NaN/Infinity or a circular reference: not JSON either
        raise TypeError(f"value is not JSON-serialisable: {exc}") from exc


def _verification_from_row(row: sqlite3.Row) -> IdentityVerification:
    return IdentityVerification(
        jti=row["jti"],
        username=row["username"],
        action=row["action"],
        issued_at=row["issued_at"],
        issued_ip=row["issued_ip"],
        expires_at=row["expires_at"],
        consumed_at=row["consumed_at"],
        consumed_ip=row["consumed_ip"],
        revoked_at=row["revoked_at"],
        revoked_ip=row["revoked_ip"],
    )


def _message_from_row(row: sqlite3.Row) -> OutboxMessage:
    return OutboxMessage(
        id=row["id"],
        kind=row["kind"],
        payload=json.loads(row["payload"]),
        created_at=row["created_at"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
    )


def _session_from_row(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        username=row["username"],
        created_at=row["created_at"],
        last_active_at=row["last_active_at"],
        expires_at=row["expires_at"],
        remember_me=bool(row["remember_me"]),
        data=json.loads(row["data"]),
    )
