"""OutboxStore's contract: due messages claimed oldest first under a lease, none lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portal.storage.base import OutboxStore
from tests.contract.conftest import Backend
from tests.contract.records import NOW

ROLE = "outbox"


async def test_claimed_messages_come_oldest_first_with_their_payload_and_lease(
    storage: OutboxStore,
) -> None:
    first = await storage.outbox_enqueue("reset_mail", {"to": "john", "n": 1}, at=NOW)
    second = await storage.outbox_enqueue("reset_mail", {"to": "mary", "n": 2}, at=NOW + 1)
    await storage.outbox_enqueue("reset_mail", {"to": "paul", "n": 3}, at=NOW + 2)

    claimed = await storage.outbox_claim(at=NOW + 5, lease=30, limit=2)

    assert [message.id for message in claimed] == [first, second]
    assert claimed[0].payload == {"to": "john", "n": 1}
    assert claimed[0].kind == "reset_mail"
    assert claimed[0].created_at == NOW
    assert all(message.attempts == 1 for message in claimed)
    assert all(message.next_attempt_at == NOW + 35 for message in claimed)
    assert await storage.outbox_pending() == 3


async def test_a_message_not_yet_due_is_not_claimed(storage: OutboxStore) -> None:
    await storage.outbox_enqueue("reset_mail", {}, at=NOW + 10)

    assert await storage.outbox_claim(at=NOW + 9, lease=30) == []
    assert len(await storage.outbox_claim(at=NOW + 10, lease=30)) == 1


async def test_a_claimed_message_comes_back_only_when_its_lease_runs_out(
    storage: OutboxStore,
) -> None:
    message_id = await storage.outbox_enqueue("reset_mail", {"to": "john"}, at=NOW)
    await storage.outbox_claim(at=NOW, lease=30)

    assert await storage.outbox_claim(at=NOW + 29, lease=30) == []
    reclaimed = await storage.outbox_claim(at=NOW + 30, lease=30)

    assert [(message.id, message.attempts) for message in reclaimed] == [(message_id, 2)]


async def test_a_retried_message_comes_back_when_due_with_its_error(storage: OutboxStore) -> None:
    message_id = await storage.outbox_enqueue("reset_mail", {"to": "john"}, at=NOW)
    await storage.outbox_claim(at=NOW, lease=30)

    await storage.outbox_retry(message_id, next_attempt_at=NOW + 300, error="smtp: 451 later")

    assert await storage.outbox_claim(at=NOW + 299, lease=30) == []
    (again,) = await storage.outbox_claim(at=NOW + 300, lease=30)
    assert (again.id, again.attempts, again.last_error) == (message_id, 2, "smtp: 451 later")


async def test_a_done_message_is_gone(storage: OutboxStore) -> None:
    message_id = await storage.outbox_enqueue("reset_mail", {"to": "john"}, at=NOW)
    await storage.outbox_claim(at=NOW, lease=30)

    await storage.outbox_done(message_id)

    assert await storage.outbox_pending() == 0
    assert await storage.outbox_claim(at=NOW + 3600, lease=30) == []


async def test_a_restart_loses_no_outbox_message(backend: Backend) -> None:
    before = await backend.open()
    leased = await before.outbox_enqueue("reset_mail", {"to": "john"}, at=NOW)
    queued = await before.outbox_enqueue("reset_mail", {"to": "mary"}, at=NOW + 1)
    await before.outbox_claim(at=NOW, lease=30, limit=1)  # the worker dies mid-send
    await before.close()

    after = await backend.open()

    assert await after.outbox_pending() == 2
    assert [m.id for m in await after.outbox_claim(at=NOW + 1, lease=30)] == [queued]
    assert [m.id for m in await after.outbox_claim(at=NOW + 30, lease=30)] == [leased]
    await after.close()


@pytest.mark.parametrize(
    "payload",
    [{"when": object()}, {"ratio": float("nan")}, {(1, 2): "tuple key"}],
    ids=["object", "nan", "tuple-key"],
)
async def test_a_payload_that_is_not_json_is_refused_at_enqueue(
    storage: OutboxStore, payload: dict[Any, Any]
) -> None:
    with pytest.raises(TypeError):
        await storage.outbox_enqueue("reset_mail", payload, at=NOW)

    assert await storage.outbox_pending() == 0


async def test_simultaneous_claims_from_two_instances_hand_each_message_to_one_claimer(
    storage: OutboxStore, other_instance: OutboxStore
) -> None:
    queued = [await storage.outbox_enqueue("reset_mail", {"n": n}, at=NOW) for n in range(20)]

    batches = await asyncio.gather(
        *(
            instance.outbox_claim(at=NOW, lease=30, limit=3)
            for _ in range(5)
            for instance in (storage, other_instance)
        )
    )

    claimed = [message.id for batch in batches for message in batch]
    assert sorted(claimed) == queued  # every message claimed, none twice
    assert await other_instance.outbox_claim(at=NOW + 29, lease=30) == []


async def test_the_oldest_message_is_the_first_queued_until_it_is_done(
    storage: OutboxStore,
) -> None:
    assert await storage.outbox_oldest() is None
    first = await storage.outbox_enqueue("reset_mail", {}, at=NOW)
    await storage.outbox_enqueue("reset_mail", {}, at=NOW + 7)
    # A claim or a retry leaves a message queued: it is still the oldest.
    await storage.outbox_claim(at=NOW + 8, lease=30, limit=1)
    assert await storage.outbox_oldest() == NOW

    await storage.outbox_done(first)

    assert await storage.outbox_oldest() == NOW + 7
