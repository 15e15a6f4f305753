"""Server-side session records in SQLite: the SessionRecordStore role."""

from __future__ import annotations

from typing import Any

from portal.storage.base import SessionRecord
from portal.storage.rows import (
    INSERT_SESSION,
    ON_CONFLICT_REPLACE_SESSION,
    SELECT_SESSIONS,
    session_from_row,
    session_params,
    to_json,
)
from portal.storage.sqlite.core import SqliteCore


class SqliteSessionRecords(SqliteCore):
    """Play the SessionRecordStore role on the SQLite file: server-side session records."""

    async def session_save(self, record: SessionRecord) -> None:
        """Insert the session or replace the one with the same id."""
        params = session_params(record)  # before any I/O: bad data never gets stored
        await self._write_count(
            "session_save",
            INSERT_SESSION + " VALUES (?, ?, ?, ?, ?, ?, ?)" + ON_CONFLICT_REPLACE_SESSION,
            params,
        )

    async def session_get(self, session_id: str) -> SessionRecord | None:
        """Return the session with that id, expired or not, or None."""
        rows = await self._fetch(
            "session_get",
            SELECT_SESSIONS + " WHERE id = ?",
            (session_id,),
        )
        return session_from_row(rows[0]) if rows else None

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
            (to_json(data), session_id),
        )
        return changed == 1

    async def session_delete(self, session_id: str) -> bool:
        """Delete the session; True if it existed."""
        changed = await self._write_count(
            "session_delete", "DELETE FROM sessions WHERE id = ?", (session_id,)
        )
        return changed == 1

    async def session_delete_user(self, username: str, *, keep: str | None = None) -> int:
        """Delete every session of that user but the one with id `keep`; return how many."""
        return await self._write_count(
            "session_delete_user",
            "DELETE FROM sessions WHERE username = ? AND id IS NOT ?",
            (username, keep),
        )

    async def sessions_of_user(self, username: str) -> list[SessionRecord]:
        """Return every session of that user, oldest created_at first (empty if none)."""
        rows = await self._fetch(
            "sessions_of_user",
            SELECT_SESSIONS + " WHERE username = ? ORDER BY created_at, id",
            (username,),
        )
        return [session_from_row(row) for row in rows]

    async def purge_sessions(self, *, expired_before: float) -> int:
        """Delete sessions that expired before `expired_before`; return how many."""
        return await self._write_count(
            "purge_sessions", "DELETE FROM sessions WHERE expires_at < ?", (expired_before,)
        )
