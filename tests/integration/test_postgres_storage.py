"""PostgresStorage beyond the role contract (tests/contract runs that on PostgreSQL too): start-up
under several replicas, the start-up check naming the step that failed, the `schema` key, and an
engine that goes away and comes back without a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from portal.errors import StartupCheckError, StorageError, StorageUnavailableError
from portal.storage.postgres import PostgresStorage, packaged_migrations
from tests.contract.conftest import postgres_config
from tests.contract.records import NOW, reset_link
from tests.integration.postgres import PostgresServer, start_server
from tests.integration.process import free_port


async def test_replicas_starting_at_once_all_start_and_migrate_once(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = postgres_config(postgres_server, postgres_database)
    replicas = [PostgresStorage(config) for _ in range(4)]

    await asyncio.gather(*(replica.startup_check() for replica in replicas))

    latest = len(packaged_migrations())
    assert [await replica.schema_version() for replica in replicas] == [latest] * 4
    applied = postgres_server.psql(
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM portal_schema_migrations",
        database=postgres_database,
    )
    assert applied == ",".join(str(v) for v in range(1, latest + 1))  # each version once
    # What one replica writes, the others read.
    await replicas[0].save_identity_verification(reset_link())
    assert await replicas[3].consume_identity_verification("jti-1", at=NOW, ip="192.0.2.9")
    assert not await replicas[1].consume_identity_verification("jti-1", at=NOW, ip="192.0.2.9")
    for replica in replicas:
        await replica.close()


async def test_a_wrong_password_fails_the_check_at_authenticate(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = postgres_config(postgres_server, postgres_database, password="not-the-password-42")
    with pytest.raises(StartupCheckError) as caught:
        await PostgresStorage(config).startup_check()
    message = str(caught.value)
    assert message.startswith("storage: postgres: authenticate: ")
    assert "password authentication failed" in message
    assert "not-the-password-42" not in message
    assert len(message.splitlines()) == 1


async def test_an_unreachable_server_fails_the_check_at_connect(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = postgres_config(
        postgres_server,
        postgres_database,
        address=f"tcp://127.0.0.1:{free_port()}",
        timeout="2s",
    )
    with pytest.raises(StartupCheckError) as caught:
        await PostgresStorage(config).startup_check()
    message = str(caught.value)
    assert message.startswith("storage: postgres: connect: cannot connect to tcp://127.0.0.1:")
    assert postgres_server.password not in message
    assert len(message.splitlines()) == 1


async def test_a_missing_database_fails_the_check_at_connect(
    postgres_server: PostgresServer,
) -> None:
    config = postgres_config(postgres_server, "no_such_database")
    with pytest.raises(StartupCheckError, match=r"^storage: postgres: connect: .*does not exist"):
        await PostgresStorage(config).startup_check()


async def test_a_broken_migration_fails_the_check_at_migrate_and_changes_nothing(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = postgres_config(postgres_server, postgres_database)
    first = packaged_migrations()[0]
    storage = PostgresStorage(config, migrations=[first, (2, "CREATE TABLE broken (")])
    with pytest.raises(StartupCheckError) as caught:
        await storage.startup_check()
    assert str(caught.value).startswith(
        "storage: postgres: migrate: migration 2 failed and was rolled back, "
        "schema 'public' stays at version 1: "
    )
    tables = postgres_server.psql(
        "SELECT count(*) FROM pg_tables WHERE tablename = 'broken'", database=postgres_database
    )
    assert tables == "0"


async def test_a_role_that_cannot_write_fails_the_check_at_write(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = postgres_config(postgres_server, postgres_database)
    storage = PostgresStorage(config)
    await storage.startup_check()
    await storage.close()
    # The role may read the schema's version but no longer write: the check fails at `write`
    # (a read-only server is passed over at `connect` instead: see the failover test).
    postgres_server.psql(
        "ALTER TABLE portal_schema_migrations OWNER TO postgres;"
        " GRANT SELECT ON portal_schema_migrations TO portal",
        database=postgres_database,
    )
    with pytest.raises(StartupCheckError, match=r"^storage: postgres: write: .*permission denied"):
        await PostgresStorage(config).startup_check()


async def test_a_newer_schema_is_refused(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = postgres_config(postgres_server, postgres_database)
    storage = PostgresStorage(config)
    await storage.startup_check()
    await storage.close()
    postgres_server.psql(
        "INSERT INTO portal_schema_migrations VALUES (99, 0)", database=postgres_database
    )
    with pytest.raises(StartupCheckError, match="at version 99, newer than this portal knows"):
        await PostgresStorage(config).startup_check()


async def test_the_schema_key_keeps_the_tables_in_that_schema(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = postgres_config(postgres_server, postgres_database, schema="Portal State")
    storage = PostgresStorage(config)
    await storage.startup_check()
    await storage.save_identity_verification(reset_link())
    await storage.close()
    where = postgres_server.psql(
        "SELECT schemaname FROM pg_tables WHERE tablename = 'identity_verifications'",
        database=postgres_database,
    )
    assert where == "Portal State"


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A cluster of its own, for a test that stops it."""
    server = start_server()
    yield server
    server.remove()


