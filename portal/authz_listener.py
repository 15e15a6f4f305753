"""The authz listener (`server.authz_address`): nginx's auth_request endpoints on a port of its own.

nginx asks /api/authz/auth-request before every request to every protected site. On the portal's
own listener each of those asks goes through the aiohttp application's machinery (router,
middleware chain, response signals), which costs more CPU than the verdict itself. Here the same
two endpoints are served by aiohttp's low-level server (aiohttp.web.Server: a handler, no
application), and answer exactly what they answer on the portal's listener (handlers/authz.py
`decide`): the verdict, the Remote-* headers, where to sign in, `Cache-Control: no-store`, an
empty body, the request id (a trusted proxy's X-Request-Id, else a new one) in X-Request-Id and
in the log lines, the client's address read through server.trusted_proxies, the access line at
debug, the metrics' request counts. A backend that is down is the same 503 for everyone.

Only GET and HEAD on /api/authz/auth-request and /api/verify are served: another method is a 405,
another path a 404 (an encoded slash is no slash, as in the portal's router), each with the
JSON body and the page headers the portal's listener gives them. A request with a body (nginx's
auth_request sends none) is answered as the portal's listener answers it: 413 over 64 KiB, 415
in a content coding, else the verdict with the page headers, logged at info. The portal's
listener keeps serving both endpoints too, so the nginx snippets may point at either
(deploy/nginx/portal-authrequest.conf). Not in Authelia, which has one listener.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from portal.config.types import Address
from portal.errors import PortalError
from portal.handlers.authz import decide
from portal.headers import FOR_NGINX, security_headers
from portal.keys import ADDRESSES, AUTHZ, CONFIG, METRICS
from portal.listen import listen
from portal.logs import SafeAccessLogger, current_request_id, quoted
from portal.middlewares import REASONS, api_error, check_body
from portal.request_id import HEADER, assign_request_id

AUTHZ_PATHS = frozenset({"/api/authz/auth-request", "/api/verify"})
METHODS = frozenset({"GET", "HEAD"})

log = logging.getLogger("portal.http")

LowLevelHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def authz_handler(app: web.Application) -> LowLevelHandler:
    """Return the low-level handler answering auth_request for `app` (its Authorizer, client
    addresses, metrics and configuration), as described in the module's docstring."""
    authz, addresses, metrics = app[AUTHZ], app[ADDRESSES], app[METRICS]
    page_headers = security_headers(app[CONFIG])

    async def answer(request: web.BaseRequest) -> tuple[web.StreamResponse, bool]:
        """Return the answer and whether it is a verdict (for the metrics)."""
        # As the portal's listener: a request with a body (nginx's auth_request sends none)
        # goes the usual way there (portal.app's nginx_shortcut): its body is checked first
        # (413, 415), its answer has the page headers and its access line is at info.
        nginx = not request.body_exists
        # path_safe keeps %2F encoded, as the portal's router matches: /api%2Fverify is no path
        # of ours there either.
        known = request.rel_url.path_safe in AUTHZ_PATHS
        verdict = known and request.method in METHODS
        try:
            if not nginx:
                check_body(request)
            if not known:
                response = api_error(404, REASONS[404])
            elif not verdict:
                response = api_error(405, REASONS[405], {"Allow": "GET, HEAD"})
            elif nginx:
                request[FOR_NGINX] = True
                return await decide(authz, addresses, request), True
            else:
                response = await decide(authz, addresses, request)
        except PortalError as exc:
            if exc.status >= 500:
                log.error("request failed: %s %s: %s", request.method, quoted(request.path), exc)
            response = api_error(exc.status, exc.public_message, exc.response_headers())
        except Exception:
            # SECURITY: the traceback goes to the log only; nginx gets a bare 500.
            log.exception(
                "unhandled error: %s %s", quoted(request.method, 16), quoted(request.path)
            )
            response = api_error(500, REASONS[500])
        if FOR_NGINX in request:
            # SECURITY: as every answer to nginx (handlers/authz.py decide): never cached.
            response.headers.setdefault("Cache-Control", "no-store")
        else:
            await page_headers(request, response)
        return response, verdict

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = assign_request_id(request, addresses)
        token = current_request_id.set(request_id)
        try:
            response, verdict = await answer(request)
        finally:
            current_request_id.reset(token)
        response.headers[HEADER] = request_id
        if metrics is not None:
            elapsed = time.perf_counter() - started
            metrics.record_request(response.status, request.method, elapsed, authz=verdict)
        return response

    return handle


async def start_authz_listener(app: web.Application, address: Address) -> web.ServerRunner:
    """Listen on `address` (server.authz_address: tcp://host:port or unix:///path) with
    authz_handler(app); return the runner, to be cleaned up with the app. Raises
    StartupCheckError naming server.authz_address when it cannot listen there."""
    # SECURITY: bodies are never decompressed, as on the portal's listener (portal.app): one
    # that does not match its Content-Encoding failed inside aiohttp's parser, a traceback each.
    server = web.Server(
        authz_handler(app), access_log_class=SafeAccessLogger, auto_decompress=False
    )
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    unix = address.path if address.scheme == "unix" else None
    await listen(
        runner, "server.authz_address", address, unix=unix, host=address.host, port=address.port
    )
    log.info("nginx's auth_request endpoints also served on %s (server.authz_address)", address)
    return runner
