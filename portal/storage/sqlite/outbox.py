"""The durable mail queue in SQLite: the OutboxStore role (claiming leases a message)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from portal.errors import StorageError
from portal.storage.base import OutboxMessage
from portal.storage.rows import check_claim, outbox_message_from_row, to_json
from portal.storage.sqlite.core import SqliteCore

_MAX_ERROR_CHARS = 1000


class SqliteOutbox(SqliteCore):
    """Play the OutboxStore role on the SQLite file: the durable queue of mail to send."""

    async def outbox_enqueue(self, kind: str, payload: Mapping[str, Any], *, at: float) -> int:
        """Queue a message due at `at` and return its id; TypeError if payload is not JSON."""
        encoded = to_json(payload)  # before any I/O: a bad payload never reaches the queue

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
        check_claim(lease=lease, limit=limit)

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
            messages = [outbox_message_from_row(row) for row in rows]
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

    async def outbox_oldest(self) -> float | None:
        """Return when the oldest queued message was queued (epoch seconds), None if none."""
        rows = await self._fetch("outbox_oldest", "SELECT min(created_at) FROM outbox", ())
        return None if rows[0][0] is None else float(rows[0][0])
