"""One bounded, first-come-first-served queue for every password and answer hash the portal makes.

A hash is slow on purpose: argon2id at Authelia's defaults (the portal's too) takes 64 MiB and
4 lanes, for about a fifth of a second of one core. Each hash runs on one thread: all its lanes
are computed in the thread that asked (portal.users.hashing; argon2-cffi's own functions start a
thread per lane, which kept both cores of a 2-core machine busy with one hash). Run in the
default thread pool, eight sign-ins at once ran about six hashes at once: 24 threads on 2 cores
starved the event loop (health checks waited up to 175 ms) and the process peaked near 500 MB.
Here at most `concurrency` hashes run at once, in dedicated threads; the others wait their turn
in arrival order (concurrent.futures.ThreadPoolExecutor's queue is FIFO), known and unknown users
alike, so the wait tells nobody which names exist. A caller that goes away (its request is
cancelled) leaves the queue without its hash being computed. The line is bounded: past
`waiting` calls in line (WAITING_PER_THREAD per thread by default, a few seconds of hashing)
the next is refused at once with HashingBusyError (503 + Retry-After, the same for everyone), so
a flood of sign-ins (any names, banned or not: a ban still costs a hash, for equal timing) cannot
make every sign-in wait without end.

`password_hashing.concurrency` (a portal key, portal/config/password_hashing.py) sets the bound;
unset, default_concurrency sizes it to the machine. The threads keep the process's scheduling
priority: a lower one (nice +10 per hashing thread) was measured (bench/hashing.py, issue 19,
when argon2 still ran a thread per lane) to cut /api/health's p99 by about a quarter, but made
the sign-ins 1.5 times slower whenever other programs kept the cores busy, so it is not used.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from portal.errors import HashingBusyError

_P = ParamSpec("_P")
_T = TypeVar("_T")

DEFAULT_MAX = 4  # at most 4 x 64 MiB of argon2 memory by default; an admin may allow more
MAX_CONCURRENCY = 64  # the configuration's ceiling
# Calls that may wait per hashing thread before the next is refused (503): about 32 hashes of
# ~0.2 s each (one thread per hash), some seven seconds of waiting at Authelia's argon2 defaults.
WAITING_PER_THREAD = 32
RETRY_AFTER = 5  # seconds a refused caller is told to wait


def available_cpus() -> int:
    """Return how many CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_concurrency(cpus: int | None = None) -> int:
    """Return how many hashes run at once when the configuration does not say: half the CPUs
    (`cpus`, default available_cpus()), at least 1 and at most DEFAULT_MAX.

    Half, so that the hashes (one thread each: portal.users.hashing computes every argon2 lane in
    the calling thread) leave at least half the cores to the event loop and the requests that need
    no hash; more at once finish no sooner in total while the cores are busy, and cost 64 MiB each
    at Authelia's argon2 defaults.
    """
    return max(1, min(DEFAULT_MAX, (cpus if cpus is not None else available_cpus()) // 2))


class HashingQueue:
    """Run hashing functions in at most `concurrency` dedicated threads, first come first served.

    `concurrency` None means default_concurrency(); `waiting` (None: concurrency x
    WAITING_PER_THREAD) bounds the calls in line behind the running ones; values below 1 raise
    ValueError. Threads start on first use and are named portal-hashing_N.
    """

    def __init__(self, concurrency: int | None = None, *, waiting: int | None = None) -> None:
        """Create the executor; no thread starts before the first run()."""
        self.concurrency = default_concurrency() if concurrency is None else concurrency
        if self.concurrency < 1:
            raise ValueError("password hashing needs a concurrency of at least 1")
        self.waiting = self.concurrency * WAITING_PER_THREAD if waiting is None else waiting
        if self.waiting < 1:
            raise ValueError("password hashing needs a waiting line of at least 1")
        self._pending = 0  # calls running or in line, on the event loop's thread only
        self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency,
            thread_name_prefix="portal-hashing",
        )

    async def run(self, func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Queue func(*args, **kwargs) behind the hashes already waiting and return its result
        (or raise its exception). The call sees the caller's context variables, as with
        asyncio.to_thread. Cancelling the caller drops a call that has not started yet.
        Raises HashingBusyError at once when `waiting` calls are already in line."""
        if self._pending >= self.concurrency + self.waiting:
            raise HashingBusyError(RETRY_AFTER)
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        finally:
            self._pending -= 1


@functools.cache
def _queue_of(concurrency: int) -> HashingQueue:
    return HashingQueue(concurrency)


def shared_queue(concurrency: int | None = None) -> HashingQueue:
    """Return the process's queue for this bound (None: default_concurrency()); every part of
    the portal built from one configuration gets the same one."""
    return _queue_of(default_concurrency() if concurrency is None else concurrency)
