"""The PostgreSQL fixture itself: the cluster serves, the `portal` role signs in with its
password only, each test's database is its own, and the server stops and starts again."""

from __future__ import annotations

import pytest

from tests.integration.postgres import PostgresError, PostgresServer


def test_the_portal_role_owns_a_fresh_database(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    owner = postgres_server.psql(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()",
        database=postgres_database,
    )
    assert owner == "portal"
    tables = postgres_server.psql(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", database=postgres_database
    )
    assert tables == "0"


def test_authentication_is_by_password(postgres_server: PostgresServer) -> None:
    rules = postgres_server.psql("SELECT DISTINCT auth_method FROM pg_hba_file_rules")
    assert rules.split() == ["scram-sha-256"]
    wrong = PostgresServer(
        postgres_server.workdir, postgres_server.port, "wrong", postgres_server.password
    )
    with pytest.raises(PostgresError, match="password authentication failed"):
        wrong.psql("SELECT 1")


def test_the_server_stops_and_starts_again(postgres_server: PostgresServer) -> None:
    postgres_server.stop()
    assert not postgres_server.running
    with pytest.raises(PostgresError):
        postgres_server.psql("SELECT 1")
    postgres_server.start()
    assert postgres_server.psql("SELECT 1") == "1"
