"""RedisSessionStore: the SessionProvider role on Redis (the layout: redis/__init__.py)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from portal.clock import Clock
from portal.config import RedisConfig
from portal.errors import SessionStoreUnavailableError, StartupCheckError, StorageError
from portal.storage.base import SessionRecord
from portal.storage.redis.client import redis_client
from portal.storage.redis.listener import Invalidate, listen
from portal.storage.redis.scripts import (
    CHANNEL,
    DELETE,
    DELETE_USER,
    EXPIRY,
    GRACE,
    PREFIX,
    PURGE,
    PURGE_BATCH,
    RECORD,
    SAVE,
    TOUCH,
    UPDATE_DATA,
    USER_INDEX,
)

_T = TypeVar("_T")


class RedisSessionStore:
    """Keep session records in Redis: a SessionProvider (storage/base.py), nothing else.

    `inactivity` maps each cookie domain to its inactivity in seconds (0: off), the record's
    domain being `data["domain"]` as SessionStore writes it; a record of another domain expires
    at its absolute expiration only. `clock` turns absolute times into Redis TTLs. Every Redis
    failure becomes StorageError naming the operation (never an id, a username or a password):
    SessionStoreUnavailableError (503) when Redis cannot be reached or does not answer in time.
    """

    def __init__(
        self,
        config: RedisConfig,
        *,
        clock: Clock,
        inactivity: Mapping[str, float],
        certificates_directory: Path | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._inactivity = dict(inactivity)
        self._certificates_directory = certificates_directory
        self._client: aioredis.Redis | None = None
        self._sentinels: list[aioredis.Redis] = []
        self._scripts: dict[str, AsyncScript] = {}
        self._closed = False

    # -- StoreLifecycle --------------------------------------------------------------------------

    async def startup_check(self) -> None:
        """Connect, authenticate and prove a write works; raise StartupCheckError saying which."""
        if self._client is None:
            self._client, self._sentinels = await asyncio.to_thread(
                redis_client, self._config, self._certificates_directory
            )
        client = self._started()
        where = "session.redis"
        try:
            await client.ping()
        except RedisError as exc:
            raise StartupCheckError(
                f"{where}: cannot connect to Redis or log in: {type(exc).__name__}: {exc}"
            ) from None
        try:
            probe = PREFIX + "startup-check"
            await client.set(probe, "1", px=1000)
            await client.delete(probe)
        except RedisError as exc:
            raise StartupCheckError(
                f"{where}: connected, but cannot write: {type(exc).__name__}: {exc}"
            ) from None
        await self._open_idle_connections()

    async def close(self) -> None:
        """Release the connections; later calls raise StorageError."""
        self._closed = True
        client, self._client = self._client, None
        self._scripts.clear()
        if client is not None:
            await client.aclose()
        sentinels, self._sentinels = self._sentinels, []
        for sentinel in sentinels:
            await sentinel.aclose()

    async def healthy(self) -> bool:
        """Tell whether Redis answers PING now (for /api/health)."""
        try:
            return bool(await self._call("ping", self._started().ping))
        except StorageError:
            return False

    # -- SessionRecordStore ----------------------------------------------------------------------

    async def session_save(self, record: SessionRecord) -> None:
        """Insert the session or replace the one with the same id; it expires by itself."""
        now = self._clock.now()
        idle = 0.0 if record.remember_me else self._idle(record.data)
        deadline = record.expires_at
        if idle > 0:
            deadline = min(deadline, record.last_active_at + idle)
        args = [
            record.id,
            record.username,
            _ttl_ms(deadline - now),
            _ttl_ms(record.expires_at - now),
            repr(record.created_at),
            repr(record.last_active_at),
            repr(record.expires_at),
            "1" if record.remember_me else "0",
            json.dumps(record.data, separators=(",", ":")),
            repr(idle),
            RECORD,
        ]
        keys = [RECORD + record.id, USER_INDEX + record.username, EXPIRY]
        await self._script("save a session", SAVE, keys, args)

    async def session_get(self, session_id: str) -> SessionRecord | None:
        """Return the session with that id, or None (also once Redis expired it)."""
        client = self._started()
        fields = await self._call("read a session", lambda: client.hgetall(RECORD + session_id))
        if not fields:
            return None
        return SessionRecord(
            id=session_id,
            username=str(fields["username"]),
            created_at=float(fields["created_at"]),
            last_active_at=float(fields["last_active_at"]),
            expires_at=float(fields["expires_at"]),
            remember_me=fields["remember_me"] == "1",
            data=json.loads(fields["data"]),
        )

    async def session_touch(self, session_id: str, *, at: float) -> None:
        """Record activity at `at` (never backwards) and extend the session's TTL to match."""
        args = [repr(at), repr(self._clock.now()), repr(GRACE)]
        await self._script("touch a session", TOUCH, [RECORD + session_id], args)

    async def session_update_data(self, session_id: str, data: dict[str, Any]) -> bool:
        """Replace the data of an existing session (never creating one); True if it existed."""
        text = json.dumps(data, separators=(",", ":"))
        done = await self._script("update a session", UPDATE_DATA, [RECORD + session_id], [text])
        return bool(done)

    async def session_delete(self, session_id: str) -> bool:
        """Delete the session and say so on the channel; True if it existed."""
        keys = [RECORD + session_id, EXPIRY]
        args = [session_id, USER_INDEX, CHANNEL]
        return bool(await self._script("delete a session", DELETE, keys, args))

    async def session_delete_user(self, username: str) -> int:
        """Delete every session of the user (the per-user index) and say so; return how many."""
        keys = [USER_INDEX + username, EXPIRY]
        args = [username, RECORD, CHANNEL]
        deleted = await self._script("delete a user's sessions", DELETE_USER, keys, args)
        return int(deleted)

    async def purge_sessions(self, *, expired_before: float) -> int:
        """Delete sessions with expires_at before `expired_before`; return how many existed."""
        total = 0
        while True:
            args = [repr(expired_before), RECORD, USER_INDEX, PURGE_BATCH]
            deleted, seen = await self._script("purge sessions", PURGE, [EXPIRY], args)
            total += int(deleted)
            if int(seen) < PURGE_BATCH:
                return total

    # -- invalidation across replicas ------------------------------------------------------------

    # -- invalidation across replicas ------------------------------------------------------------

    async def listen(self, invalidate: Invalidate) -> None:
        """Pass every session or user ended on any replica to `invalidate`, until cancelled.

        listener.listen says how: the session-ended channel, resubscribing when it is lost.
        """
        await listen(self._started, invalidate)

    # -- helpers ---------------------------------------------------------------------------------

    def _idle(self, data: Mapping[str, Any]) -> float:
        return max(0.0, self._inactivity.get(str(data.get("domain")), 0.0))

    def _started(self) -> aioredis.Redis:
        if self._client is None:
            state = "closed" if self._closed else "not started"
            raise StorageError(f"the Redis session store is {state}")
        return self._client

    async def _open_idle_connections(self) -> None:
        """Open minimum_idle_connections connections now (Authelia: MinIdleConns)."""
        pool = self._started().connection_pool
        taken = []
        try:
            for _ in range(self._config.minimum_idle_connections):
                connection = await pool.get_connection()  # type: ignore[no-untyped-call]
                taken.append(connection)
        except RedisError as exc:
            raise StartupCheckError(
                f"session.redis: cannot open minimum_idle_connections: {type(exc).__name__}"
            ) from None
        finally:
            for connection in taken:
                await pool.release(connection)

    async def _script(self, operation: str, source: str, keys: list[str], args: list[Any]) -> Any:
        client = self._started()
        script = self._scripts.get(source)
        if script is None:
            # EVALSHA, loading the script again after a Redis restart (redis-py's Script).
            script = self._scripts[source] = client.register_script(source)
        return await self._call(operation, lambda: script(keys=keys, args=args, client=client))

    async def _call(self, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run call once more on a fresh connection if its pooled one was closed (every script
        and read here may run twice), as go-redis drops a stale idle connection; map errors."""
        try:
            try:
                return await call()
            except RedisConnectionError:
                return await call()  # redis-py has dropped the broken connection by now
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            # SECURITY: a 503 and no session: whoever asks (auth_request) is refused, not let in.
            raise SessionStoreUnavailableError(
                f"Redis: cannot {operation}: unreachable ({type(exc).__name__})"
            ) from None
        except RedisError as exc:
            # SECURITY: redis-py's text names the command at most; the keys stay out anyway.
            raise StorageError(f"Redis: cannot {operation}: {type(exc).__name__}") from None


def _ttl_ms(seconds: float) -> int:
    """Return a Redis TTL in milliseconds: seconds plus GRACE, at least 1."""
    return max(1, math.ceil((seconds + GRACE) * 1000))
