"""Assemble the aiohttp application: middlewares, cleanup contexts, routes; no logic."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Middleware

from portal.authz_listener import start_authz_listener
from portal.config import Config
from portal.csrf import csrf_middleware
from portal.deps import Dependencies, build_dependencies
from portal.handlers import assets
from portal.handlers.password import PASSWORD_SETTINGS
from portal.handlers.totp import TOTP_SETTINGS
from portal.handlers.webauthn import script_messages
from portal.headers import FOR_NGINX, security_headers
from portal.i18n import current_language, language_links, language_middleware
from portal.i18n import install as install_gettext
from portal.keys import (
    ADDRESSES,
    AUTHZ,
    CAPTCHA,
    CONFIG,
    ELEVATION,
    IDENTITY_TOKENS,
    METRICS,
    NOTIFIER,
    OUTBOX,
    PASSWORD_SELF_CHANGE,
    QUESTIONS,
    RESET,
    SESSION_RECORDS,
    SESSIONS,
    SIGNIN,
    STORAGE,
    TOTP,
    TOTP_REGISTRATION,
    USERS,
    WEBAUTHN,
)
from portal.logs import NGINX_PATHS
from portal.metrics import (
    MeteredNotifier,
    MeteredUsers,
    Metrics,
    request_middleware,
    start_listener,
)
from portal.metrics.core import AUTHZ_ROUTES
from portal.middlewares import MAX_BODY, Handler, body_size_middleware, errors_middleware
from portal.request_id import request_id_header, request_id_middleware
from portal.routes import setup_routes
from portal.services import build_services

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PURGE_INTERVAL = 600.0

log = logging.getLogger("portal")


@web.middleware
async def nginx_shortcut(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer nginx's auth_request endpoints (NGINX_PATHS, their own routes, no body) with their
    handler and errors_middleware only: nginx asks them before every request to every protected
    site, and the page machinery (language, body size and coding, CSRF, security headers: see
    FOR_NGINX) does nothing for them. Anything else (another method, an unknown path under
    them, a request with a body) goes the usual way.

    SECURITY: judged by the matched route's name (AUTHZ_ROUTES), not the path: every path
    matches a route here (portal/routes.py's fallback answers 404 and 405), so a path prefix
    would let a browser-rendered 404/405 go without its security headers."""
    if (
        request.path.startswith(NGINX_PATHS)
        and request.match_info.route.name in AUTHZ_ROUTES
        and not request.body_exists
    ):
        request[FOR_NGINX] = True
        response = await errors_middleware(request, request.match_info.handler)
        # SECURITY: an error answered here (a backend that is down) is never cached either, as
        # the skipped security-headers hook would have said; the verdicts set it themselves.
        response.headers.setdefault("Cache-Control", "no-store")
        return response
    return await handler(request)


async def _backends(app: web.Application) -> AsyncIterator[None]:
    """Run every backend's start-up check before the port opens; close them at shutdown."""
    storage, users, notifier = app[STORAGE], app[USERS], app[NOTIFIER]
    records = app[SESSION_RECORDS]
    await storage.startup_check()
    try:
        if records is not None:
            await records.startup_check()
        await users.startup_check()
        if not app[CONFIG].notifier.disable_startup_check:
            await notifier.startup_check()
        yield
    finally:
        await notifier.close()
        await users.close()
        if records is not None:
            await records.close()
        await storage.close()


async def _identity_tokens(app: web.Application) -> AsyncIterator[None]:
    """Load (or make) the identity token's signing key before the port opens."""
    await app[IDENTITY_TOKENS].start()
    yield


async def _session_invalidations(app: web.Application) -> AsyncIterator[None]:
    """With session.redis, drop from this replica's cache the sessions any replica ends."""
    records = app[SESSION_RECORDS]
    if records is None:
        yield
        return
    task = asyncio.create_task(records.listen(app[SESSIONS].invalidate), name="session-ended")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _captcha(app: web.Application) -> AsyncIterator[None]:
    """Open the CAPTCHA vendor's connection pool while the app runs."""
    captcha = app[CAPTCHA].captcha
    if captcha is None:
        yield
        return
    await captcha.start()
    try:
        yield
    finally:
        await captcha.close()


async def _metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """Open the metrics listener (telemetry.metrics) with the app, and close it with it."""
    metrics = app[METRICS]
    if metrics is None:
        yield
        return
    runner = await start_listener(metrics, app[CONFIG].telemetry.metrics)
    try:
        yield
    finally:
        await runner.cleanup()


async def _authz_listener(app: web.Application) -> AsyncIterator[None]:
    """Open the authz listener (server.authz_address) with the app, and close it with it."""
    address = app[CONFIG].server.authz_address
    if address is None:
        yield
        return
    listener = await start_authz_listener(app, address)
    try:
        yield
    finally:
        await listener.close()


