"""Building the Redis client session.redis describes: pool, timeouts, Sentinel, TLS."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, Connection, UnixDomainSocketConnection
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from portal.config import RedisConfig
from portal.errors import StartupCheckError
from portal.tls import client_context


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
    could still hold a session just ended. TLS applies to the plain and unix socket set-ups;
    with Sentinel it is not supported yet (StartupCheckError). Raise StartupCheckError when
    the TLS settings cannot be used.
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
            high_availability.sentinel_name,
            max_connections=config.maximum_active_connections + SUBSCRIPTION_CONNECTIONS,
        )
        return client, list(sentinel.sentinels)
    pool_kwargs: dict[str, Any] = {
        **common,
        "max_connections": config.maximum_active_connections + SUBSCRIPTION_CONNECTIONS,
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
