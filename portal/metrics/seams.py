"""The seams the metrics watch: the user backend, the notifier, and every request."""

from __future__ import annotations

import email.message
import time
from typing import Any

from aiohttp import web

from portal.metrics.core import AUTHZ_ROUTES, USER_OPERATIONS, Metrics
from portal.notify.base import Notifier
from portal.users.base import User, UserBackend


class MeteredUsers:
    """Play UserBackend over another one, counting calls and errors by operation."""

    def __init__(self, inner: UserBackend, metrics: Metrics) -> None:
        self.inner, self._metrics = inner, metrics
        self._calls = {op: metrics.user_calls.labels(op) for op in USER_OPERATIONS}
        self._errors = {op: metrics.user_errors.labels(op) for op in USER_OPERATIONS}
        metrics.watch_pool(getattr(inner, "pool", None))

    async def _call(self, operation: str, *args: Any) -> Any:
        self._calls[operation].inc()
        try:
            return await getattr(self.inner, operation)(*args)
        except Exception:
            self._errors[operation].inc()
            raise

    async def startup_check(self) -> None:
        """Run the inner backend's start-up check."""
        await self.inner.startup_check()

    async def close(self) -> None:
        """Close the inner backend."""
        await self.inner.close()

    def loaded_user(self, identifier: str) -> User | None:
        """Answer from the inner backend's users in memory (portal.sessions.LoadedUserLookup:
        the users file), not counted: no backend call. LookupError when the inner backend holds
        none (LDAP) or has not loaded them yet; the sessions then ask get_user."""
        lookup = getattr(self.inner, "loaded_user", None)
        if lookup is None:
            raise LookupError("the user backend holds no users in memory")
        user: User | None = lookup(identifier)
        return user

    async def get_user(self, identifier: str) -> User | None:
        """Look a user up (counted)."""
        user: User | None = await self._call("get_user", identifier)
        return user

    async def check_password(self, username: str, password: str) -> bool:
        """Check a password (counted; PasswordChangeRequiredError counts as an error too)."""
        ok: bool = await self._call("check_password", username, password)
        return ok

    async def set_password(self, username: str, password: str) -> None:
        """Write a password (counted)."""
        await self._call("set_password", username, password)

    async def healthy(self) -> bool:
        """Tell whether the backend answers (counted)."""
        ok: bool = await self._call("healthy")
        return ok

    async def password_state(self, username: str) -> str | None:
        """Return the account's password state (counted)."""
        state: str | None = await self._call("password_state", username)
        return state

    async def clear_lockout(self, username: str) -> bool:
        """Clear a directory lockout (counted)."""
        cleared: bool = await self._call("clear_lockout", username)
        return cleared


class MeteredNotifier:
    """Play Notifier over another one, counting deliveries by result (rehearsals are not)."""

    def __init__(self, inner: Notifier, metrics: Metrics) -> None:
        self.inner = inner
        self._sent, self._failed = metrics.mail.labels("sent"), metrics.mail.labels("failed")

    async def startup_check(self) -> None:
        """Run the inner notifier's start-up check."""
        await self.inner.startup_check()

    async def send(self, message: email.message.EmailMessage) -> None:
        """Deliver one message, counted as sent or failed; DeliveryError as the inner raises."""
        try:
            await self.inner.send(message)
        except Exception:
            self._failed.inc()
            raise
        self._sent.inc()

    async def rehearse(self, message: email.message.EmailMessage) -> None:
        """Rehearse as the inner notifier does (not counted: nothing is delivered)."""
        await self.inner.rehearse(message)

    async def close(self) -> None:
        """Close the inner notifier."""
        await self.inner.close()


def request_middleware(metrics: Metrics) -> Any:
    """Return the outermost middleware: time each request and count its final status."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        status = 0  # stays 0 when the client went away (CancelledError): answered to no one
        try:
            response: web.StreamResponse = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # redirects are raised; errors_middleware maps the rest
            status = exc.status
            raise
        except Exception:  # pragma: no cover - errors_middleware answers every other error
            status = 500
            raise
        finally:
            if status:
                metrics.record_request(
                    status,
                    request.method,
                    time.perf_counter() - started,
                    authz=request.match_info.route.name in AUTHZ_ROUTES,
                )

    return middleware
