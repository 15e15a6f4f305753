"""`storage`: where the portal keeps its state (Authelia: schema/storage.go)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from portal.config.tls import TlsConfig
from portal.config.types import Duration, ExactlyOneOf, Model, PostgresAddress


class LocalStorageConfig(Model):
    """SQLite."""

    path: Path


class PostgresStorageConfig(Model):
    """PostgreSQL (schema only: not implemented yet)."""

    address: PostgresAddress
    database: str = "authelia"
    schema_: str = Field("public", alias="schema")
    username: str = "authelia"
    password: SecretStr | None = None
    timeout: Duration = timedelta(seconds=5)
    tls: TlsConfig | None = None


class StorageConfig(ExactlyOneOf):
    """Where the portal keeps its state: exactly one of local or postgres."""

    one_of = ("local", "postgres")

    encryption_key: SecretStr
    local: LocalStorageConfig | None = None
    postgres: PostgresStorageConfig | None = None

    @field_validator("encryption_key")
    @classmethod
    def _key_length(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 20:
            raise ValueError("must be at least 20 characters (generate one: portal crypto rand)")
        return value
