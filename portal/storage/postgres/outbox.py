"""The durable mail queue in PostgreSQL: the OutboxStore role.

Claiming is one UPDATE over the due rows picked with FOR UPDATE SKIP LOCKED: a replica claiming
at the same moment skips the rows another is taking instead of waiting for them or taking them
too, so each message goes to exactly one claimer. The claim pushes next_attempt_at past the lease:
a replica that dies mid-send leaves its message to come back once the lease runs out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from portal.storage.base import OutboxMessage
from portal.storage.postgres.core import PostgresCore
from portal.storage.rows import check_claim, outbox_message_from_row, to_json

_MAX_ERROR_CHARS = 1000


class PostgresOutbox(PostgresCore):
    """Play the OutboxStore role on PostgreSQL: the durable queue of mail to send."""

    async def outbox_enqueue(self, kind: str, payload: Mapping[str, Any], *, at: float) -> int:
        """Queue a message due at `at` and return its id; TypeError if payload is not JSON."""
        encoded = to_json(payload)  # before any I/O: a bad payload never reaches the queue
        rows = await self._fetch(
            "outbox_enqueue",
            "INSERT INTO outbox (kind, payload, created_at, attempts, next_attempt_at)"
            " VALUES ($1, $2, $3, 0, $3) RETURNING id",
            kind,
            encoded,
            at,
        )
        return int(rows[0]["id"])

    async def outbox_claim(
        self, *, at: float, lease: float, limit: int = 10
    ) -> list[OutboxMessage]:
        """Take up to `limit` due messages, oldest first, leasing each until at+lease."""
        check_claim(lease=lease, limit=limit)
        rows = await self._fetch(
            "outbox_claim",
            "UPDATE outbox SET next_attempt_at = $1, attempts = attempts + 1"
            " WHERE id IN (SELECT id FROM outbox WHERE next_attempt_at <= $2"
            " ORDER BY created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, kind, payload, created_at, attempts, next_attempt_at, last_error",
            at + lease,
            at,
            limit,
        )
        messages = [outbox_message_from_row(row) for row in rows]
        return sorted(messages, key=lambda message: (message.created_at, message.id))

    async def outbox_done(self, message_id: int) -> None:
        """Remove a delivered message."""
        await self._execute_count("outbox_done", "DELETE FROM outbox WHERE id = $1", message_id)

    async def outbox_retry(self, message_id: int, *, next_attempt_at: float, error: str) -> None:
        """Put a failed message back, due at `next_attempt_at`, remembering the error."""
        await self._execute_count(
            "outbox_retry",
            "UPDATE outbox SET next_attempt_at = $2, last_error = $3 WHERE id = $1",
            message_id,
            next_attempt_at,
            error[:_MAX_ERROR_CHARS],
        )

    async def outbox_pending(self) -> int:
        """Return how many messages are queued, leased or not."""
        rows = await self._fetch("outbox_pending", "SELECT count(*) AS n FROM outbox")
        return int(rows[0]["n"])

    async def outbox_oldest(self) -> float | None:
        """Return when the oldest queued message was queued (epoch seconds), None if none."""
        rows = await self._fetch("outbox_oldest", "SELECT min(created_at) AS t FROM outbox")
        return None if rows[0]["t"] is None else float(rows[0]["t"])
