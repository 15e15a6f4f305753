"""IdentityTokenKeyStore's contract: generated signing keys kept encrypted, one key per
generation whatever the race between instances, old generations purged, a key change
re-encrypting them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portal.errors import DecryptionError
from portal.storage.base import IdentityTokenSigningKey
from tests.contract.conftest import Backend
from tests.contract.records import NOW

ROLE = "identity_token_keys"
PRIVATE = bytes(range(64))  # stands for a PKCS#8 DER key: the store does not parse it
NEW_KEY = "n" * 40


def signing_key(generation: int, key_id: str | None = None) -> IdentityTokenSigningKey:
    return IdentityTokenSigningKey(
        generation=generation,
        key_id=key_id or f"kid-{generation}",
        algorithm="ES256",
        private_key=PRIVATE + bytes([generation]),
        created_at=NOW + generation,
    )


async def raw_private_keys(storage: Any) -> list[bytes]:
    """Read the private_key column as stored, past the role (what a database dump shows)."""
    sql = "SELECT private_key FROM identity_token_keys ORDER BY generation"
    if hasattr(storage, "_pool"):
        rows = await storage._fetch("test", sql)
    else:
        rows = await storage._fetch("test", sql, ())
    return [bytes(row["private_key"]) for row in rows]


async def test_keys_come_back_decrypted_oldest_generation_first(storage: Any) -> None:
    assert await storage.identity_token_keys() == []
    assert await storage.add_identity_token_key(signing_key(2))
    assert await storage.add_identity_token_key(signing_key(1))
    assert await storage.identity_token_keys() == [signing_key(1), signing_key(2)]


async def test_a_private_key_is_never_stored_in_clear(storage: Any) -> None:
    await storage.add_identity_token_key(signing_key(1))
    (raw,) = await raw_private_keys(storage)
    assert PRIVATE not in raw and PRIVATE[:16] not in raw
    assert len(raw) >= len(PRIVATE) + 1 + 12 + 16  # nonce and GCM tag around the ciphertext


async def test_a_key_moved_to_another_key_id_does_not_open(storage: Any) -> None:
    await storage.add_identity_token_key(signing_key(1))
    await storage.add_identity_token_key(signing_key(2))
    (first, _) = await raw_private_keys(storage)
    sql = "UPDATE identity_token_keys SET private_key = {} WHERE generation = 2"
    if hasattr(storage, "_pool"):
        await storage._execute_count("test", sql.format("$1"), first)
    else:
        await storage._write_count("test", sql.format("?"), (first,))
    with pytest.raises(DecryptionError):
        await storage.identity_token_keys()


async def test_a_generation_or_key_id_taken_is_refused_and_nothing_changes(storage: Any) -> None:
    assert await storage.add_identity_token_key(signing_key(1))
    assert not await storage.add_identity_token_key(signing_key(1, "another-kid"))
    assert not await storage.add_identity_token_key(signing_key(2, "kid-1"))
    assert await storage.identity_token_keys() == [signing_key(1)]


async def test_instances_racing_for_one_generation_leave_exactly_one_key(
    storage: Any, other_instance: Any
) -> None:
    contenders = [signing_key(1, f"kid-{n}") for n in range(8)]
    stores = [storage, other_instance] * 4
    results = await asyncio.gather(
        *(store.add_identity_token_key(key) for store, key in zip(stores, contenders, strict=True))
    )
    assert results.count(True) == 1
    (kept,) = await other_instance.identity_token_keys()
    assert kept == contenders[results.index(True)]
    assert await storage.identity_token_keys() == [kept]


async def test_purge_deletes_the_generations_below(storage: Any) -> None:
    for generation in (1, 2, 3):
        await storage.add_identity_token_key(signing_key(generation))
    assert await storage.purge_identity_token_keys(before_generation=3) == 2
    assert await storage.identity_token_keys() == [signing_key(3)]
    assert await storage.purge_identity_token_keys(before_generation=3) == 0


async def test_changing_the_encryption_key_re_encrypts_the_signing_keys(
    backend: Backend, storage: Any
) -> None:
    await storage.add_identity_token_key(signing_key(1))
    before = await raw_private_keys(storage)

    assert await storage.change_encryption_key(NEW_KEY) == 1

    assert await raw_private_keys(storage) != before
    assert backend.with_key is not None
    new = backend.with_key(NEW_KEY)
    await new.startup_check()
    assert await new.identity_token_keys() == [signing_key(1)]
    await new.close()
