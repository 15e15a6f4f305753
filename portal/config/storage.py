"""`storage`: where the portal keeps its state (Authelia: schema/storage.go)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from portal.config.tls import TlsConfig
from portal.config.types import Duration, ExactlyOneOf, Model, PostgresAddress

# storage.encryption_key: the fewest characters accepted (Authelia's minimum too).
ENCRYPTION_KEY_MINIMUM = 20


class LocalStorageConfig(Model):
    """SQLite."""

    path: Path


class PostgresServerConfig(Model):
    """One fallback server (Authelia: storage.postgres.servers[]): its address, and its tls."""

    address: PostgresAddress
    tls: TlsConfig | None = None


class PostgresStorageConfig(Model):
    """PostgreSQL (Authelia: schema/storage.go StoragePostgreSQL, same keys and defaults).

    `servers` are tried in order after `address` when it cannot be reached. One TLS setting
    serves every server (the driver takes one), so a server's own `tls`, when given, must be the
    same as `tls`.
    """

    address: PostgresAddress
    servers: list[PostgresServerConfig] = []
    database: str = "authelia"
    schema_: str = Field("public", alias="schema")
    username: str = "authelia"
    password: SecretStr | None = None
    timeout: Duration = timedelta(seconds=5)
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _one_tls(self) -> PostgresStorageConfig:
        for index, server in enumerate(self.servers):
            if server.tls is not None and server.tls != self.tls:
                raise ValueError(
                    f"servers[{index}].tls must be the same as tls (or left out): "
                    "one TLS setting serves every server"
                )
        return self

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be a positive duration such as '5s'")
        return value


class StorageConfig(ExactlyOneOf):
    """Where the portal keeps its state: exactly one of local or postgres."""

    one_of = ("local", "postgres")

    encryption_key: SecretStr
    local: LocalStorageConfig | None = None
    postgres: PostgresStorageConfig | None = None

    @field_validator("encryption_key")
    @classmethod
    def _key_length(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < ENCRYPTION_KEY_MINIMUM:
            raise ValueError(
                f"must be at least {ENCRYPTION_KEY_MINIMUM} characters "
                "(generate one: portal crypto rand)"
            )
        return value
