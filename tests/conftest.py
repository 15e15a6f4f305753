"""Shared fixtures: configuration builders and the test users.

Everything a test reads lives in the repository: tests/fixtures/ holds an Authelia-shaped
configuration for each backend, the users file and the LDAP directory. The checks against
Authelia's own files are in tests/compat/, which only `make compat` runs (it needs a copy of
those files); the default run never collects it.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from portal.config import Config, read_config
from tests.integration.postgres import PostgresServer, start_server

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
JWT_SECRET = "j" * 40
# session.secret: encrypts the session records in Redis (required with session.redis).
SESSION_SECRET = "s" * 40
ENCRYPTION_KEY = "e" * 32

ConfigFactory = Callable[..., Config]
START = 1_700_000_000.0

# Run by path only (`make compat`: pytest tests/compat), never by the default run.
collect_ignore = ["compat"]


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: float = START) -> None:
        self.time = start

    def now(self) -> float:
        """Return the current fake time."""
        return self.time

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.time += seconds


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge extra into a copy of base, recursing into mappings."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def minimal_raw(tmp_path: Path) -> dict[str, Any]:
    """Return the smallest valid configuration, as the YAML would hold it."""
    return {
        "identity_validation": {"reset_password": {"jwt_secret": JWT_SECRET}},
        "authentication_backend": {"file": {"path": str(tmp_path / "users.yml")}},
        "notifier": {"filesystem": {"filename": str(tmp_path / "notification.txt")}},
        "session": {
            "secret": SESSION_SECRET,
            "cookies": [{"domain": "example.com", "authelia_url": "https://auth.example.com"}],
        },
        "storage": {"encryption_key": ENCRYPTION_KEY, "local": {"path": str(tmp_path / "db")}},
    }


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    """Copy tests/fixtures/users.yml (password `password`) where the portal may write."""
    target = tmp_path / "users.yml"
    shutil.copy(FIXTURES / "users.yml", target)
    return target


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """Build a validated Config from the minimal one plus overrides (nested dicts merge)."""

    def build(**overrides: Any) -> Config:
        raw = deep_merge(minimal_raw(tmp_path), overrides)
        path = tmp_path / "configuration.yml"
        with path.open("w") as handle:
            YAML(typ="safe", pure=True).dump(raw, handle)
        config, _ = read_config([path], {})
        return config

    return build


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the session (tests/integration/postgres.py)."""
    server = start_server()
    yield server
    server.remove()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's cluster, owned by the `portal` role."""
    name = postgres_server.create_database()
    yield name
    if postgres_server.running:
        postgres_server.drop_database(name)
