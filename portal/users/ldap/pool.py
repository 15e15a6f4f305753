"""A small pool of bound service-account connections, each used by one worker thread at a time.

The pool owns its worker threads (a ThreadPoolExecutor), the slots that bound how many requests
run at once (pooling.count, or 2 without pooling), the idle connections kept for the next
request, and the retries while the directory cannot be reached (Authelia's pooling.timeout and
pooling.retries, internal/authentication/ldap_client_factory.go).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from portal.config import LdapBackendConfig
from portal.config.authentication_backend.ldap_implementations import WHERE
from portal.errors import BackendUnavailableError, UserBackendError
from portal.users.ldap.connection import BindRefused, CannotConnect, Down, close
from portal.users.ldap.ldap3_names import LDAPException

T = TypeVar("T")


class LdapPool:
    """Borrow a bound connection, run a blocking operation on it in a worker thread, hand it back.

    `connect` opens and binds a new connection (blocking; raises CannotConnect, Down,
    BindRefused or LDAPException as Connector.connect does). Every call site of the pool is on
    the event loop; every use of a connection is in one of the pool's threads.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        address: str,
        size: int,
        timeout: float,
        retry_pause: float | None,
        logger: logging.Logger,
    ) -> None:
        """size: connections (and concurrent requests); timeout: seconds a call may wait for a
        connection; retry_pause: seconds between attempts to connect while the directory cannot
        be reached, None for a single attempt; address: the server, for messages."""
        self._connect = connect
        self._address = address
        self._size = size
        self._timeout = timeout
        self._retry_pause = retry_pause
        self._logger = logger
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Any] = []
        # Two threads more than slots: user binds and unbinding do not wait for a slot.
        self._executor = ThreadPoolExecutor(size + 2, thread_name_prefix="portal-ldap")
        self._closed = False
        # Read by the metrics (portal_ldap_pool_waits_total, ..._wait_seconds_total).
        self.waits = 0
        self.wait_seconds = 0.0

    @classmethod
    def from_config(
        cls, config: LdapBackendConfig, connect: Callable[[], Any], logger: logging.Logger
    ) -> LdapPool:
        """Size the pool from `pooling` (Authelia's keys): count, timeout, retries."""
        pooling = config.pooling
        timeout = pooling.timeout.total_seconds()
        # Authelia (ldap_client_factory.go): pooling.retries splits pooling.timeout into the pause
        # between attempts to connect; 0 means its default, 2. Without pooling, one attempt.
        retries = pooling.retries or 2
        return cls(
            connect,
            address=str(config.address),
            size=pooling.count if pooling.enable else 2,
            timeout=timeout,
            retry_pause=timeout / retries if pooling.enable else None,
            logger=logger,
        )

    @property
    def closed(self) -> bool:
        """Tell whether close() was called: the pool takes no more work."""
        return self._closed

    async def run(self, op: Callable[[Any], T], *, reuse: bool = True, retry: bool = True) -> T:
        """Borrow a service connection, run op on it in a worker thread, hand it back.

        Waits up to `timeout` seconds for a free connection. A connection that cannot be opened
        (server down or restarting) is tried again every `retry_pause` seconds until `timeout`
        has passed since the call began, as Authelia's pool does (ldap_client_factory.go:
        acquire, backoff). op runs again only after it met a pooled connection the server had
        dropped: once, on a new connection. reuse=False: a new connection, for a write that must
        not go out on a dead one (so a write is never sent twice). retry=False: one attempt to
        connect, for a probe (health) that must answer now rather than wait. Raises
        BackendUnavailableError when no connection came in time, UserBackendError for a request
        ldap3 refuses.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            try:
                return await self._attempt(op, reuse=reuse, wait=max(0.0, deadline - loop.time()))
            except CannotConnect as exc:
                pause = self._retry_pause
                if not retry or pause is None or self._closed or loop.time() + pause > deadline:
                    raise BackendUnavailableError(str(exc)) from None
                self._logger.info("%s; trying again in %gs", exc, pause)
                await asyncio.sleep(pause)

    async def in_thread(self, call: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in one of the pool's threads, without a slot or a connection."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    async def close(self) -> None:
        """Unbind every idle connection and stop the worker threads; later calls are refused."""
        self._closed = True
        idle, self._idle = self._idle, []
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, close, conn) for conn in idle),
            return_exceptions=True,
        )
        self._executor.shutdown(wait=False)

    # --- event-loop side ---------------------------------------------------------------------

    async def _attempt(self, op: Callable[[Any], T], *, reuse: bool, wait: float) -> T:
        """Run op once on a pooled (or new) connection; raise CannotConnect if none opens."""
        if self._closed:
            raise BackendUnavailableError(f"{WHERE}: the backend is closed")
        busy = self._slots.locked()
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            self._count_wait(started)
            raise BackendUnavailableError(
                f"{WHERE}: all {self._size} connections to {self._address} stayed busy for "
                f"{self._timeout:g}s"
            ) from None
        if busy:
            self._count_wait(started)
        conn = self._idle.pop() if reuse and self._idle else None
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._use, conn, op)
        except BaseException:
            self._slots.release()
            raise
        # The slot and the connection come back when the thread is done, even if the caller
        # was cancelled meanwhile: a connection is never used by two threads at once.
        future.add_done_callback(self._hand_back)
        try:
            _, value = await asyncio.shield(future)
        except Down as exc:
            stale, self._idle = self._idle, []  # likely dead too (the server went away)
            for conn in stale:
                self._discard(conn)
            if isinstance(exc, CannotConnect):
                raise
            raise BackendUnavailableError(str(exc)) from None
        except BindRefused as exc:
            raise BackendUnavailableError(
                f"{WHERE}: service account bind failed: {exc.words}"
            ) from None
        except LDAPException as exc:
            raise UserBackendError(f"{WHERE}: {type(exc).__name__}: {exc}") from None
        return value

    def _count_wait(self, started: float) -> None:
        self.waits += 1
        self.wait_seconds += asyncio.get_running_loop().time() - started

    def _hand_back(self, future: asyncio.Future[tuple[Any | None, Any]]) -> None:
        self._slots.release()
        if future.cancelled() or future.exception() is not None:
            return
        conn, _ = future.result()
        if conn is None:
            return
        if self._closed or len(self._idle) >= self._size:
            self._discard(conn)
        else:
            self._idle.append(conn)

    def _discard(self, conn: Any) -> None:
        """Unbind a connection in a worker thread (unbinding sends a request)."""
        with contextlib.suppress(RuntimeError):  # the executor is shut down: the socket just goes
            self._executor.submit(close, conn)

    # --- worker-thread side ------------------------------------------------------------------

    def _use(self, conn: Any | None, op: Callable[[Any], T]) -> tuple[Any | None, T]:
        """Run op on a pooled connection (or a new one); return the connection to keep."""
        if conn is not None:
            try:
                value = op(conn)
                return self._keep(conn), value  # kept or closed once op is done, not before
            except Down:
                close(conn)  # the server dropped it (restart, idle timeout): try a new one
            except BaseException:
                close(conn)
                raise
        conn = self._connect()
        try:
            value = op(conn)
        except BaseException:
            close(conn)
            raise
        return self._keep(conn), value

    def _keep(self, conn: Any) -> Any | None:
        if self._closed:
            close(conn)
            return None
        return conn
