"""What every handler needs: the client's address, a cookie's value, the signed-in session, a
validated JSON body, the CAPTCHA check and the page renderer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from pydantic import BaseModel, ValidationError

from portal.bodies import read_json, request_host
from portal.captcha import CaptchaWidget
from portal.config import CaptchaEndpoint, SessionCookieConfig, is_loopback_host
from portal.csrf import CSRF_FIELD, csrf_token
from portal.errors import BadRequestError
from portal.forwarded import RequestView
from portal.headers import content_security_policy
from portal.i18n import N_
from portal.keys import ADDRESSES, CAPTCHA, CONFIG, SESSIONS
from portal.sessions import Session
from portal.signin import cookie_for_host, safe_redirect

Body = TypeVar("Body", bound=BaseModel)


def see_other(path: str) -> web.HTTPSeeOther:
    """Return a 303 to a fixed, secret-free address that no cache may keep (redirect-after-POST).

    A result page reached this way is reloaded, not resubmitted, by a refresh (RFC 9110 15.4.4).
    """
    response = web.HTTPSeeOther(path)
    response.headers["Cache-Control"] = "no-store"
    return response


def request_ip(request: web.Request) -> str:
    """Return the client's address as text (X-Forwarded-For only from trusted proxies).

    Raises BadRequestError (400) when it cannot be known: a trusted proxy wrote a hop that is not
    an address, or a unix-socket peer sent none (portal/forwarded.py).
    """
    address = request.app[ADDRESSES].parsed(request)
    if address is None:
        # SECURITY: never fall back to the proxy's address (its buckets, its network rules).
        raise BadRequestError(
            N_("The request could not be understood: its client address is unreadable.")
        )
    return str(address)


# A browser sends one value per cookie that matches (domain, path): a parent-domain one left
# from before and a host one, say. A few are tried; more than this is not a browser.
MAX_COOKIE_VALUES = 4


def cookie_values(request: RequestView, name: str) -> list[str]:
    """Return every non-empty value sent under the cookie name, in order, at most four.

    Reads only that name: aiohttp's request.cookies parses every cookie into Morsels (a
    measurable share of nginx's hot path) and keeps only the last value of a name, which may be a
    stale one scoped to a parent domain (RFC 6265 section 5.4 orders by path, not freshness).
    """
    found: list[str] = []
    for header in request.headers.getall("Cookie", ()):
        for pair in header.split(";"):
            key, equals, value = pair.partition("=")
            if equals and key.strip() == name:
                value = value.strip().strip('"')
                if value and value not in found:
                    found.append(value)
                    if len(found) == MAX_COOKIE_VALUES:
                        return found
    return found


def route_path(request: web.Request, name: str) -> str | None:
    """Return the path of the portal's route of that name (portal/routes.py), or None when the
    configuration left it out (totp.disable, webauthn.disable, enable_passkey_login, ...)."""
    named = request.app.router.named_resources()
    return named[name].canonical if name in named else None


def session_cookie(request: web.Request) -> SessionCookieConfig:
    """Return the cookie domain this request's Host belongs to (else the first one).

    Raises BadRequestError (400) for a Host header that cannot be read (portal/bodies.py).
    """
    config = request.app[CONFIG]
    return cookie_for_host(config, request_host(request)) or config.session.cookies[0]


async def current_session(request: web.Request) -> Session | None:
    """Return the first live session among the values sent under the session cookie's name.

    The cookie is the one of the domain the Host belongs to (session_cookie: BadRequestError,
    400, for a Host that cannot be read); None when no value opens a live session.
    """
    cookie = session_cookie(request)
    return await request.app[SESSIONS].first_live(cookie_values(request, cookie.name or ""), cookie)


async def require_session(request: web.Request, back_to: str) -> Session:
    """Return the signed-in session, or answer 303 to the sign-in page, whose `rd` leads back to
    the portal's path back_to once signed in (raises web.HTTPSeeOther; BadRequestError as
    current_session)."""
    session = await current_session(request)
    if session is None:
        target = request.app[CONFIG].portal_url + back_to
        raise web.HTTPSeeOther(f"/?rd={quote(target, safe='')}")
    return session


async def parse_json(request: web.Request, model: type[Body]) -> Body:
    """Parse the JSON body into model, or raise BadRequestError naming the bad fields."""
    data = await read_json(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}))
        raise BadRequestError(f"The request body needs valid fields: {fields}.") from None


async def require_captcha(
    request: web.Request,
    endpoint: CaptchaEndpoint,
    answer: Mapping[str, str] | str | None,
    username: str | None = None,
) -> None:
    """Raise CaptchaFailedError unless the form (or the JSON's `captcha`) passes the check."""
    guard = request.app[CAPTCHA]
    if isinstance(answer, Mapping):
        answer = answer.get(guard.captcha.field) if guard.captcha else None
    await guard.check(endpoint, answer, request_ip(request), username)


def captcha_widget(request: web.Request, endpoint: CaptchaEndpoint | None) -> CaptchaWidget | None:
    """Return the widget a form shows whenever the CAPTCHA is enabled on it, else None."""
    guard = request.app[CAPTCHA]
    return guard.widget() if endpoint is not None and guard.enabled(endpoint) else None


async def captcha_widget_if_needed(
    request: web.Request, endpoint: CaptchaEndpoint, username: str | None = None
) -> CaptchaWidget | None:
    """Return the widget when this request must carry a CAPTCHA (sign-in: after failures)."""
    guard = request.app[CAPTCHA]
    if not await guard.needed(endpoint, request_ip(request), username):
        return None
    return guard.widget()


def csp_for(
    request: web.Request, captcha: CaptchaWidget | None, form_action: str = "'self'"
) -> str:
    """Return the page's Content-Security-Policy; a vendor widget adds the vendor's origins."""
    origins = request.app[CAPTCHA].csp_origins() if captcha is not None else ()
    return content_security_policy(form_action, origins)


def render_page(
    request: web.Request,
    template: str,
    status: int = 200,
    *,
    form_action: str = "'self'",
    **context: Any,
) -> web.Response:
    """Render templates/pages/{template} with the form's CSRF token, never cached, under the
    page's Content-Security-Policy (form_action; a `captcha` widget in context adds its vendor).
    """
    context.update(csrf_token=csrf_token(request), csrf_field=CSRF_FIELD)
    captcha = context.setdefault("captcha", None)
    response = aiohttp_jinja2.render_template(f"pages/{template}", request, context, status=status)
    # SECURITY: pages hold a form's CSRF token, or follow from a reset token: no cache keeps them.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = csp_for(request, captcha, form_action)
    return response


def redirecting_form_action(request: web.Request) -> str:
    """Return the CSP form-action of a form whose answer redirects to a protected site."""
    # SECURITY: browsers apply form-action to the redirects a form submission follows, and this
    # form ends in a redirect to a protected site: allow exactly what safe_redirect allows (the
    # cookie domains and their subdomains, any port), nothing else.
    targets: list[str] = []
    for cookie in request.app[CONFIG].session.cookies:
        scheme = "http" if is_loopback_host(cookie.domain) else "https"
        targets += [
            f"https://{cookie.domain}:*",
            f"{scheme}://{cookie.domain}:*",
            f"https://*.{cookie.domain}:*",
        ]
    return f"'self' {' '.join(dict.fromkeys(targets))}"


def landing(request: web.Request, rd: str | None) -> str:
    """Return where a browser goes once signed in: rd if safe_redirect allows it, else the
    cookie domain's default_redirection_url, else the portal's own page."""
    return safe_redirect(request.app[CONFIG], rd) or (
        session_cookie(request).default_redirection_url or "/"
    )