async def test_an_engine_that_goes_away_answers_unavailable_and_is_used_again_when_back(
    own_server: PostgresServer,
) -> None:
    database = own_server.create_database()
    storage = PostgresStorage(postgres_config(own_server, database, timeout="2s"))
    await storage.startup_check()
    await storage.outbox_enqueue("mail", {"to": "john"}, at=NOW)

    own_server.stop()
    for _ in range(3):  # every call, not only the first, while it is down
        with pytest.raises(StorageUnavailableError, match="cannot be reached") as caught:
            await storage.outbox_pending()
        assert caught.value.status == 503
        assert caught.value.public_message.startswith("This service is temporarily unavailable")
        assert isinstance(caught.value, StorageError)

    own_server.start()
    assert await storage.outbox_pending() == 1  # the same instance, no restart
    await storage.close()


async def test_a_server_name_other_than_the_host_is_refused_at_start_up(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = postgres_config(
        postgres_server, postgres_database, tls={"server_name": "db.example.com"}
    )
    with pytest.raises(StartupCheckError, match=r"^storage.postgres.tls.server_name: must be"):
        await PostgresStorage(config).startup_check()


async def test_a_restart_between_two_calls_goes_unnoticed(own_server: PostgresServer) -> None:
    database = own_server.create_database()
    storage = PostgresStorage(postgres_config(own_server, database, timeout="2s"))
    await storage.startup_check()
    await storage.outbox_enqueue("mail", {"to": "john"}, at=NOW)  # a pooled connection now idles

    own_server.stop()
    await asyncio.sleep(0.2)  # the portal's event loop runs on meanwhile (and sees the EOF)
    own_server.start()

    assert await storage.outbox_pending() == 1  # no 503 for a restart nobody saw
    await storage.close()


async def test_tls_with_a_private_ca_from_the_certificates_directory(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = postgres_config(postgres_server, postgres_database, tls={})
    storage = PostgresStorage(config, certificates_directory=postgres_server.ca_directory)
    await storage.startup_check()
    encrypted = postgres_server.psql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)"
        " WHERE ssl AND usename = 'portal' AND datname = current_database()",
        database=postgres_database,
    )
    assert int(encrypted) >= 1  # the pool's idle connection
    await storage.close()

    untrusted = PostgresStorage(config)  # the system's CAs do not know the test CA
    with pytest.raises(StartupCheckError, match=r"^storage: postgres: connect: .*certificate"):
        await untrusted.startup_check()


async def test_a_database_that_turns_read_only_answers_unavailable_not_a_500(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    # A standby promoted the other way, or a failover in progress: writes are refused with
    # SQLSTATE 25006. For the user that is the same 503 as a database that cannot be reached.
    storage = PostgresStorage(postgres_config(postgres_server, postgres_database))
    await storage.startup_check()
    postgres_server.psql(
        "ALTER DATABASE " + postgres_database + " SET default_transaction_read_only = on"
    )
    postgres_server.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'portal'"
    )
    with pytest.raises(StorageUnavailableError) as caught:
        for _ in range(3):  # the first call may meet a terminated pooled connection
            try:
                await storage.save_identity_verification(reset_link("read-only"))
            except StorageUnavailableError as exc:
                if "cannot be reached" not in str(exc):
                    raise
    assert caught.value.status == 503
    # A new connection passes the server over (target_session_attrs=read-write); one opened
    # before it turned read-only meets SQLSTATE 25006. Either way: unavailable, never a 500.
    message = str(caught.value)
    assert "no server accepts writes" in message or "25006" in message
    await storage.close()


async def test_the_failover_list_passes_over_a_read_only_server(
    postgres_server: PostgresServer, own_server: PostgresServer
) -> None:
    # storage.postgres.servers (Authelia's failover list): the first server answers but is a
    # standby or read-only; the portal uses the next one, which accepts writes.
    database = postgres_server.create_database()
    own_server.create_database(database)
    own_server.psql(f"ALTER ROLE portal PASSWORD '{postgres_server.password}'")
    own_server.psql(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    config = postgres_config(
        own_server,
        database,
        password=postgres_server.password,  # one role password for every server, as Authelia
        servers=[{"address": postgres_server.address()}],
        timeout="2s",
    )
    storage = PostgresStorage(config)
    await storage.startup_check()
    await storage.save_identity_verification(reset_link("written-on-the-second"))
    await storage.close()
    written = "SELECT count(*) FROM identity_verifications WHERE jti = 'written-on-the-second'"
    assert postgres_server.psql(written, database=database) == "1"

    # With only the read-only server listed, the start-up check says so at the connect step.
    alone = PostgresStorage(postgres_config(own_server, database, timeout="2s"))
    own_server.psql(f"ALTER ROLE portal PASSWORD '{own_server.password}'")
    with pytest.raises(StartupCheckError) as caught:
        await alone.startup_check()
    assert str(caught.value).startswith("storage: postgres: connect: cannot connect to ")
    assert "no server accepts writes" in str(caught.value)
