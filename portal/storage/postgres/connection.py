"""Reaching PostgreSQL: asyncpg's connection options from storage.postgres, and error wording.

Addresses (Authelia's storage.postgres.address and servers[].address): `tcp://host:port` or
`unix:///path`, where the path is the socket's directory or the socket file itself
(`/run/postgresql/.s.PGSQL.5432`). The first address is tried first and `servers` after it, in
order, as Authelia's failover list (asyncpg tries each host in turn when one cannot be reached).
"""

from __future__ import annotations

import ssl
from pathlib import PurePosixPath
from typing import Any

import asyncpg

from portal.config.storage import PostgresStorageConfig
from portal.config.types import Address
from portal.errors import StartupCheckError
from portal.tls import client_context

# What "the engine cannot be reached" looks like: refused, reset, timed out, shut down, a
# connection that died under us. Everything else is an error of the statement or the setup.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # Every reachable server is a standby or read-only (target_session_attrs below): for the
    # portal, which writes on most requests, that is no database at all.
    asyncpg.TargetServerAttributeNotMatched,
)

_SOCKET_PREFIX = ".s.PGSQL."
DEFAULT_PORT = 5432


def host_and_port(address: Address) -> tuple[str, int]:
    """Return asyncpg's (host, port) for one address; a unix host is the socket's directory."""
    if address.scheme != "unix":
        return address.host, address.port
    path = PurePosixPath(address.path)
    suffix = path.name.removeprefix(_SOCKET_PREFIX)
    if path.name.startswith(_SOCKET_PREFIX) and suffix.isdigit():
        return str(path.parent), int(suffix)
    return str(path), DEFAULT_PORT


def quote_identifier(name: str) -> str:
    """Quote a name for SQL as PostgreSQL's quote_ident does: "name", inner quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def connect_options(
    config: PostgresStorageConfig, context: ssl.SSLContext | None
) -> dict[str, Any]:
    """Return keyword arguments for asyncpg.create_pool from storage.postgres.

    `timeout` bounds connecting and every statement (seconds); the search_path is `schema` alone,
    so the portal's unqualified table names live there; TLS is used when `tls` is set (context
    from portal.tls.client_context), never otherwise. Only a server that accepts writes is used
    (libpq's target_session_attrs=read-write): with `servers`, a standby or a read-only server in
    the list is passed over, as Authelia's failover list means.
    """
    addresses = connect_addresses(config)
    hosts, ports = zip(*(host_and_port(address) for address in addresses), strict=True)
    seconds = config.timeout.total_seconds()
    password = None if config.password is None else config.password.get_secret_value()
    return {
        "host": list(hosts),
        "port": list(ports),
        "user": config.username,
        "password": password,
        "database": config.database,
        "ssl": context if context is not None else False,
        "timeout": seconds,
        "command_timeout": seconds,
        "target_session_attrs": "read-write",
        "server_settings": {
            "search_path": quote_identifier(config.schema_),
            "application_name": "portal",
        },
    }


def connect_addresses(config: PostgresStorageConfig) -> list[Address]:
    """Return the addresses to try, in order: `address`, then each of `servers`."""
    return [config.address, *(server.address for server in config.servers)]


def describe_address(config: PostgresStorageConfig) -> str:
    """Return the configured addresses for a message: 'tcp://db:5432' (then ', ' the servers)."""
    return ", ".join(str(address) for address in connect_addresses(config))


def describe(exc: BaseException, config: PostgresStorageConfig) -> str:
    """Return an error's own words for a start-up message, the password struck out if present."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
        text = "no server accepts writes (each one reached is a standby or read-only)"
    if isinstance(exc, TimeoutError):
        text = f"no answer within {config.timeout.total_seconds():g}s"
    if config.password is not None:
        # SECURITY: drivers do not echo the password, but a message must never carry it.
        secret = config.password.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
    return text.splitlines()[0]


def server_name_problem(config: PostgresStorageConfig) -> str | None:
    """Say why tls.server_name cannot be honoured, or None.

    asyncpg checks the server's certificate against the host it connects to, so a server_name
    other than the host of every address would be silently not checked: refused instead.
    """
    tls = config.tls
    if tls is None or not tls.server_name or tls.skip_verify:
        return None
    hosts = {host_and_port(address)[0] for address in connect_addresses(config)}
    if hosts == {tls.server_name}:
        return None
    return (
        "storage.postgres.tls.server_name: must be the host name of every address "
        f"({', '.join(sorted(hosts))}): the driver checks the certificate against it"
    )


def check_postgres_settings(config: PostgresStorageConfig) -> list[str]:
    """Return what would keep every connection from starting, found without connecting.

    For validate-config: the `tls` block (as portal.tls.client_context refuses it) and
    server_name. certificates_directory is the top-level Config's to check, not this section's.
    """
    problem = server_name_problem(config)
    problems = [problem] if problem else []
    if config.tls is not None:
        try:
            client_context(config.tls, None, "storage.postgres.tls")
        except StartupCheckError as exc:
            problems += str(exc).splitlines()
    return problems
