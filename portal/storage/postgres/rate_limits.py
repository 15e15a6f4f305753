"""Rate-limit event logs in PostgreSQL: the RateLimitStore role.

A hit is one transaction on one connection: take the key's transaction-level advisory lock,
insert the event, drop the key's old events, read what is left. The lock serialises hits on one
key across replicas (other keys go on in parallel), so simultaneous hits are all counted and
each caller sees its own event and those of every hit before it: a distinct count each.
"""

from __future__ import annotations

from typing import Any

from portal.storage.postgres.core import PostgresCore

# The advisory lock of a key is this text and the key, hashed (a collision only serialises two
# keys' hits, it never loses one).
_LOCK_PREFIX = "portal.rate_limit:"


class PostgresRateLimits(PostgresCore):
    """Play the RateLimitStore role on PostgreSQL: rate-limit event logs."""

    async def rate_limit_hit(self, key: str, *, at: float, keep_for: float) -> list[float]:
        """Record an event, drop the key's events older than at-keep_for, return those kept."""
        if keep_for < 0:
            raise ValueError("keep_for must not be negative")

        async def hit(conn: Any) -> list[float]:
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _LOCK_PREFIX + key
            )
            await conn.execute("INSERT INTO rate_limit_events (key, at) VALUES ($1, $2)", key, at)
            await conn.execute(
                "DELETE FROM rate_limit_events WHERE key = $1 AND at < $2", key, at - keep_for
            )
            rows = await conn.fetch(
                "SELECT at FROM rate_limit_events WHERE key = $1 ORDER BY at", key
            )
            return [float(row["at"]) for row in rows]

        return await self._run("rate_limit_hit", hit)

    async def rate_limit_events(self, key: str, *, since: float) -> list[float]:
        """Return the key's event times at or after `since`, ascending, without recording."""
        rows = await self._fetch(
            "rate_limit_events",
            "SELECT at FROM rate_limit_events WHERE key = $1 AND at >= $2 ORDER BY at",
            key,
            since,
        )
        return [float(row["at"]) for row in rows]

    async def rate_limit_clear(self, key: str) -> int:
        """Delete every event of the key (a ban lifted); return how many."""
        return await self._execute_count(
            "rate_limit_clear", "DELETE FROM rate_limit_events WHERE key = $1", key
        )

    async def rate_limit_keys(self, prefix: str, *, since: float) -> dict[str, list[float]]:
        """Return every key starting with `prefix` that has events at or after `since`, with
        those events ascending."""
        rows = await self._fetch(
            "rate_limit_keys",
            # left(), not LIKE: a prefix's % or _ is text, not a wildcard.
            "SELECT key, at FROM rate_limit_events WHERE left(key, length($1)) = $1"
            " AND at >= $2 ORDER BY key, at",
            prefix,
            since,
        )
        found: dict[str, list[float]] = {}
        for row in rows:
            found.setdefault(str(row["key"]), []).append(float(row["at"]))
        return found

    async def purge_rate_limits(self, *, before: float) -> int:
        """Delete every key's events older than `before`; return how many."""
        return await self._execute_count(
            "purge_rate_limits", "DELETE FROM rate_limit_events WHERE at < $1", before
        )
