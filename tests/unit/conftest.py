"""Fixtures the unit tests share: a fake clock and a started SQLite storage on a temp file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portal.storage.sqlite import SqliteStorage
from tests.conftest import ENCRYPTION_KEY, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A clock that stands still until the test moves it."""
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The database file the storage fixture opens."""
    return tmp_path / "db"


@pytest.fixture
async def storage(db: Path) -> AsyncIterator[SqliteStorage]:
    """A started SQLite storage on db, closed after the test."""
    store = SqliteStorage(db, encryption_key=ENCRYPTION_KEY)
    await store.startup_check()
    yield store
    await store.close()
