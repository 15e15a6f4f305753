"""Cross-cutting request handling: error pages, security headers, body size."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web

from portal.bodies import read_form
from portal.config import Config
from portal.errors import (
    BadRequestError,
    CsrfError,
    PayloadTooLargeError,
    PortalError,
    UnsupportedMediaTypeError,
)
from portal.keys import CONFIG
from portal.logs import quoted

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 64 * 1024
CSRF_FIELD = "csrf_token"
NO_SUCH_ROUTE = "no_such_route"  # the fallback route's name: it answers 404/405, reads nothing
_CSRF_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
_NEW_CSRF = web.RequestKey("new_csrf", str)
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
log = logging.getLogger("portal.http")

_REASONS = {
    400: "The request could not be understood.",
    401: "You need to sign in to see this page.",
    403: "You are not allowed to see this page.",
    404: "There is no page at this address.",
    405: "This page cannot be used that way.",
    413: "The request is too large.",
    415: "The request body is in a form this page does not take.",
    429: "Too many attempts. Please wait a moment and try again.",
    500: "Something went wrong on our side. Please try again later.",
    503: "This service is temporarily unavailable. Please try again in a few minutes.",
}


def is_api(request: web.Request) -> bool:
    """Tell whether the request is for the JSON API."""
    return request.path.startswith("/api/")


def _minutes(retry_after: str | None) -> int | None:
    """Return Retry-After (seconds) in whole minutes, rounded up; None when absent or a date."""
    if retry_after is None or not re.fullmatch(r"[0-9]{1,9}", retry_after):
        return None
    return max(1, -(-int(retry_after) // 60))


def error_response(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Render an error as JSON for the API, or as errors/{status}.html or errors/error.html."""
    if is_api(request):
        response = web.json_response({"status": "KO", "message": message}, status=status)
    else:
        context: dict[str, Any] = {"status": status, "message": message,
                                   "retry_minutes": _minutes((headers or {}).get("Retry-After"))}
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
        message = _REASONS.get(exc.status, exc.reason)
        keep = {k: v for k, v in exc.headers.items() if k in ("Retry-After", "Allow", "Location")}
        return error_response(request, exc.status, message, keep)
    except PortalError as exc:
        if exc.status >= 500:
            log.error("request failed: %s %s: %s", request.method, quoted(request.path), exc)
        return error_response(request, exc.status, exc.public_message, exc.response_headers())
    except Exception:
        # SECURITY: the traceback goes to the log only; the client sees a generic page.
        log.exception("unhandled error: %s %s", quoted(request.method, 16), quoted(request.path))
        return error_response(request, 500, _REASONS[500])


@web.middleware
async def body_size_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse request bodies over 64 KiB, or in a content coding, before anything reads them."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise PayloadTooLargeError()
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in ("identity", "") and request.body_exists:
        # RFC 9110 section 15.5.16: 415 for a content coding the server does not accept.
        raise UnsupportedMediaTypeError("Send the request body without a Content-Encoding.")
    return await handler(request)


def content_security_policy(form_action: str = "'self'", origins: Sequence[str] = ()) -> str:
    """Return the portal's CSP: 'self' only, plus origins for a third-party CAPTCHA widget."""
    policy = (
        f"default-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
        f"form-action {form_action}; object-src 'none'"
    )
    if origins:
        # SECURITY: only on pages showing a vendor's widget, only that vendor's origins.
        extra = " ".join(origins)
        policy += "".join(
            f"; {directive} 'self' {extra}"
            for directive in ("script-src", "frame-src", "connect-src", "style-src")
        )
    return policy


ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


def security_headers(config: Config) -> ResponseHook:
    """Return the on_response_prepare hook that sets the security headers on every response."""
    fixed = [
        ("Content-Security-Policy", content_security_policy()),
        ("X-Content-Type-Options", "nosniff"),
        # SECURITY: reset links carry a token; no page may leak its URL to another site.
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ]
    if config.portal_url.startswith("https://"):
        fixed.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))

    # Built once: nginx's auth_request makes this run for every request to a protected site.
    async def set_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        for name, value in fixed:
            if name not in headers:  # a handler may have set its own (a page's CSP)
                headers[name] = value
        if "Cache-Control" not in headers and (response.status >= 400 or is_api(request)):
            headers["Cache-Control"] = "no-store"

    return set_headers


def csrf_cookie_name(request: web.Request) -> str:
    """Name the CSRF cookie; under https the __Host- prefix keeps sibling subdomains out."""
    https = request.app[CONFIG].portal_url.startswith("https://")
    return "__Host-portal_csrf" if https else "portal_csrf"


def csrf_token(request: web.Request) -> str:
    """Return the token forms must echo in their csrf_token field, minting one if needed."""
    if _NEW_CSRF in request:
        return request[_NEW_CSRF]
    current = request.cookies.get(csrf_cookie_name(request), "")
    if _CSRF_SHAPE.fullmatch(current):
        return current
    request[_NEW_CSRF] = secrets.token_urlsafe(32)
    return request[_NEW_CSRF]


def _same_origin(request: web.Request) -> bool:
    # SECURITY: browsers label cross-site requests (Sec-Fetch-Site) and name their origin; a
    # foreign one is refused outright. Pages under Referrer-Policy: no-referrer make browsers
    # send "Origin: null" even to their own site, so null falls back to the CSRF token alone.
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True
    portal = urlsplit(request.app[CONFIG].portal_url)
    return origin == f"{portal.scheme}://{portal.netloc}"


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site writes: forms echo the CSRF cookie, the API takes JSON only."""
    routed = request.match_info.route.name != NO_SUCH_ROUTE
    if request.method in _UNSAFE and routed and request.match_info.http_exception is None:
        # SECURITY: browsers send Origin on cross-site POSTs; a foreign one is refused outright.
        if not _same_origin(request):
            raise CsrfError()
        if is_api(request):
            # SECURITY: a cross-site page cannot send application/json without a CORS preflight.
            if request.content_type != "application/json":
                raise BadRequestError("Send the request body as application/json.")
        else:
            sent = (await read_form(request)).get(CSRF_FIELD, "")
            cookie = request.cookies.get(csrf_cookie_name(request), "")
            # SECURITY: compared as bytes: compare_digest refuses non-ASCII str (a 500 before).
            if not (
                _CSRF_SHAPE.fullmatch(cookie)
                and hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), cookie.encode())
            ):
                raise CsrfError()
    response = await handler(request)
    if _NEW_CSRF in request:
        https = request.app[CONFIG].portal_url.startswith("https://")
        response.set_cookie(
            csrf_cookie_name(request),
            request[_NEW_CSRF],
            path="/",
            secure=https,
            httponly=True,
            samesite="Strict",
        )
    return response
