"""The schema migrations: `portal/storage/migrations/NNNN_name.sql`, tracked in user_version.

Each migration is applied in its own transaction together with its version bump; a file at a
newer version than this portal knows is refused rather than downgraded.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from portal.errors import StartupCheckError
from portal.storage.migration_files import read_migrations
from portal.storage.sqlite.connection import in_transaction, user_version


def packaged_migrations() -> list[tuple[int, str]]:
    """Return the migrations shipped in portal/storage/migrations, as (version, script)."""
    return read_migrations("portal.storage")


def migrate(conn: sqlite3.Connection, path: Path, migrations: list[tuple[int, str]]) -> None:
    """Apply every migration newer than the file's version; raise StartupCheckError."""
    latest = len(migrations)
    try:
        current = user_version(conn)
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
                f"the database stays at version {user_version(conn)}: {exc}"
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
            current = user_version(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"cannot read {path}: {exc}"
    return _too_new(path, current, len(packaged_migrations()))


def _apply_migration(conn: sqlite3.Connection, version: int, script: str) -> None:
    def apply(conn: sqlite3.Connection) -> None:
        # Re-read under the write lock: another instance may have migrated meanwhile.
        if user_version(conn) >= version:
            return
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(version)}")

    # Statement by statement rather than executescript(), which would COMMIT first and so split
    # the script from its version bump.
    in_transaction(conn, apply)


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


def read_schema_info(path: Path) -> tuple[int, list[str]]:
    """Return (version, table names) of the file, only reading it; (0, []) if it does not exist.

    Blocking: call it on a worker thread. Raises sqlite3.Error for a file that is not a database.
    """
    if not path.is_file():
        return 0, []
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        version = user_version(conn)
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        ).fetchall()
    finally:
        conn.close()
    return version, [str(row[0]) for row in rows]
