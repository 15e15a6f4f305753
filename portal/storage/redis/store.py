"""RedisSessionStore: the SessionProvider role on Redis (the layout: redis/__init__.py)."""

from __future__ import annotations

import asyncio
import json
import logging
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
from portal.storage.redis.sealing import Sealer, UnsealError

_T = TypeVar("_T")

log = logging.getLogger(__name__)

# A record's sealed fields (the rest the Lua scripts read): username and created_at, and data.
SEALED = ("identity", "data")


class RedisSessionStore:
    """Keep session records in Redis: a SessionProvider (storage/base.py), nothing else.

    `inactivity` maps each cookie domain to its inactivity in seconds (0: off), the record's
    domain being `data["domain"]` as SessionStore writes it; a record of another domain expires
    at its absolute expiration only. `clock` turns absolute times into Redis TTLs. Every Redis
    failure becomes StorageError naming the operation (never an id, a username or a password):
    SessionStoreUnavailableError (503) when Redis cannot be reached or does not answer in time.

    `secret` is session.secret (Authelia: the key encrypting session data in Redis): each record's
    username, created_at and data are sealed with it (sealing.py), the record's key as associated
    data; the username appears only as its keyed hash (`user_tag`, also naming the per-user
    index). Readable in Redis: the times the scripts need (last_active_at, expires_at, idle,
    remember_me) and the keyed hashes. A record that does not open (altered, moved to another key,
    or sealed under another secret) reads as no session, with a warning logged once.
    """

    def __init__(
        self,
        config: RedisConfig,
        *,
        secret: str,
        clock: Clock,
        inactivity: Mapping[str, float],
        certificates_directory: Path | None = None,
    ) -> None:
        self._config = config
        self._sealer = Sealer(secret)
        self._warned = False
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
            reason = await self._sentinels_problem() or f"{type(exc).__name__}: {exc}"
            raise StartupCheckError(
                f"{where}: cannot connect to Redis or log in: {reason}"
            ) from None
        try:
            probe = PREFIX + "startup-check"
            await client.set(probe, "1", px=1000)
            await client.delete(probe)
        except RedisError as exc:
            raise StartupCheckError(
                f"{where}: connected, but cannot write: {type(exc).__name__}: {exc}"
            ) from None
        await self._warn_of_eviction(client)
        await self._open_idle_connections()

    async def _sentinels_problem(self) -> str | None:
        """Return why no sentinel answers, naming each one and its error; None if one does.

        redis-py's MasterNotFoundError keeps only the error's class ("ConnectionError"), so a
        sentinel whose certificate is not trusted would otherwise go unexplained.
        """
        problems = []
        for sentinel in self._sentinels:
            where = sentinel.connection_pool.connection_kwargs
            try:
                await sentinel.ping()
            except RedisError as exc:
                problems.append(
                    f"sentinel {where['host']}:{where['port']}: {type(exc).__name__}: {exc}"
                )
            else:
                return None
        return "; ".join(problems) or None

    async def _warn_of_eviction(self, client: Any) -> None:
        """Warn when Redis may evict keys to make room (any maxmemory-policy but noeviction).

        SECURITY: every key here has a TTL, so an evicting policy may drop a user's index of
        sessions while the sessions live on, and a reset would then end none of them. Redis
        users who may not run CONFIG (ACLs) get no warning; the README says what to set.
        """
        try:
            policy = (await client.config_get("maxmemory-policy")).get("maxmemory-policy")
        except RedisError:
            return
        if policy and policy != "noeviction":
            log.warning(
                "session.redis: Redis evicts keys under memory pressure (maxmemory-policy %s): "
                "an evicted index of a user's sessions would let a reset leave them open; "
                "set maxmemory-policy noeviction",
                policy,
            )

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
        key = RECORD + record.id
        tag = self._sealer.user_tag(record.username)
        identity = json.dumps({"username": record.username, "created_at": record.created_at})
        args = [
            record.id,
            tag,
            _ttl_ms(deadline - now),
            _ttl_ms(record.expires_at - now),
            self._sealer.seal(identity, key=key, field="identity"),
            repr(record.last_active_at),
            repr(record.expires_at),
            "1" if record.remember_me else "0",
            self._seal_data(key, record.data),
            repr(idle),
            RECORD,
        ]
        keys = [key, USER_INDEX + tag, EXPIRY]
        await self._script("save a session", SAVE, keys, args)

    async def session_get(self, session_id: str) -> SessionRecord | None:
        """Return the session with that id, or None (also once Redis expired it)."""
        client = self._started()
        key = RECORD + session_id
        fields = await self._call("read a session", lambda: client.hgetall(key))
        if not fields:
            return None
        try:
            opened = {f: self._sealer.open(str(fields[f]), key=key, field=f) for f in SEALED}
            identity = json.loads(opened["identity"])
            username = str(identity["username"])
            if self._sealer.user_tag(username) != fields["user_tag"]:
                raise UnsealError("user_tag")  # SECURITY: else delete_user would miss it
            return SessionRecord(
                id=session_id,
                username=username,
                created_at=float(identity["created_at"]),
                last_active_at=float(fields["last_active_at"]),
                expires_at=float(fields["expires_at"]),
                remember_me=fields["remember_me"] == "1",
                data=json.loads(opened["data"]),
            )
        except (UnsealError, KeyError, TypeError, ValueError):
            # SECURITY: no session; neither the id nor the stored values reach the log.
            if not self._warned:
                self._warned = True
                log.warning(
                    "session.redis: a session record cannot be decrypted (altered, moved, or "
                    "written under another session.secret); it reads as no session"
                )
            return None

    async def session_touch(self, session_id: str, *, at: float) -> None:
        """Record activity at `at` (never backwards) and extend the session's TTL to match."""
        args = [repr(at), repr(self._clock.now()), repr(GRACE)]
        await self._script("touch a session", TOUCH, [RECORD + session_id], args)

    async def session_update_data(self, session_id: str, data: dict[str, Any]) -> bool:
        """Replace the data of an existing session (never creating one); True if it existed."""
        key = RECORD + session_id
        sealed = self._seal_data(key, data)
        done = await self._script("update a session", UPDATE_DATA, [key], [sealed])
        return bool(done)

    async def session_delete(self, session_id: str) -> bool:
        """Delete the session and say so on the channel; True if it existed."""
        keys = [RECORD + session_id, EXPIRY]
        args = [session_id, USER_INDEX, CHANNEL]
        return bool(await self._script("delete a session", DELETE, keys, args))

    async def session_delete_user(self, username: str, *, keep: str | None = None) -> int:
        """Delete every session of the user (the per-user index) but the one with id `keep`,
        and say so; return how many."""
        tag = self._sealer.user_tag(username)
        keys = [USER_INDEX + tag, EXPIRY]
        args = [tag, RECORD, CHANNEL, keep or ""]
        deleted = await self._script("delete a user's sessions", DELETE_USER, keys, args)
        return int(deleted)

    async def sessions_of_user(self, username: str) -> list[SessionRecord]:
        """Return every session of the user (the per-user index), oldest created_at first.

        Each indexed id is read as session_get reads it: a record that does not open, or whose
        username is not this one (a keyed-hash index never holds another's, but it is checked),
        is left out.
        """
        client = self._started()
        index = USER_INDEX + self._sealer.user_tag(username)
        ids = await self._call("list a user's sessions", lambda: client.smembers(index))
        records = [await self.session_get(str(i)) for i in sorted(ids)]
        found = [r for r in records if r is not None and r.username == username]
        return sorted(found, key=lambda r: (r.created_at, r.id))

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

    async def listen(self, invalidate: Invalidate) -> None:
        """Pass every session or user ended on any replica to `invalidate`, until cancelled.

        listener.listen says how: the session-ended channel, resubscribing when it is lost. The
        channel names a user by its keyed hash only, so a user's news empties the whole cache
        (it holds a second of sessions at most): ("user", tag) is passed on as ("all", "").
        """

        def by_tag(kind: str, key: str) -> None:
            invalidate(*(("all", "") if kind == "user" else (kind, key)))

        await listen(self._started, by_tag)

    # -- helpers ---------------------------------------------------------------------------------

    def _seal_data(self, key: str, data: Mapping[str, Any]) -> str:
        return self._sealer.seal(json.dumps(data, separators=(",", ":")), key=key, field="data")

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
            # A Redis that answers but refuses (READONLY during a failover, OOM, NOPERM, LOADING)
            # cannot serve sessions now either: the same 503 for everyone, never a 500.
            # SECURITY: only the error's type is kept; redis-py's text could name a key.
            raise SessionStoreUnavailableError(
                f"Redis: cannot {operation}: {type(exc).__name__}"
            ) from None


def _ttl_ms(seconds: float) -> int:
    """Return a Redis TTL in milliseconds: seconds plus GRACE, at least 1."""
    return max(1, math.ceil((seconds + GRACE) * 1000))
