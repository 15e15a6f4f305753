"""OneTimeCodeStore's contract: mailed codes saved once, consumed once by their hash, revoked."""

from __future__ import annotations

import asyncio

import pytest

from portal.errors import StorageError
from portal.storage.base import OneTimeCodeStore
from tests.contract.records import ELEVATION, NOW, one_time_code

ROLE = "one_time_codes"
HASH = "hash-of-ABCD2345"


async def test_a_saved_code_reads_back_unchanged(storage: OneTimeCodeStore) -> None:
    await storage.save_one_time_code(one_time_code())

    assert await storage.get_one_time_code("otc-1") == one_time_code()
    assert await storage.get_one_time_code("unknown") is None


async def test_saving_a_known_public_id_again_fails_without_reviving_it_or_echoing_it(
    storage: OneTimeCodeStore,
) -> None:
    await storage.save_one_time_code(one_time_code("secret-id"))
    assert await storage.consume_one_time_code("john", ELEVATION, HASH, at=NOW + 1, ip="192.0.2.9")

    with pytest.raises(StorageError) as raised:
        await storage.save_one_time_code(one_time_code("secret-id"))

    assert "secret-id" not in str(raised.value)
    record = await storage.get_one_time_code("secret-id")
    assert record is not None and record.consumed_at == NOW + 1


async def test_a_code_is_consumed_once_and_remembers_when_and_from_where(
    storage: OneTimeCodeStore,
) -> None:
    await storage.save_one_time_code(one_time_code())

    assert await storage.consume_one_time_code("john", ELEVATION, HASH, at=NOW + 5, ip="192.0.2.7")
    assert not await storage.consume_one_time_code(
        "john", ELEVATION, HASH, at=NOW + 6, ip="192.0.2.8"
    )

    record = await storage.get_one_time_code("otc-1")
    assert record is not None
    assert (record.consumed_at, record.consumed_ip) == (NOW + 5, "192.0.2.7")
    assert not record.usable_at(NOW + 6)


async def test_a_code_is_consumed_only_by_its_user_intent_and_hash(
    storage: OneTimeCodeStore,
) -> None:
    await storage.save_one_time_code(one_time_code())

    assert not await storage.consume_one_time_code("harry", ELEVATION, HASH, at=NOW, ip="192.0.2.7")
    assert not await storage.consume_one_time_code("john", "other", HASH, at=NOW, ip="192.0.2.7")
    assert not await storage.consume_one_time_code("john", ELEVATION, "x", at=NOW, ip="192.0.2.7")

    record = await storage.get_one_time_code("otc-1")
    assert record is not None and record.usable_at(NOW + 1)


async def test_an_expired_code_is_never_consumed(storage: OneTimeCodeStore) -> None:
    await storage.save_one_time_code(one_time_code(expires_at=NOW + 300))

    assert not await storage.consume_one_time_code(
        "john", ELEVATION, HASH, at=NOW + 300, ip="192.0.2.7"
    )
    record = await storage.get_one_time_code("otc-1")
    assert record is not None and record.consumed_at is None


async def test_simultaneous_consumes_have_exactly_one_winner(storage: OneTimeCodeStore) -> None:
    await storage.save_one_time_code(one_time_code())

    results = await asyncio.gather(
        *(
            storage.consume_one_time_code("john", ELEVATION, HASH, at=NOW + 1, ip=f"192.0.2.{n}")
            for n in range(20)
        )
    )

    assert results.count(True) == 1


async def test_simultaneous_consumes_from_two_instances_have_exactly_one_winner(
    storage: OneTimeCodeStore, other_instance: OneTimeCodeStore
) -> None:
    for n in range(5):
        code_hash = f"hash-{n}"
        await storage.save_one_time_code(one_time_code(f"otc-{n}", code_hash=code_hash))
        results = await asyncio.gather(
            *(
                instance.consume_one_time_code(
                    "john", ELEVATION, code_hash, at=NOW + 1, ip="192.0.2.1"
                )
                for _ in range(10)
                for instance in (storage, other_instance)
            )
        )
        assert results.count(True) == 1, code_hash


async def test_a_revoked_code_is_never_consumed_and_revoking_says_so_once(
    storage: OneTimeCodeStore,
) -> None:
    await storage.save_one_time_code(one_time_code())

    assert await storage.revoke_one_time_code("otc-1", at=NOW + 2, ip="192.0.2.3")
    assert not await storage.revoke_one_time_code("otc-1", at=NOW + 3, ip="192.0.2.4")
    assert not await storage.consume_one_time_code(
        "john", ELEVATION, HASH, at=NOW + 4, ip="192.0.2.7"
    )

    record = await storage.get_one_time_code("otc-1")
    assert record is not None
    assert (record.revoked_at, record.revoked_ip) == (NOW + 2, "192.0.2.3")
    assert record.consumed_at is None


async def test_a_consumed_expired_or_unknown_code_cannot_be_revoked(
    storage: OneTimeCodeStore,
) -> None:
    await storage.save_one_time_code(one_time_code("used", code_hash="h-used"))
    await storage.save_one_time_code(one_time_code("old", expires_at=NOW + 10))
    assert await storage.consume_one_time_code("john", ELEVATION, "h-used", at=NOW, ip="192.0.2.1")

    assert not await storage.revoke_one_time_code("used", at=NOW + 1, ip="192.0.2.1")
    assert not await storage.revoke_one_time_code("old", at=NOW + 10, ip="192.0.2.1")
    assert not await storage.revoke_one_time_code("unknown", at=NOW, ip="192.0.2.1")


async def test_purge_deletes_only_codes_expired_before_the_cutoff(
    storage: OneTimeCodeStore,
) -> None:
    await storage.save_one_time_code(one_time_code("old", expires_at=NOW + 10))
    await storage.save_one_time_code(one_time_code("edge", expires_at=NOW + 20))
    await storage.save_one_time_code(one_time_code("new", expires_at=NOW + 30))

    assert await storage.purge_one_time_codes(expired_before=NOW + 20) == 1

    assert await storage.get_one_time_code("old") is None
    assert await storage.get_one_time_code("edge") is not None
    assert await storage.get_one_time_code("new") is not None
