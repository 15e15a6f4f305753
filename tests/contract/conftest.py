"""The storage contract: which backend plays which role, and the fixtures every role suite uses.

Each test module here checks one role of portal/storage/base.py and names it in `ROLE`; every
backend listed in BACKENDS as playing that role runs the module, as one parametrisation of the
`backend` fixture (test ids end in `[sqlite]`). A new backend is one entry in BACKENDS and one
`<id>_backend` fixture giving a `Backend` on a fresh, empty store of its own for the test: a
PostgreSQL storage plays every role, a Redis session store only "session_records".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portal.config import RedisConfig
from portal.config.storage import PostgresStorageConfig
from portal.storage.postgres import PostgresStorage
from portal.storage.redis import RedisSessionStore
from portal.storage.sqlite import SqliteStorage
from tests.conftest import ENCRYPTION_KEY, SESSION_SECRET, FakeClock
from tests.contract.records import NOW
from tests.integration.postgres import ROLE as POSTGRES_ROLE
from tests.integration.postgres import PostgresServer
from tests.integration.redis_server import RedisServer, running_redis

# "storage" is the union (storage.base.Storage): suites that need every role at once.
ROLES = frozenset(
    {
        "storage",
        "identity_verifications",
        "rate_limits",
        "outbox",
        "session_records",
        "security_answers",
        "one_time_codes",
        "totp",
        "webauthn",
        "identity_token_keys",
        "user_languages",
    }
)

# backend id -> the roles it plays; a backend's fixture is named `<id>_backend`.
BACKENDS: dict[str, frozenset[str]] = {"sqlite": ROLES}
BACKENDS["postgres"] = ROLES
BACKENDS["redis"] = frozenset({"session_records"})


@dataclass(frozen=True)
class Backend:
    """Make instances of one store implementation, all on the one store this test owns.

    `new()` returns an instance not yet started; two instances stand for two portal processes
    sharing the store (the contract's "every instance").
    """

    new: Callable[[], Any]
    # A storage engine: a new instance on the same store with another storage.encryption_key.
    with_key: Callable[[str], Any] | None = None

    async def open(self) -> Any:
        """Return a new instance, started the way the app's cleanup context starts it."""
        instance = self.new()
        await instance.startup_check()
        return instance


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each role suite once per backend playing its ROLE."""
    if "backend" not in metafunc.fixturenames:
        return
    role = getattr(metafunc.module, "ROLE", None)
    if role not in ROLES:
        raise pytest.UsageError(f"{metafunc.module.__name__}: ROLE must be one of {sorted(ROLES)}")
    ids = [name for name, roles in BACKENDS.items() if role in roles]
    metafunc.parametrize("backend", ids, indirect=True)


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Backend:
    """SQLite on a file whose directory does not exist yet, as a first start finds it."""
    path = tmp_path / "var" / "portal.sqlite3"
    return Backend(
        lambda: SqliteStorage(path, encryption_key=ENCRYPTION_KEY),
        with_key=lambda key: SqliteStorage(path, encryption_key=key),
    )


def postgres_config(server: PostgresServer, database: str, **extra: Any) -> PostgresStorageConfig:
    """storage.postgres for the test cluster's `portal` role on `database` (extra keys merged)."""
    raw = {
        "address": server.address(),
        "database": database,
        "username": POSTGRES_ROLE,
        "password": server.password,
        **extra,
    }
    return PostgresStorageConfig.model_validate(raw)


@pytest.fixture
def postgres_backend(postgres_server: PostgresServer, postgres_database: str) -> Backend:
    """PostgreSQL on a fresh, empty database of the session's cluster (public schema)."""
    config = postgres_config(postgres_server, postgres_database)
    return Backend(
        lambda: PostgresStorage(config, encryption_key=ENCRYPTION_KEY),
        with_key=lambda key: PostgresStorage(config, encryption_key=key),
    )


@pytest.fixture
def redis_backend(tmp_path: Path) -> Iterator[Backend]:
    """A Redis server of the test's own, the store logging in as its ACL user; the clock at NOW,
    when the contract's records are made, so that their TTLs run from there."""
    with running_redis(tmp_path / "redis") as server:
        yield Backend(lambda: _redis_store(server))


def _redis_store(server: RedisServer) -> RedisSessionStore:
    config = RedisConfig(
        host=server.host, port=server.port, username=server.username, password=server.user_password
    )
    return RedisSessionStore(config, secret=SESSION_SECRET, clock=FakeClock(NOW), inactivity={})


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """The backend this parametrisation runs on (see pytest_generate_tests)."""
    chosen: Backend = request.getfixturevalue(f"{request.param}_backend")
    return chosen


@pytest.fixture
async def storage(backend: Backend) -> AsyncIterator[Any]:
    """A started instance on the test's store, closed after the test."""
    started = await backend.open()
    yield started
    await started.close()


@pytest.fixture
async def other_instance(backend: Backend, storage: Any) -> AsyncIterator[Any]:
    """A second portal instance's store on the same data, started after `storage`."""
    started = await backend.open()
    yield started
    await started.close()
