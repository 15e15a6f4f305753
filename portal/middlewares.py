"""Cross-cutting request handling: error pages and JSON errors, body size and coding.

The CSRF check is portal/csrf.py; the security headers are portal/headers.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from portal.errors import (
    PayloadTooLargeError,
    PortalError,
    UnsupportedMediaTypeError,
)
from portal.headers import is_api
from portal.i18n import N_
from portal.logs import quoted

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 64 * 1024
NO_SUCH_ROUTE = "no_such_route"  # the fallback route's name: it answers 404/405, reads nothing
log = logging.getLogger("portal.http")

REASONS = {
    400: N_("The request could not be understood."),
    401: N_("You need to sign in to see this page."),
    403: N_("You are not allowed to see this page."),
    404: N_("There is no page at this address."),
    405: N_("This page cannot be used that way."),
    413: N_("The request is too large."),
    415: N_("The request body is in a form this page does not take."),
    429: N_("Too many attempts. Please wait a moment and try again."),
    500: N_("Something went wrong on our side. Please try again later."),
    503: N_("This service is temporarily unavailable. Please try again in a few minutes."),
}


def _minutes(retry_after: str | None) -> int | None:
    """Return Retry-After (seconds) in whole minutes, rounded up; None when absent or a date."""
    if retry_after is None or not re.fullmatch(r"[0-9]{1,9}", retry_after):
        return None
    return max(1, -(-int(retry_after) // 60))


def api_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Return the JSON API's error answer: `{"status": "KO", "message": message}` and headers."""
    response = web.json_response({"status": "KO", "message": message}, status=status)
    response.headers.update(headers or {})
    return response


def error_response(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Render an error as JSON for the API, or as errors/{status}.html or errors/error.html."""
    if is_api(request):
        return api_error(status, message, headers)
    context: dict[str, Any] = {
        "status": status,
        "message": message,
        "retry_minutes": _minutes((headers or {}).get("Retry-After")),
    }
    try:
        env = aiohttp_jinja2.get_env(request.app)
        name = env.select_template([f"errors/{status}.html", "errors/error.html"]).name
        response = aiohttp_jinja2.render_template(name or "", request, context, status=status)
    except jinja2.TemplateError:
        log.exception("error template failed")
        response = web.Response(text=message, status=status)
    response.headers.update(headers or {})
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to one clear page or JSON body; never show a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own 404, 405 and 413 keep their status; the words are ours.
        message = REASONS.get(exc.status, exc.reason)
        keep = {k: v for k, v in exc.headers.items() if k in ("Retry-After", "Allow", "Location")}
        return error_response(request, exc.status, message, keep)
    except PortalError as exc:
        if exc.status >= 500:
            log.error("request failed: %s %s: %s", request.method, quoted(request.path), exc)
        return error_response(request, exc.status, exc.public_message, exc.response_headers())
    except Exception:
        # SECURITY: the traceback goes to the log only; the client sees a generic page.
        log.exception("unhandled error: %s %s", quoted(request.method, 16), quoted(request.path))
        return error_response(request, 500, REASONS[500])


def check_body(request: web.BaseRequest) -> None:
    """Refuse a request body over MAX_BODY bytes (PayloadTooLargeError, 413) or in a content
    coding (UnsupportedMediaTypeError, 415) before anything reads it."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise PayloadTooLargeError()
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in ("identity", "") and request.body_exists:
        # RFC 9110 section 15.5.16: 415 for a content coding the server does not accept.
        raise UnsupportedMediaTypeError("Send the request body without a Content-Encoding.")


@web.middleware
async def body_size_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse request bodies over 64 KiB, or in a content coding, before anything reads them
    (check_body)."""
    check_body(request)
    return await handler(request)