async def _purge_forever(app: web.Application) -> None:
    while True:
        try:
            await app[RESET].purge()
            await app[SESSIONS].purge()
            await app[ELEVATION].purge()
        except Exception:
            log.exception("purging expired records failed")
        await asyncio.sleep(PURGE_INTERVAL)


async def _background(app: web.Application) -> AsyncIterator[None]:
    """Deliver queued mail and purge expired records while the app runs."""
    app[OUTBOX].start()
    purge = asyncio.create_task(_purge_forever(app), name="purge")
    yield
    purge.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await purge
    await app[OUTBOX].stop()


def create_app(config: Config, deps: Dependencies | None = None) -> web.Application:
    """Build the application for production (deps=None) or for tests (deps given).

    Every service comes from build_services (portal/services.py); this wires them to the app.
    """
    deps = deps or build_dependencies(config)
    metrics: Metrics | None = None
    middlewares: list[Middleware] = [
        request_id_middleware,
        nginx_shortcut,
        errors_middleware,
        body_size_middleware,
        csrf_middleware,
    ]
    if config.telemetry.metrics.enabled:
        # One registry per app; every audit event, backend call and mail is counted on its way.
        metrics = Metrics(outbox=deps.storage, clock=deps.clock)
        deps = dataclasses.replace(
            deps,
            audit=metrics.audit_sink(deps.audit),
            users=MeteredUsers(deps.users, metrics),
            notifier=MeteredNotifier(deps.notifier, metrics),
        )
        middlewares.insert(0, request_middleware(metrics))
    services = build_services(config, deps)
    # Before the error pages (errors_middleware): they speak the request's language too.
    middlewares.insert(
        middlewares.index(errors_middleware),
        language_middleware(services.catalogs, config.default_language),
    )
    app = web.Application(
        middlewares=middlewares,
        client_max_size=MAX_BODY,
        # SECURITY: request bodies are never decompressed: browsers do not compress them, and a
        # body that does not match its Content-Encoding failed inside aiohttp's parser (a logged
        # traceback per request). body_size_middleware refuses any coding but identity (415).
        handler_args={"auto_decompress": False},
    )
    app[CONFIG] = config
    app[METRICS] = metrics
    app[USERS] = deps.users
    app[STORAGE] = deps.storage
    app[NOTIFIER] = deps.notifier
    app[OUTBOX] = services.outbox
    app[SESSIONS] = services.sessions
    app[SESSION_RECORDS] = deps.sessions
    app[AUTHZ] = services.authz
    app[ADDRESSES] = services.addresses
    app[SIGNIN] = services.signin
    app[RESET] = services.reset
    app[PASSWORD_SELF_CHANGE] = services.password_self_change
    app[QUESTIONS] = services.questions
    app[CAPTCHA] = services.captcha
    app[ELEVATION] = services.elevation
    app[TOTP] = services.totp
    app[TOTP_REGISTRATION] = services.totp_registration
    app[WEBAUTHN] = services.webauthn
    app[IDENTITY_TOKENS] = services.identity_tokens
    loader = jinja2.FileSystemLoader(TEMPLATES)
    env = aiohttp_jinja2.setup(app, loader=loader, autoescape=True)
    install_gettext(env)
    # What every page shows of the configuration: its theme and whose pages they are.
    env.globals.update(
        theme=config.theme,
        organization=config.organization_name,
        logo=assets.asset(config, "logo.png") is not None,
        favicon=assets.asset(config, "favicon.ico") is not None,
        # <html lang>: the language the page is rendered in.
        current_language=current_language,
        # The language switch on every page (base.html).
        language_links=language_links,
        # What the passkey script may say, in the page's language (_macros.html webauthn_script).
        passkey_messages=script_messages,
        # The signed-in page links to the TOTP settings while TOTP is on.
        totp_settings_url=None if config.totp.disable else TOTP_SETTINGS,
        # ... and to the password change unless authentication_backend.password_change.disable.
        password_settings_url=(
            None if config.authentication_backend.password_change.disable else PASSWORD_SETTINGS
        ),
    )
    app.on_response_prepare.append(security_headers(config))
    app.on_response_prepare.append(request_id_header)
    app.cleanup_ctx.append(_backends)
    app.cleanup_ctx.append(_identity_tokens)
    app.cleanup_ctx.append(_session_invalidations)
    app.cleanup_ctx.append(_captcha)
    app.cleanup_ctx.append(_background)
    app.cleanup_ctx.append(_metrics_listener)
    app.cleanup_ctx.append(_authz_listener)
    setup_routes(app)
    return app
