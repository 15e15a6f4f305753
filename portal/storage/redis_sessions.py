"""Session records in Redis (Authelia: session.redis), shared by every replica of the portal.

The SessionProvider role (portal/storage/base.py: session records, StoreLifecycle, health and
news of ended sessions): every other record stays in the storage. What lives in Redis, under
`portal:` keys of database `database_index`:

    portal:session:<id>        a hash: one session record; <id> is the SHA-256 of the cookie value
                               (sessions.py), never the value itself
    portal:sessions-of:<user>  a set of the user's session ids (the per-user index Authelia lacks),
                               pruned of stale ids whenever the user gets a new session
    portal:session-expiry      a sorted set: session id -> expires_at, for purge_sessions
    portal:session-ended       the pub/sub channel saying which session or user was ended

Every record expires in Redis by itself: its TTL runs to its absolute expiration or, unless it is
remembered, to its last activity plus the inactivity of its cookie domain (as SessionStore judges
it, sessions.py `_ended`), plus GRACE; a touch extends it. That is the one place this store reads
the clock: Redis TTLs are relative, the records' times absolute. Each change to several keys is
one Lua script, so it is atomic on the server (a single Redis or a Sentinel master; not Redis
Cluster, where a user's keys would live on several nodes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, Connection, UnixDomainSocketConnection
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from portal.clock import Clock
from portal.config import RedisConfig
from portal.errors import SessionStoreUnavailableError, StartupCheckError, StorageError
from portal.storage.base import SessionRecord
from portal.tls import client_context

log = logging.getLogger("portal.storage.redis")

_T = TypeVar("_T")

PREFIX = "portal:"
RECORD = PREFIX + "session:"
USER_INDEX = PREFIX + "sessions-of:"
EXPIRY = PREFIX + "session-expiry"
CHANNEL = PREFIX + "session-ended"
# Seconds a record outlives its end in Redis, so that SessionStore, not the TTL, ends it (and
# says so on the channel) when a request comes right at the end.
GRACE = 5.0
# Records deleted by one purge script at most: a long purge never blocks Redis for long.
PURGE_BATCH = 500
# Seconds between two attempts to subscribe again after the connection was lost.
RESUBSCRIBE_DELAY = 1.0

# Invalidation callback: ("session", id) | ("user", username) | ("all", "") when messages may
# have been missed (the subscription was lost and is back).
Invalidate = Callable[[str, str], None]

_SAVE = """
local id, username, ttl, index_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'username', username, 'created_at', ARGV[5],
  'last_active_at', ARGV[6], 'expires_at', ARGV[7], 'remember_me', ARGV[8], 'data', ARGV[9],
  'idle', ARGV[10])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[3], ARGV[7], id)
redis.call('SADD', KEYS[2], id)
for _, other in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('HGET', ARGV[11] .. other, 'username') ~= username then
    redis.call('SREM', KEYS[2], other)
  end
end
if redis.call('PTTL', KEYS[2]) < index_ttl then
  redis.call('PEXPIRE', KEYS[2], index_ttl)
end
return 1
"""

_TOUCH = """
local last = redis.call('HGET', KEYS[1], 'last_active_at')
if not last then return 0 end
local at = tonumber(ARGV[1])
if at <= tonumber(last) then return 1 end
redis.call('HSET', KEYS[1], 'last_active_at', ARGV[1])
local deadline = tonumber(redis.call('HGET', KEYS[1], 'expires_at'))
local idle = tonumber(redis.call('HGET', KEYS[1], 'idle'))
if redis.call('HGET', KEYS[1], 'remember_me') == '0' and idle > 0 and at + idle < deadline then
  deadline = at + idle
end
local ttl = math.ceil((deadline - tonumber(ARGV[2]) + tonumber(ARGV[3])) * 1000)
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

_UPDATE_DATA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[1])
return 1
"""

_DELETE = """
local username = redis.call('HGET', KEYS[1], 'username')
redis.call('PUBLISH', ARGV[3], 'session:' .. ARGV[1])
if not username then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', ARGV[2] .. username, ARGV[1])
return 1
"""

_DELETE_USER = """
local deleted = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[2] .. id
  if redis.call('HGET', key, 'username') == ARGV[1] then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[2], id)
    deleted = deleted + 1
  end
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], 'user:' .. ARGV[1])
return deleted
"""

_PURGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[4])
local deleted = 0
for _, id in ipairs(ids) do
  local key = ARGV[2] .. id
  local username = redis.call('HGET', key, 'username')
  if username then
    redis.call('DEL', key)
    redis.call('SREM', ARGV[3] .. username, id)
    deleted = deleted + 1
  end
  redis.call('ZREM', KEYS[1], id)
end
return {deleted, #ids}
"""


