"""The durable outbox: work queued in storage and a background worker that delivers it.

A request handler enqueues and returns at once; the worker claims due messages, runs the
handler registered for their kind, and retries with backoff, so neither an SMTP outage nor a
restart loses a mail and no requester waits on a lookup or a send. Jobs run on the event loop
that serves requests: a job whose work depends on whether an account exists must do the same work
either way (see ResetMailJob in portal/reset_mail.py), or the next request's time tells.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from portal.clock import Clock
from portal.errors import DeliveryError, PermanentJobError
from portal.storage.base import OutboxMessage, OutboxStore

Job = Callable[[OutboxMessage], Awaitable[None]]

log = logging.getLogger("portal.outbox")


class OutboxWorker:
    """Deliver queued work in the background, retrying failures with exponential backoff."""

    def __init__(
        self,
        storage: OutboxStore,
        clock: Clock,
        jobs: Mapping[str, Job] | None = None,
        *,
        poll_interval: float = 5.0,
        lease: float = 120.0,
        max_attempts: int = 25,
        backoff_base: float = 5.0,
        backoff_max: float = 900.0,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._jobs = dict(jobs or {})
        self._poll_interval = poll_interval
        self._lease = lease
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def register(self, kind: str, job: Job) -> None:
        """Run `job` for every queued message of this kind."""
        self._jobs[kind] = job

    async def enqueue(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Queue one unit of work durably and wake the worker."""
        if kind not in self._jobs:
            raise ValueError(f"no job registered for {kind!r}")
        await self._storage.outbox_enqueue(kind, payload, at=self._clock.now())
        self.wake()

    def wake(self) -> None:
        """Make the worker look for due work now rather than at its next poll."""
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        """Return how long to wait before the next try after `attempts` tries."""
        return float(min(self._backoff_max, self._backoff_base * 2 ** (attempts - 1)))

    async def run_once(self, limit: int = 10) -> int:
        """Run up to `limit` due messages once each; return how many were claimed.

        Each message is claimed just before it runs, so its lease covers its own job only. A
        batch claimed at once would share one lease: behind a slow job its later messages could
        outlive the lease and be run by another replica as well (sent twice).
        """
        count = 0
        while count < limit:
            claimed = await self._storage.outbox_claim(
                at=self._clock.now(), lease=self._lease, limit=1
            )
            if not claimed:
                break
            count += 1
            await self._run(claimed[0])
        return count

    async def _run(self, message: OutboxMessage) -> None:
        job = self._jobs.get(message.kind)
        try:
            if job is None:
                raise PermanentJobError(f"no job registered for {message.kind!r}")
            await job(message)
        except Exception as exc:  # any failure is retried or dropped, never lost silently
            permanent = isinstance(exc, PermanentJobError) or (
                isinstance(exc, DeliveryError) and exc.permanent
            )
            # SECURITY: the error text, never the payload: it may hold an identifier.
            reason = f"{type(exc).__name__}: {exc}"
            if permanent or message.attempts >= self._max_attempts:
                log.error(
                    "outbox: giving up on %s message %d after %d attempt(s): %s",
                    message.kind,
                    message.id,
                    message.attempts,
                    reason,
                )
                await self._storage.outbox_done(message.id)
                return
            delay = self.backoff(message.attempts)
            log.warning(
                "outbox: %s message %d failed (attempt %d), retrying in %.0fs: %s",
                message.kind,
                message.id,
                message.attempts,
                delay,
                reason,
            )
            await self._storage.outbox_retry(
                message.id, next_attempt_at=self._clock.now() + delay, error=reason
            )
            return
        await self._storage.outbox_done(message.id)

    def start(self) -> None:
        """Start working in the background."""
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name="outbox")

    async def stop(self, grace: float = 10.0) -> None:
        """Let the job under way finish (up to `grace` seconds), then stop; queued work stays."""
        task, self._task = self._task, None
        if task is None:
            return
        # A flag, not only cancel(): libraries that use wait_for on Python 3.11 (aiosmtplib)
        # can swallow a cancellation, and the worker would then run forever.
        self._stopping = True
        self.wake()
        done, _ = await asyncio.wait([task], timeout=grace)
        while not done:
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=1.0)

    async def run(self) -> None:
        """Work until stopped: run due messages, then sleep until woken or the poll interval."""
        while not self._stopping:
            # Cleared before the run, so work queued during it wakes the next round at once.
            self._wake.clear()
            try:
                while not self._stopping and await self.run_once():
                    pass
            except Exception:
                log.exception("outbox: the worker loop failed; trying again shortly")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that lands as the timeout fires, and the worker would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
