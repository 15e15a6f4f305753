"""SecurityAnswerStore's contract: each user's set kept in order and replaced all at once."""

from __future__ import annotations

import pytest

from portal.errors import StorageError
from portal.storage.base import SecurityAnswer, SecurityAnswerStore
from tests.contract.records import HOUR, NOW, answers

ROLE = "security_answers"


async def test_security_answers_are_kept_per_user_in_order(storage: SecurityAnswerStore) -> None:
    assert await storage.get_security_answers("john") == []
    await storage.set_security_answers("john", answers("Q1?", "Q2?", "Q3?"))
    await storage.set_security_answers("harry", answers("Q9?"))
    assert await storage.get_security_answers("john") == answers("Q1?", "Q2?", "Q3?")
    assert [a.question for a in await storage.get_security_answers("harry")] == ["Q9?"]


async def test_setting_security_answers_replaces_the_whole_set(
    storage: SecurityAnswerStore,
) -> None:
    await storage.set_security_answers("john", answers("Q1?", "Q2?", "Q3?"))
    await storage.set_security_answers("john", answers("Q4?", "Q5?", at=NOW + HOUR))
    assert await storage.get_security_answers("john") == answers("Q4?", "Q5?", at=NOW + HOUR)


async def test_a_failed_replacement_keeps_the_old_answers(storage: SecurityAnswerStore) -> None:
    await storage.set_security_answers("john", answers("Q1?", "Q2?"))
    duplicate = [SecurityAnswer(0, "Q4?", "h", NOW), SecurityAnswer(0, "Q5?", "h", NOW)]
    with pytest.raises(StorageError):
        await storage.set_security_answers("john", duplicate)
    assert await storage.get_security_answers("john") == answers("Q1?", "Q2?")


async def test_security_answers_can_be_deleted(storage: SecurityAnswerStore) -> None:
    await storage.set_security_answers("john", answers("Q1?", "Q2?"))
    assert await storage.delete_security_answers("john") == 2
    assert await storage.get_security_answers("john") == []
    assert await storage.delete_security_answers("john") == 0


async def test_deleting_one_users_answers_leaves_the_others(storage: SecurityAnswerStore) -> None:
    await storage.set_security_answers("john", answers("Q1?", "Q2?"))
    await storage.set_security_answers("harry", answers("Q9?"))

    assert await storage.delete_security_answers("john") == 2

    assert await storage.get_security_answers("harry") == answers("Q9?")
