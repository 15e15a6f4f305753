"""One bounded, first-come-first-served queue for every password and answer hash the portal makes.

A hash is slow on purpose: argon2id at Authelia's defaults (the portal's too) takes 64 MiB and
4 lanes, each lane a thread of its own, for about a tenth of a second of two cores. Run in the
default thread pool, eight sign-ins at once ran about six hashes at once: 24 threads on 2 cores
starved the event loop (health checks waited up to 175 ms) and the process peaked near 500 MB.
Here at most `concurrency` hashes run at once, in dedicated threads; the others wait their turn
in arrival order (concurrent.futures.ThreadPoolExecutor's queue is FIFO), known and unknown users
alike, so the wait tells nobody which names exist. A caller that goes away (its request is
cancelled) leaves the queue without its hash being computed.

`password_hashing.concurrency` (a portal key, portal/config/password_hashing.py) sets the bound;
unset, default_concurrency sizes it to the machine. On Linux the queue's threads run at a lower
scheduling priority (nice +LOW_PRIORITY_NICE, inherited by argon2's lane threads), so the event
loop's short bursts of work get a core first while hashes still use every idle cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

DEFAULT_MAX = 4  # at most 4 x 64 MiB of argon2 memory by default; an admin may allow more
MAX_CONCURRENCY = 64  # the configuration's ceiling
LOW_PRIORITY_NICE = 10  # added to the hashing threads' nice value on Linux (0 leaves it alone)


def available_cpus() -> int:
    """Return how many CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_concurrency(cpus: int | None = None) -> int:
    """Return how many hashes run at once when the configuration does not say: half the CPUs
    (`cpus`, default available_cpus()), at least 1 and at most DEFAULT_MAX.

    Half, because one argon2 hash at Authelia's defaults already runs 4 lane threads: more hashes
    at once than cores / 2 finish no sooner in total, cost 64 MiB each and crowd the event loop.
    """
    return max(1, min(DEFAULT_MAX, (cpus if cpus is not None else available_cpus()) // 2))


def _lower_priority(nice: int) -> None:
    """Raise this thread's nice value by `nice` (Linux: per thread, inherited by the threads it
    starts); a system that refuses or lacks it leaves the priority as it is."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + nice)


class HashingQueue:
    """Run hashing functions in at most `concurrency` dedicated threads, first come first served.

    `concurrency` None means default_concurrency(); values below 1 raise ValueError. `nice` is
    added to the threads' nice value on Linux (0: unchanged). Threads start on first use.
    """

    def __init__(self, concurrency: int | None = None, *, nice: int = LOW_PRIORITY_NICE) -> None:
        """Create the executor; no thread starts before the first run()."""
        self.concurrency = default_concurrency() if concurrency is None else concurrency
        if self.concurrency < 1:
            raise ValueError("password hashing needs a concurrency of at least 1")
        self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency,
            thread_name_prefix="portal-hashing",
            initializer=_lower_priority,
            initargs=(nice,),
        )

    async def run(self, func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Queue func(*args, **kwargs) behind the hashes already waiting and return its result
        (or raise its exception). The call sees the caller's context variables, as with
        asyncio.to_thread. Cancelling the caller drops a call that has not started yet."""
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


@functools.cache
def _queue_of(concurrency: int) -> HashingQueue:
    return HashingQueue(concurrency)


def shared_queue(concurrency: int | None = None) -> HashingQueue:
    """Return the process's queue for this bound (None: default_concurrency()); every part of
    the portal built from one configuration gets the same one."""
    return _queue_of(default_concurrency() if concurrency is None else concurrency)
