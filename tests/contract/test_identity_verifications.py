"""IdentityVerificationStore's contract: reset-link records saved once, consumed once, revoked."""

from __future__ import annotations

import asyncio

import pytest

from portal.errors import StorageError
from portal.storage.base import IdentityVerificationStore
from tests.contract.records import NOW, RESET, reset_link

ROLE = "identity_verifications"


async def test_a_saved_reset_link_reads_back_unchanged(storage: IdentityVerificationStore) -> None:
    await storage.save_identity_verification(reset_link())

    assert await storage.get_identity_verification("jti-1") == reset_link()
    assert await storage.get_identity_verification("unknown") is None


async def test_saving_a_known_jti_again_fails_without_reviving_it_or_echoing_it(
    storage: IdentityVerificationStore,
) -> None:
    await storage.save_identity_verification(reset_link("secret-jti"))
    await storage.consume_identity_verification("secret-jti", at=NOW + 1, ip="192.0.2.9")

    with pytest.raises(StorageError) as raised:
        await storage.save_identity_verification(reset_link("secret-jti"))

    assert "secret-jti" not in str(raised.value)
    record = await storage.get_identity_verification("secret-jti")
    assert record is not None and record.consumed_at == NOW + 1


async def test_a_reset_link_is_consumed_once_and_remembers_when_and_from_where(
    storage: IdentityVerificationStore,
) -> None:
    await storage.save_identity_verification(reset_link())

    assert await storage.consume_identity_verification("jti-1", at=NOW + 5, ip="192.0.2.7")
    assert not await storage.consume_identity_verification("jti-1", at=NOW + 6, ip="192.0.2.8")

    record = await storage.get_identity_verification("jti-1")
    assert record is not None
    assert (record.consumed_at, record.consumed_ip) == (NOW + 5, "192.0.2.7")
    assert not record.usable_at(NOW + 6)


async def test_a_consume_whose_write_failed_can_be_released_only_by_its_owner(
    storage: IdentityVerificationStore,
) -> None:
    await storage.save_identity_verification(reset_link())
    assert await storage.consume_identity_verification("jti-1", at=NOW + 5, ip="192.0.2.7")

    assert not await storage.release_identity_verification("jti-1", consumed_at=NOW + 4)
    assert await storage.release_identity_verification("jti-1", consumed_at=NOW + 5)

    record = await storage.get_identity_verification("jti-1")
    assert record is not None and record.usable_at(NOW + 6)
    assert await storage.consume_identity_verification("jti-1", at=NOW + 6, ip="192.0.2.8")


async def test_an_expired_revoked_or_unknown_link_cannot_be_consumed(
    storage: IdentityVerificationStore,
) -> None:
    await storage.save_identity_verification(reset_link("expiring", expires_at=NOW + 60))
    await storage.save_identity_verification(reset_link("revoked"))
    await storage.revoke_identity_verification("revoked", at=NOW + 1, ip="192.0.2.1")

    assert not await storage.consume_identity_verification("expiring", at=NOW + 60, ip="x")
    assert not await storage.consume_identity_verification("revoked", at=NOW + 2, ip="x")
    assert not await storage.consume_identity_verification("unknown", at=NOW + 2, ip="x")
    expiring = await storage.get_identity_verification("expiring")
    assert expiring is not None and expiring.consumed_at is None


async def test_twenty_concurrent_consumes_on_one_instance_have_exactly_one_winner(
    storage: IdentityVerificationStore,
) -> None:
    await storage.save_identity_verification(reset_link())

    results = await asyncio.gather(
        *(
            storage.consume_identity_verification("jti-1", at=NOW + 1, ip=f"192.0.2.{n}")
            for n in range(20)
        )
    )

    assert results.count(True) == 1


async def test_concurrent_consumes_from_two_instances_on_one_file_have_exactly_one_winner(
    storage: IdentityVerificationStore, other_instance: IdentityVerificationStore
) -> None:
    jtis = [f"jti-{n}" for n in range(5)]
    for jti in jtis:
        await storage.save_identity_verification(reset_link(jti))

    for jti in jtis:
        results = await asyncio.gather(
            *(
                instance.consume_identity_verification(jti, at=NOW + 1, ip="192.0.2.1")
                for _ in range(10)
                for instance in (storage, other_instance)
            )
        )
        assert results.count(True) == 1, jti


async def test_revoking_a_usable_link_stops_it_and_says_so_once(
    storage: IdentityVerificationStore,
) -> None:
    await storage.save_identity_verification(reset_link("open"))
    await storage.save_identity_verification(reset_link("used"))
    await storage.consume_identity_verification("used", at=NOW + 1, ip="192.0.2.1")

    assert await storage.revoke_identity_verification("open", at=NOW + 2, ip="192.0.2.5")
    assert not await storage.revoke_identity_verification("open", at=NOW + 3, ip="192.0.2.5")
    assert not await storage.revoke_identity_verification("used", at=NOW + 3, ip="192.0.2.5")
    assert not await storage.consume_identity_verification("open", at=NOW + 4, ip="192.0.2.1")
    record = await storage.get_identity_verification("open")
    assert record is not None
    assert (record.revoked_at, record.revoked_ip) == (NOW + 2, "192.0.2.5")


async def test_revoking_a_users_links_spares_keep_jti_other_actions_and_other_users(
    storage: IdentityVerificationStore,
) -> None:
    for record in (
        reset_link("old-1"),
        reset_link("old-2"),
        reset_link("newest"),
        reset_link("already-used"),
        reset_link("other-action", action="verify_email"),
        reset_link("marys", username="mary"),
    ):
        await storage.save_identity_verification(record)
    await storage.consume_identity_verification("already-used", at=NOW + 1, ip="192.0.2.1")

    revoked = await storage.revoke_identity_verifications_for(
        "john", RESET, at=NOW + 2, ip="192.0.2.1", keep_jti="newest"
    )

    assert revoked == 2
    for gone in ("old-1", "old-2"):
        assert not await storage.consume_identity_verification(gone, at=NOW + 3, ip="x")
    for kept in ("newest", "other-action", "marys"):
        assert await storage.consume_identity_verification(kept, at=NOW + 3, ip="x")


async def test_revoking_a_users_links_without_keep_jti_revokes_them_all(
    storage: IdentityVerificationStore,
) -> None:
    await storage.save_identity_verification(reset_link("a"))
    await storage.save_identity_verification(reset_link("b"))

    assert await storage.revoke_identity_verifications_for("john", RESET, at=NOW, ip="x") == 2
    assert await storage.revoke_identity_verifications_for("john", RESET, at=NOW, ip="x") == 0


async def test_purging_links_deletes_only_those_expired_before_the_cutoff(
    storage: IdentityVerificationStore,
) -> None:
    await storage.save_identity_verification(reset_link("expired", expires_at=NOW + 10))
    await storage.save_identity_verification(reset_link("at-cutoff", expires_at=NOW + 20))

    assert await storage.purge_identity_verifications(expired_before=NOW + 20) == 1
    assert await storage.get_identity_verification("expired") is None
    assert await storage.get_identity_verification("at-cutoff") is not None
