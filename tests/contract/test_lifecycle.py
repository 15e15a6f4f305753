"""StoreLifecycle's contract: nothing works before startup_check or after close."""

from __future__ import annotations

import pytest

from portal.errors import StorageError
from tests.contract.conftest import Backend

ROLE = "storage"


async def test_calls_before_the_startup_check_or_after_close_raise_storage_error(
    backend: Backend,
) -> None:
    unstarted = backend.new()
    with pytest.raises(StorageError, match="not open"):
        await unstarted.outbox_pending()
    await unstarted.close()

    closed = await backend.open()
    await closed.close()
    await closed.close()  # closing twice is harmless
    with pytest.raises(StorageError, match="closed"):
        await closed.outbox_pending()
