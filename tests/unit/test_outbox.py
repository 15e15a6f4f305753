"""The outbox worker: retries with backoff, drops only what can never succeed, loses nothing."""

from __future__ import annotations

import asyncio

import pytest

from portal.errors import DeliveryError
from portal.notify.outbox import OutboxWorker
from portal.storage.base import OutboxMessage
from portal.storage.sqlite import SqliteStorage
from tests.conftest import FakeClock


class Job:
    """A job that fails a given number of times, then succeeds; it records what it saw."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.seen: list[OutboxMessage] = []

    async def __call__(self, message: OutboxMessage) -> None:
        self.seen.append(message)
        if self.failures:
            raise self.failures.pop(0)


async def test_a_transient_failure_is_retried_after_a_growing_backoff(
    storage: SqliteStorage,
) -> None:
    clock = FakeClock()
    job = Job([DeliveryError("down", permanent=False), DeliveryError("down", permanent=False)])
    worker = OutboxWorker(storage, clock, {"mail": job}, backoff_base=5)
    await worker.enqueue("mail", {"to": "john"})

    assert await worker.run_once() == 1
    clock.advance(4)
    assert await worker.run_once() == 0, "not before the 5 s backoff"
    clock.advance(1)
    assert await worker.run_once() == 1
    clock.advance(9)
    assert await worker.run_once() == 0, "the second backoff is 10 s"
    clock.advance(1)
    assert await worker.run_once() == 1
    assert [m.attempts for m in job.seen] == [1, 2, 3]
    assert job.seen[0].payload == {"to": "john"}
    assert await storage.outbox_pending() == 0


async def test_a_permanent_failure_is_dropped_and_logged(
    storage: SqliteStorage, caplog: pytest.LogCaptureFixture
) -> None:
    job = Job([DeliveryError("550 no such mailbox", permanent=True)])
    worker = OutboxWorker(storage, FakeClock(), {"mail": job})
    await worker.enqueue("mail", {"to": "secret-address@example.com"})

    await worker.run_once()
    assert await storage.outbox_pending() == 0
    assert "giving up on mail message" in caplog.text
    assert "secret-address" not in caplog.text


async def test_it_gives_up_after_max_attempts(storage: SqliteStorage) -> None:
    clock = FakeClock()
    job = Job([RuntimeError("boom")] * 10)
    worker = OutboxWorker(storage, clock, {"mail": job}, max_attempts=3, backoff_base=1)
    await worker.enqueue("mail", {})
    for _ in range(5):
        await worker.run_once()
        clock.advance(100)
    assert len(job.seen) == 3
    assert await storage.outbox_pending() == 0


async def test_a_message_claimed_by_a_worker_that_died_comes_back_after_the_lease(
    storage: SqliteStorage,
) -> None:
    clock = FakeClock()
    await storage.outbox_enqueue("mail", {"n": 1}, at=clock.now())
    assert await storage.outbox_claim(at=clock.now(), lease=120)  # then the process dies
    job = Job([])
    worker = OutboxWorker(storage, clock, {"mail": job}, lease=120)
    assert await worker.run_once() == 0
    clock.advance(121)
    assert await worker.run_once() == 1
    assert job.seen[0].payload == {"n": 1}


async def test_enqueueing_an_unknown_kind_is_a_programming_error(storage: SqliteStorage) -> None:
    worker = OutboxWorker(storage, FakeClock())
    with pytest.raises(ValueError, match="no job registered"):
        await worker.enqueue("fax", {})


async def test_start_and_stop_deliver_what_is_queued(storage: SqliteStorage) -> None:
    job = Job([])
    worker = OutboxWorker(storage, FakeClock(), {"mail": job}, poll_interval=30)
    worker.start()
    await worker.enqueue("mail", {"n": 1})
    for _ in range(100):
        if job.seen:
            break
        await asyncio.sleep(0.01)
    await worker.stop()
    assert [m.payload for m in job.seen] == [{"n": 1}]


async def test_slow_jobs_never_let_a_waiting_message_run_twice(storage: SqliteStorage) -> None:
    # Two replicas share the outbox. Each of A's jobs takes 70 s, well within the 120 s lease,
    # and B looks for work after each. Each message is claimed just before it runs, so no
    # waiting message sits under a lease that runs out behind A's queue: all run exactly once.
    clock = FakeClock()
    ran: list[tuple[str, int]] = []
    other: OutboxWorker

    async def slow(message: OutboxMessage) -> None:
        ran.append(("a", int(message.payload["n"])))
        clock.advance(70)
        await other.run_once()

    async def quick(message: OutboxMessage) -> None:
        ran.append(("b", int(message.payload["n"])))

    first = OutboxWorker(storage, clock, {"mail": slow}, lease=120)
    other = OutboxWorker(storage, clock, {"mail": quick}, lease=120)
    for n in range(1, 6):
        await storage.outbox_enqueue("mail", {"n": n}, at=clock.now())
    await first.run_once()
    assert sorted(n for _, n in ran) == [1, 2, 3, 4, 5], ran
    assert {who for who, _ in ran} == {"a", "b"}
    assert await storage.outbox_pending() == 0
