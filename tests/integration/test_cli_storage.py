"""`portal storage schema-info` and `portal storage migrate up` (Authelia's names), run as an
admin runs them: a real process, on a SQLite file or a real PostgreSQL database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from portal.storage.postgres import packaged_migrations as postgres_migrations
from portal.storage.sqlite import packaged_migrations as sqlite_migrations
from tests.conftest import minimal_raw
from tests.integration.postgres import ROLE, PostgresServer
from tests.integration.process import free_port
from tests.integration.test_cli import portal

TABLES = (
    "encryption, identity_token_keys, identity_verifications, one_time_codes, outbox,"
    " rate_limit_events, security_answers, sessions, totp_configurations, totp_history,"
    " user_languages, webauthn_credentials"
)


def config_file(tmp_path: Path, users_file: Path, storage: dict[str, Any] | None = None) -> Path:
    raw = minimal_raw(tmp_path)
    if storage is not None:
        raw["storage"] = {"encryption_key": raw["storage"]["encryption_key"], **storage}
    path = tmp_path / "configuration.yml"
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    return path


def postgres_storage(server: PostgresServer, database: str, **extra: Any) -> dict[str, Any]:
    return {
        "postgres": {
            "address": server.address(),
            "database": database,
            "username": ROLE,
            **extra,
        }
    }


def test_sqlite_schema_info_then_migrate_up_then_schema_info(
    tmp_path: Path, users_file: Path
) -> None:
    config = str(config_file(tmp_path, users_file))
    latest = len(sqlite_migrations())

    before = portal("storage", "schema-info", "--config", config)
    assert before.returncode == 0, before.stderr
    assert before.stdout.splitlines() == [
        "Schema Version: N/A",
        f"Schema Upgrade Available: yes - version {latest}",
        "Schema Tables: N/A",
    ]
    assert not (tmp_path / "db").exists()  # schema-info only reads

    up = portal("storage", "migrate", "up", "--config", config)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"Storage schema migration from 0 to {latest} is complete"

    after = portal("storage", "schema-info", "--config", config)
    assert after.stdout.splitlines() == [
        f"Schema Version: {latest}",
        "Schema Upgrade Available: no",
        f"Schema Tables: {TABLES}",
    ]
    again = portal("storage", "migrate", "up", "--config", config)
    assert again.stdout.strip() == f"Storage schema is already up to date (version {latest})"


def test_postgres_schema_info_then_migrate_up_with_the_password_from_a_file(
    tmp_path: Path, users_file: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = str(
        config_file(tmp_path, users_file, postgres_storage(postgres_server, postgres_database))
    )
    secret = tmp_path / "postgres_password"
    secret.write_text(postgres_server.password + "\n")
    env = {"PORTAL_STORAGE_POSTGRES_PASSWORD_FILE": str(secret)}
    latest = len(postgres_migrations())

    before = portal("storage", "schema-info", "--config", config, env=env)
    assert before.returncode == 0, before.stderr
    assert before.stdout.splitlines()[:2] == [
        "Schema Version: N/A",
        f"Schema Upgrade Available: yes - version {latest}",
    ]

    up = portal("storage", "migrate", "up", "--config", config, env=env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"Storage schema migration from 0 to {latest} is complete"

    after = portal("storage", "schema-info", "--config", config, env=env)
    assert after.stdout.splitlines() == [
        f"Schema Version: {latest}",
        "Schema Upgrade Available: no",
        "Schema Tables: encryption, identity_token_keys, identity_verifications, one_time_codes,"
        " outbox, portal_schema_migrations, rate_limit_events, security_answers, sessions,"
        " totp_configurations, totp_history, user_languages, webauthn_credentials",
    ]


def test_postgres_failures_are_one_line_naming_the_step(
    tmp_path: Path, users_file: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    wrong = postgres_storage(postgres_server, postgres_database, password="wrong-password-77")
    config = str(config_file(tmp_path, users_file, wrong))
    refused = portal("storage", "migrate", "up", "--config", config)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("error: storage: postgres: authenticate: ")
    assert "wrong-password-77" not in refused.stderr
    assert len(refused.stderr.splitlines()) == 1

    nowhere = postgres_storage(
        postgres_server, postgres_database, address=f"tcp://127.0.0.1:{free_port()}"
    )
    config = str(config_file(tmp_path, users_file, nowhere))
    unreachable = portal("storage", "schema-info", "--config", config)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("error: storage: postgres: connect: cannot connect to ")
    assert len(unreachable.stderr.splitlines()) == 1