class _TlsConnection(Connection):
    """A TCP connection wrapped in the portal's own client context (portal.tls.client_context)."""

    def __init__(
        self, *, tls_context: ssl.SSLContext, server_hostname: str | None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._tls_context = tls_context
        self._server_hostname = server_hostname

    def _connection_arguments(self) -> Mapping[str, Any]:
        arguments = dict(super()._connection_arguments())
        arguments["ssl"] = self._tls_context
        if self._server_hostname:
            arguments["server_hostname"] = self._server_hostname
        return arguments


def redis_client(
    config: RedisConfig, certificates_directory: Path | None
) -> tuple[aioredis.Redis, list[aioredis.Redis]]:
    """Build the client session.redis describes; it reads TLS files, so call it in a thread.

    Return the client and the sentinels' clients (to close with it; none without Sentinel).
    A pool of at most `maximum_active_connections` (callers wait up to `timeout` for one, as
    Authelia's pool does), `timeout` for connecting and for each reply, `max_retries` retries of
    a failed command. With high_availability, the master is asked of the sentinels (redis-py's
    Sentinel support) and found again after a failover; every command goes to the master, so
    route_by_latency and route_randomly (go-redis's routing of reads to replicas) change
    nothing: a replica could still hold a session just ended. TLS applies to the plain and unix
    socket set-ups; with Sentinel it is not supported yet (StartupCheckError). Raise
    StartupCheckError when the TLS settings cannot be used.
    """
    timeout = config.timeout.total_seconds()
    password = config.password.get_secret_value() if config.password is not None else None
    common: dict[str, Any] = {
        "username": config.username or None,
        "password": password,
        "db": config.database_index,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), config.max_retries),
        "decode_responses": True,
    }
    high_availability = config.high_availability
    if high_availability is not None:
        if config.tls is not None:
            raise StartupCheckError(
                "session.redis.tls: TLS with high_availability (Sentinel) is not supported yet"
            )
        nodes = [(node.host, node.port) for node in high_availability.nodes]
        if config.host:
            nodes.insert(0, (config.host, config.port or 26379))
        sentinel_password = high_availability.sentinel_password
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            nodes,
            sentinel_kwargs={
                "username": high_availability.sentinel_username or None,
                "password": (
                    sentinel_password.get_secret_value() if sentinel_password is not None else None
                ),
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "decode_responses": True,
            },
            **common,
        )
        client: aioredis.Redis = sentinel.master_for(
            high_availability.sentinel_name, max_connections=config.maximum_active_connections
        )
        return client, list(sentinel.sentinels)
    pool_kwargs: dict[str, Any] = {
        **common,
        "max_connections": config.maximum_active_connections,
        "timeout": timeout,
    }
    if config.unix_socket:
        pool_kwargs.update(connection_class=UnixDomainSocketConnection, path=config.host)
    else:
        pool_kwargs.update(host=config.host, port=config.port)
        if config.tls is not None:
            context = client_context(config.tls, certificates_directory, "session.redis.tls")
            pool_kwargs.update(
                connection_class=_TlsConnection,
                tls_context=context,
                server_hostname=config.tls.server_name or config.host,
            )
    return aioredis.Redis.from_pool(BlockingConnectionPool(**pool_kwargs)), []


def check_redis_settings(config: RedisConfig) -> list[str]:
    """Return why session.redis's TLS settings cannot be used, found without connecting.

    certificates_directory is the top-level Config's to check, not this section's.
    """
    if config.tls is None:
        return []
    try:
        client_context(config.tls, None, "session.redis.tls")
    except StartupCheckError as exc:
        return str(exc).splitlines()
    return []


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
        await self._script("save a session", _SAVE, keys, args)

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
        await self._script("touch a session", _TOUCH, [RECORD + session_id], args)

    async def session_update_data(self, session_id: str, data: dict[str, Any]) -> bool:
        """Replace the data of an existing session (never creating one); True if it existed."""
        text = json.dumps(data, separators=(",", ":"))
        done = await self._script("update a session", _UPDATE_DATA, [RECORD + session_id], [text])
        return bool(done)

    async def session_delete(self, session_id: str) -> bool:
        """Delete the session and say so on the channel; True if it existed."""
        keys = [RECORD + session_id, EXPIRY]
        args = [session_id, USER_INDEX, CHANNEL]
        return bool(await self._script("delete a session", _DELETE, keys, args))

    async def session_delete_user(self, username: str) -> int:
        """Delete every session of the user (the per-user index) and say so; return how many."""
        keys = [USER_INDEX + username, EXPIRY]
        args = [username, RECORD, CHANNEL]
        deleted = await self._script("delete a user's sessions", _DELETE_USER, keys, args)
        return int(deleted)

    async def purge_sessions(self, *, expired_before: float) -> int:
        """Delete sessions with expires_at before `expired_before`; return how many existed."""
        total = 0
        while True:
            args = [repr(expired_before), RECORD, USER_INDEX, PURGE_BATCH]
            deleted, seen = await self._script("purge sessions", _PURGE, [EXPIRY], args)
            total += int(deleted)
            if int(seen) < PURGE_BATCH:
                return total

    # -- invalidation across replicas ------------------------------------------------------------

    async def listen(self, invalidate: Invalidate) -> None:
        """Pass every ended session or user announced on the channel to `invalidate`, forever.

        Sessions ended on any replica (session_delete, session_delete_user) arrive here within
        milliseconds. When the subscription is lost, it is made again every RESUBSCRIBE_DELAY
        seconds and then `invalidate("all", "")` is called, since messages may have been missed
        meanwhile. Returns only when cancelled.
        """
        lost = False
        while True:
            try:
                pubsub = self._started().pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(CHANNEL)
                    if lost:
                        invalidate("all", "")
                        lost = False
                    async for message in pubsub.listen():
                        kind, _, key = str(message.get("data", "")).partition(":")
                        if kind in ("session", "user"):
                            invalidate(kind, key)
                finally:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # as above
            except (RedisError, StorageError, OSError) as exc:
                if not lost:
                    log.warning("lost the session-ended subscription: %s", type(exc).__name__)
                    invalidate("all", "")
                lost = True
                await asyncio.sleep(RESUBSCRIBE_DELAY)

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
