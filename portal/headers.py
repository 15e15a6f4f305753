"""The security headers every response carries, and the page's Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from portal.config import Config

# Set on a request answered for nginx's auth_request only (portal.app's nginx_shortcut): nginx
# keeps none of a page's headers from it (deploy/nginx/portal-authrequest.conf reads Remote-* and
# Location), so none are set.
FOR_NGINX = web.RequestKey("for_nginx", bool)

# JSON routes outside /api/: reset step 2's passkey options, under the path of the step-2 cookie
# its script relies on (portal/handlers/reset.py step2_passkey_get).
_JSON_PATHS = frozenset({"/reset-password/step2/webauthn"})


def is_api(request: web.BaseRequest) -> bool:
    """Tell whether the request is for the JSON API (under /api/, or a JSON route a page's
    script calls): its errors answer `{"status":"KO","message":...}`, never an HTML page."""
    return request.path.startswith("/api/") or request.path in _JSON_PATHS


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


ResponseHook = Callable[[web.BaseRequest, web.StreamResponse], Awaitable[None]]


def page_headers(config: Config) -> list[tuple[str, str]]:
    """Return the security headers every page and API answer carries, as (name, value) pairs
    (but the Cache-Control security_headers adds): CSP, nosniff, no-referrer, DENY framing,
    same-origin opener, and HSTS when the portal is served over https (OWASP's HTTP Security
    Response Headers Cheat Sheet)."""
    fixed = [
        ("Content-Security-Policy", content_security_policy()),
        ("X-Content-Type-Options", "nosniff"),
        # SECURITY: reset links carry a token; no page may leak its URL to another site.
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ]
    if config.portal_is_https:
        fixed.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))
    return fixed


def security_headers(config: Config) -> ResponseHook:
    """Return the on_response_prepare hook that sets the security headers on every response
    (but an answer for nginx's auth_request: FOR_NGINX): page_headers, and Cache-Control:
    no-store on an error or an API answer that set none."""
    fixed = page_headers(config)

    # Built once: nginx's auth_request makes this run for every request to a protected site.
    async def set_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
        if FOR_NGINX in request:
            return
        headers = response.headers
        for name, value in fixed:
            if name not in headers:  # a handler may have set its own (a page's CSP)
                headers[name] = value
        if "Cache-Control" not in headers and (response.status >= 400 or is_api(request)):
            headers["Cache-Control"] = "no-store"

    return set_headers
