"""Sliding-window rate-limit events in SQLite: the RateLimitStore role."""

from __future__ import annotations

import sqlite3

from portal.storage.sqlite.core import SqliteCore


class SqliteRateLimits(SqliteCore):
    """Play the RateLimitStore role on the SQLite file: rate-limit event logs."""

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

    async def rate_limit_keys(self, prefix: str, *, since: float) -> dict[str, list[float]]:
        """Return every key starting with `prefix` that has events at or after `since`, with
        those events ascending."""
        rows = await self._fetch(
            "rate_limit_keys",
            # substr, not LIKE: a prefix's % or _ is text, not a wildcard.
            "SELECT key, at FROM rate_limit_events WHERE substr(key, 1, ?) = ? AND at >= ?"
            " ORDER BY key, at",
            (len(prefix), prefix, since),
        )
        found: dict[str, list[float]] = {}
        for key, at in rows:
            found.setdefault(str(key), []).append(float(at))
        return found

    async def purge_rate_limits(self, *, before: float) -> int:
        """Delete every key's events older than `before`; return how many."""
        return await self._write_count(
            "purge_rate_limits", "DELETE FROM rate_limit_events WHERE at < ?", (before,)
        )
