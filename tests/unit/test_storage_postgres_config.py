"""storage.postgres as an admin writes it (Authelia's keys) and the driver options made from it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from portal.config.storage import PostgresStorageConfig
from portal.storage.postgres.connection import connect_options, describe, host_and_port

AUTHELIA_BLOCK: dict[str, Any] = {
    "address": "tcp://postgres:5432",
    "servers": [{"address": "tcp://postgres-replica:5433"}],
    "database": "authelia",
    "schema": "public",
    "username": "authelia",
    "password": "a-secret-pw-1",
    "timeout": "5s",
    "tls": {"server_name": "postgres.example.com", "skip_verify": False},
}


def test_an_authelia_block_is_taken_unchanged_with_its_failover_list() -> None:
    config = PostgresStorageConfig.model_validate(AUTHELIA_BLOCK)
    options = connect_options(config, None)
    assert options["host"] == ["postgres", "postgres-replica"]
    assert options["port"] == [5432, 5433]
    assert (options["user"], options["database"]) == ("authelia", "authelia")
    assert options["timeout"] == options["command_timeout"] == 5.0
    assert options["server_settings"]["search_path"] == '"public"'


def test_the_defaults_are_authelias() -> None:
    config = PostgresStorageConfig.model_validate({"address": "db"})
    assert str(config.address) == "tcp://db:5432"
    assert (config.database, config.schema_, config.username) == ("authelia", "public", "authelia")
    assert config.timeout.total_seconds() == 5
    assert connect_options(config, None)["ssl"] is False


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("unix:///run/postgresql", ("/run/postgresql", 5432)),
        ("unix:///run/postgresql/.s.PGSQL.5433", ("/run/postgresql", 5433)),
        ("tcp://[::1]:6432", ("::1", 6432)),
        # Authelia's address syntax: a bare absolute path is a unix socket; tcp4 and tcp6 are tcp.
        ("/run/postgresql", ("/run/postgresql", 5432)),
        ("/run/postgresql/.s.PGSQL.5433", ("/run/postgresql", 5433)),
        ("tcp4://db.example.com", ("db.example.com", 5432)),
        ("tcp6://[::1]:6432", ("::1", 6432)),
    ],
)
def test_addresses_become_the_drivers_host_and_port(
    address: str, expected: tuple[str, int]
) -> None:
    config = PostgresStorageConfig.model_validate({"address": address})
    assert host_and_port(config.address) == expected


def test_a_schema_name_is_quoted_for_the_search_path() -> None:
    config = PostgresStorageConfig.model_validate({"address": "db", "schema": 'my "odd" one'})
    assert connect_options(config, None)["server_settings"]["search_path"] == '"my ""odd"" one"'


def test_a_servers_own_tls_must_be_the_same_as_tls() -> None:
    block = {**AUTHELIA_BLOCK, "servers": [{"address": "db2", "tls": {"skip_verify": True}}]}
    with pytest.raises(ValidationError, match=r"servers\[0\].tls must be the same as tls"):
        PostgresStorageConfig.model_validate(block)
    same = {**AUTHELIA_BLOCK, "servers": [{"address": "db2", "tls": AUTHELIA_BLOCK["tls"]}]}
    assert PostgresStorageConfig.model_validate(same).servers[0].tls is not None


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="must be a positive duration"):
        PostgresStorageConfig.model_validate({"address": "db", "timeout": "0s"})


def test_an_error_message_never_carries_the_password() -> None:
    config = PostgresStorageConfig.model_validate(AUTHELIA_BLOCK)
    said = describe(RuntimeError("server said: a-secret-pw-1 is wrong\nsecond line"), config)
    assert said == "server said: *** is wrong"
