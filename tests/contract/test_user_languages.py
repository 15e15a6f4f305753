"""UserLanguageStore's contract: one language per user, the last one recorded, shared by every
instance; another user's record untouched."""

from __future__ import annotations

from typing import Any

from tests.contract.records import NOW

ROLE = "user_languages"


async def test_a_user_with_no_record_has_no_language(storage: Any) -> None:
    assert await storage.user_language("alice") is None


async def test_the_last_language_recorded_wins_on_every_instance(
    storage: Any, other_instance: Any
) -> None:
    await storage.set_user_language("alice", "de", at=NOW)
    assert await other_instance.user_language("alice") == "de"
    await other_instance.set_user_language("alice", "fr", at=NOW + 1)
    assert await storage.user_language("alice") == "fr"


async def test_users_are_kept_apart_and_compared_exactly(storage: Any) -> None:
    await storage.set_user_language("alice", "es", at=NOW)
    await storage.set_user_language("bob", "de", at=NOW)
    assert await storage.user_language("alice") == "es"
    assert await storage.user_language("bob") == "de"
    assert await storage.user_language("Alice") is None
