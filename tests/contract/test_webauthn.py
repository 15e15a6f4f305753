"""WebAuthnCredentialStore's contract: several credentials per user, unique credential ids and
names, rename and delete scoped to their user, and the sign counter's compare-and-set."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from portal.errors import WebAuthnCredentialExistsError
from portal.storage.base import WebAuthnCredential
from tests.contract.records import HOUR, NOW

ROLE = "webauthn"


def credential(
    credential_id: bytes = b"cred-1", *, username: str = "john", description: str = "Laptop"
) -> WebAuthnCredential:
    """A fresh credential registered at NOW, its counter at 0, never used."""
    return WebAuthnCredential(
        id=0,
        username=username,
        description=description,
        credential_id=credential_id,
        public_key=b"\xa5\x01\x02cose-key",
        sign_count=0,
        aaguid="00000000-0000-0000-0000-000000000000",
        transports=("usb", "nfc"),
        backup_eligible=True,
        backup_state=False,
        created_at=NOW,
    )


async def test_credentials_are_kept_whole_several_per_user(storage: Any) -> None:
    first = await storage.add_webauthn_credential(credential())
    second = await storage.add_webauthn_credential(
        dataclasses.replace(credential(b"cred-2", description="Phone"), created_at=NOW + 1)
    )
    await storage.add_webauthn_credential(credential(b"cred-3", username="mary"))
    assert first > 0 and second > 0 and first != second
    listed = await storage.list_webauthn_credentials("john")
    assert [c.description for c in listed] == ["Laptop", "Phone"]
    assert listed[0] == dataclasses.replace(credential(), id=first)
    assert await storage.list_webauthn_credentials("nobody") == []
    found = await storage.get_webauthn_credential(b"cred-2")
    assert found is not None and (found.id, found.username) == (second, "john")
    assert await storage.get_webauthn_credential(b"unknown") is None


async def test_credential_ids_are_unique_across_users_and_names_within_one(storage: Any) -> None:
    await storage.add_webauthn_credential(credential())
    with pytest.raises(WebAuthnCredentialExistsError):
        await storage.add_webauthn_credential(credential(username="mary", description="Key"))
    with pytest.raises(WebAuthnCredentialExistsError):
        await storage.add_webauthn_credential(credential(b"cred-2"))
    # Another user may use the same name.
    await storage.add_webauthn_credential(credential(b"cred-2", username="mary"))


async def test_rename_and_delete_touch_only_their_users_row(storage: Any) -> None:
    johns = await storage.add_webauthn_credential(credential())
    await storage.add_webauthn_credential(credential(b"cred-2", description="Phone"))
    assert not await storage.rename_webauthn_credential("mary", johns, "Stolen")
    assert not await storage.delete_webauthn_credential("mary", johns)
    with pytest.raises(WebAuthnCredentialExistsError):
        await storage.rename_webauthn_credential("john", johns, "Phone")
    assert await storage.rename_webauthn_credential("john", johns, "Work laptop")
    found = await storage.get_webauthn_credential(b"cred-1")
    assert found is not None and found.description == "Work laptop"
    assert await storage.delete_webauthn_credential("john", johns)
    assert not await storage.delete_webauthn_credential("john", johns)
    assert await storage.get_webauthn_credential(b"cred-1") is None
    assert [c.description for c in await storage.list_webauthn_credentials("john")] == ["Phone"]


async def test_a_use_sets_the_counter_only_from_the_value_read(storage: Any) -> None:
    new_id = await storage.add_webauthn_credential(credential())
    at = NOW + HOUR
    assert await storage.webauthn_credential_use(
        new_id, previous=0, sign_count=5, backup_state=True, at=at
    )
    found = await storage.get_webauthn_credential(b"cred-1")
    assert found is not None
    assert (found.sign_count, found.backup_state, found.last_used_at) == (5, True, at)
    # A second use read the counter at 0 too: it lost the race and changes nothing.
    assert not await storage.webauthn_credential_use(
        new_id, previous=0, sign_count=6, backup_state=False, at=at + 1
    )
    again = await storage.get_webauthn_credential(b"cred-1")
    assert again is not None and again.sign_count == 5


async def test_simultaneous_uses_of_one_counter_value_let_one_through(
    storage: Any, other_instance: Any
) -> None:
    new_id = await storage.add_webauthn_credential(credential())
    results = await asyncio.gather(
        *(
            instance.webauthn_credential_use(
                new_id, previous=0, sign_count=1, backup_state=False, at=NOW
            )
            for instance in (storage, other_instance) * 3
        )
    )
    assert sorted(results) == [False] * 5 + [True]
