"""Building the Redis client session.redis describes: pool, timeouts, Sentinel, TLS."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import (
    BlockingConnectionPool,
    Connection,
    ConnectionPool,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.retry import Retry

from portal.config import RedisConfig
from portal.errors import StartupCheckError
from portal.tls import client_context


class _TlsConnection(Connection):
    """A TCP connection wrapped in the portal's own client context (portal.tls.client_context).

    The certificate must name `server_name` when given (tls.server_name), else the host the
    connection goes to: for a Sentinel master, the host the sentinel names, known only once
    the sentinel has been asked, so it is read when connecting.
    """

    def __init__(
        self, *, tls_context: ssl.SSLContext, server_name: str | None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._tls_context = tls_context
        self._server_name = server_name

    def _connection_arguments(self) -> Mapping[str, Any]:
        arguments = dict(super()._connection_arguments())
        arguments["ssl"] = self._tls_context
        arguments["server_hostname"] = self._server_name or self.host
        return arguments


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The master's pool under Sentinel, waiting up to `timeout` for a free connection.

    redis-py's SentinelConnectionPool refuses a request at once when every connection is in use;
    the plain set-up's BlockingConnectionPool waits, as Authelia's pool does (go-redis
    PoolTimeout). Sentinel's master discovery comes first in the MRO, the waiting after it.
    """


class _SentinelTlsConnection(SentinelManagedConnection, _TlsConnection):
    """A connection to the master a sentinel names (redis-py's), over the portal's TLS context.

    As redis-py's SentinelManagedSSLConnection, but with our context instead of its ssl_* keys.
    """


# The session-ended subscription (listener.py) holds one pooled connection for as long as it
# runs: the pool gets that one on top of maximum_active_connections, which are for commands.
SUBSCRIPTION_CONNECTIONS = 1


def redis_client(
    config: RedisConfig, certificates_directory: Path | None
) -> tuple[aioredis.Redis, list[aioredis.Redis]]:
    """Build the client session.redis describes; it reads TLS files, so call it in a thread.

    Return the client and the sentinels' clients (to close with it; none without Sentinel).
    A pool of at most `maximum_active_connections` for commands (callers wait up to `timeout`
    for one, as Authelia's pool does) and one more for the session-ended subscription,
    `timeout` for connecting and for each reply, `max_retries` retries of a failed command.
    With high_availability, the master is asked of the sentinels (redis-py's Sentinel support)
    and found again after a failover; every command goes to the master, so route_by_latency
    and route_randomly (go-redis's routing of reads to replicas) change nothing: a replica
    could still hold a session just ended. `tls` applies to every TCP connection: the server,
    or the sentinels and the master alike (as Authelia's go-redis FailoverOptions.TLSConfig);
    a unix socket is used as it is. Raise StartupCheckError when the TLS settings cannot be used.
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
    tls: dict[str, Any] = {}
    if config.tls is not None:
        tls = {
            "tls_context": client_context(config.tls, certificates_directory, "session.redis.tls"),
            "server_name": config.tls.server_name or None,
        }
    high_availability = config.high_availability
    if high_availability is not None:
        nodes = [(node.host, node.port) for node in high_availability.nodes]
        if config.host:
            nodes.insert(0, (config.host, config.port or 26379))
        sentinel_password = high_availability.sentinel_password
        sentinel_kwargs: dict[str, Any] = {
            "username": high_availability.sentinel_username or None,
            "password": (
                sentinel_password.get_secret_value() if sentinel_password is not None else None
            ),
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "decode_responses": True,
        }
        # The sentinels' clients are built here rather than by Sentinel, which takes no
        # connection class for them; it asks them in the order given.
        sentinels = [
            aioredis.Redis.from_pool(
                ConnectionPool(
                    host=host,
                    port=port,
                    **sentinel_kwargs,
                    **({"connection_class": _TlsConnection, **tls} if tls else {}),
                )
            )
            for host, port in nodes
        ]
        sentinel = Sentinel([], **common)  # type: ignore[no-untyped-call]  # redis-py: unannotated
        sentinel.sentinels = sentinels
        client: aioredis.Redis = sentinel.master_for(
            high_availability.sentinel_name,
            max_connections=config.maximum_active_connections + SUBSCRIPTION_CONNECTIONS,
            connection_pool_class=_BlockingSentinelPool,
            timeout=timeout,
            **({"connection_class": _SentinelTlsConnection, **tls} if tls else {}),
        )
        return client, sentinels
    pool_kwargs: dict[str, Any] = {
        **common,
        "max_connections": config.maximum_active_connections + SUBSCRIPTION_CONNECTIONS,
        "timeout": timeout,
    }
    if config.unix_socket:
        pool_kwargs.update(connection_class=UnixDomainSocketConnection, path=config.host)
    else:
        pool_kwargs.update(host=config.host, port=config.port)
        if tls:
            pool_kwargs.update(connection_class=_TlsConnection, **tls)
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
