"""The sign-in page, its JSON twin, and sign-out."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from portal.bodies import read_form, read_json, request_host
from portal.config import SessionCookieConfig
from portal.errors import (
    CaptchaFailedError,
    PasswordChangeRequiredError,
    SignInFailedError,
    WebAuthnFailedError,
)
from portal.handlers.common import (
    captcha_widget_if_needed,
    cookie_values,
    current_session,
    landing,
    parse_json,
    redirecting_form_action,
    render_page,
    request_ip,
    require_captcha,
    route_path,
    session_cookie,
)
from portal.handlers.second_factor import (
    needs_two_factors,
    second_step_first,
    totp_page_url,
    user_of,
)
from portal.handlers.start import forgot_password_url
from portal.i18n import N_
from portal.keys import CAPTCHA, CONFIG, SESSIONS, SIGNIN, WEBAUTHN
from portal.session_cookies import cookie_attributes
from portal.sessions import TWO_FACTORS
from portal.signin import safe_redirect
from portal.users.base import User


def _page(request: web.Request, status: int = 200, **context: Any) -> web.Response:
    return render_page(
        request,
        "signin.html",
        status,
        form_action=redirecting_form_action(request),
        forgot_url=forgot_password_url(request),
        **context,
    )


# A form sent without a solution came from a page that showed no widget (the check is asked for
# only after failures, and those may have been another address's) or left it untouched: it was
# not failed, so the page asks for the check it now shows.
COMPLETE_THE_CHECK = N_("Please complete the anti-robot check shown below, then sign in again.")
SIGNED_OUT = "signed_out"


async def signin_get(request: web.Request) -> web.Response:
    """Show the sign-in form, or send a signed-in user where they were going."""
    rd = request.query.get("rd")
    session = await current_session(request)
    if session is not None:
        target = safe_redirect(request.app[CONFIG], rd)
        # nginx sends a one-factor session here from a two_factor site: ask for the code.
        if session.level < TWO_FACTORS and needs_two_factors(request, user_of(session), target):
            raise web.HTTPFound(totp_page_url(target))
        if target:
            raise web.HTTPFound(target)
        return _page(
            request,
            signed_in=session.display_name or session.username,
            questions_url=route_path(request, "security_questions"),
        )
    target = safe_redirect(request.app[CONFIG], rd)
    webauthn = request.app[CONFIG].webauthn
    return _page(
        request,
        rd=rd or "",
        captcha=await captcha_widget_if_needed(request, "login"),
        signed_out=SIGNED_OUT in request.query,
        passkey_login=webauthn.enable_passkey_login and not webauthn.disable,
        # After a passkey sign-in the page goes to the second step, which sends the browser
        # on to the target (or asks for a second factor when the target needs one).
        passkey_done=totp_page_url(target) if target else "/",
    )


async def signin_post(request: web.Request) -> web.Response:
    """Check the credentials, rotate the session, and redirect."""
    fields = await read_form(request)
    username, rd = fields.get("username", ""), fields.get("rd", "")
    remember = fields.get("remember_me") in ("on", "true", "1")
    # SECURITY: where to go is decided before a session exists, so nothing about the target can
    # fail after one is opened and leave it without its cookie.
    target = safe_redirect(request.app[CONFIG], rd)
    going_to = landing(request, rd)
    try:
        await require_captcha(request, "login", fields, username)
        user, value, cookie = await request.app[SIGNIN].sign_in(
            username,
            fields.get("password", ""),
            request_ip(request),
            remember_me=remember,
            host=request_host(request),
            user_agent=request.headers.get("User-Agent", ""),
        )
    except PasswordChangeRequiredError as exc:
        # Told only to who proved the password; the form's link leads to the reset.
        return _page(
            request,
            status=exc.status,
            error=exc.public_message,
            must_change=True,
            username=username[:256],
            rd=rd,
        )
    except (SignInFailedError, CaptchaFailedError) as exc:
        captcha = await captcha_widget_if_needed(request, "login", username)
        # A form refused for its CAPTCHA (failed or unknowable) is 400, as on the reset pages.
        status = 401 if isinstance(exc, SignInFailedError) else 400
        error = exc.public_message
        guard = request.app[CAPTCHA]
        unsolved = guard.captcha is not None and not fields.get(guard.captcha.field)
        if type(exc) is CaptchaFailedError and unsolved:
            error = COMPLETE_THE_CHECK
        return _page(
            request, status=status, error=error, username=username[:256], rd=rd, captcha=captcha
        )
    going_to = await after_first_factor(request, user, target, value, going_to)
    response = web.HTTPFound(going_to)
    await rotate_session_cookie(request, response, value, cookie, remember)
    raise response


async def after_first_factor(
    request: web.Request, user: User, target: str | None, value: str, going_to: str
) -> str:
    """Return where a browser goes once its first factor opened the session `value`: the
    second step when target (or, with no target, the portal's rules) asks for one, else
    going_to. SECURITY: if deciding fails, the session is ended, not left open without its
    cookie ever reaching the browser."""
    try:
        if await second_step_first(request, user, target):
            return totp_page_url(target)
    except BaseException:
        await request.app[SESSIONS].destroy(value)
        raise
    return going_to


async def rotate_session_cookie(
    request: web.Request,
    response: web.StreamResponse,
    value: str,
    cookie: SessionCookieConfig,
    remember: bool,
) -> None:
    """Set the new session's cookie on response, ending every session the browser carried."""
    # SECURITY: a new session id at sign-in; whatever sessions the browser carried are ended.
    for old in cookie_values(request, cookie.name or ""):
        await request.app[SESSIONS].destroy(old)
    response.set_cookie(cookie.name or "", value, **cookie_attributes(cookie, remember_me=remember))


class FirstFactorBody(BaseModel):
    """POST /api/firstfactor (Authelia's names)."""

    model_config = ConfigDict(extra="ignore", str_max_length=4096, populate_by_name=True)

    username: str
    password: str
    keep_me_logged_in: bool = Field(False, alias="keepMeLoggedIn")
    target_url: str | None = Field(None, alias="targetURL")
    captcha: str | None = None


async def api_firstfactor_post(request: web.Request) -> web.Response:
    """Sign in from a script or a single-page app."""
    body = await parse_json(request, FirstFactorBody)
    await require_captcha(request, "login", body.captcha, body.username)
    target = safe_redirect(request.app[CONFIG], body.target_url)
    try:
        user, value, cookie = await request.app[SIGNIN].sign_in(
            body.username,
            body.password,
            request_ip(request),
            remember_me=body.keep_me_logged_in,
            host=request_host(request),
            user_agent=request.headers.get("User-Agent", ""),
        )
    except (SignInFailedError, PasswordChangeRequiredError) as exc:
        return web.json_response({"status": "KO", "message": exc.public_message}, status=401)
    data = {}
    # Authelia's Handle1FAResponse: a target that needs two factors is not named yet; the
    # client asks for the code (POST /api/secondfactor/totp) and is sent there after it.
    if target and not needs_two_factors(request, user, target):
        data["redirect"] = target
    response = web.json_response({"status": "OK", "data": data} if data else {"status": "OK"})
    await rotate_session_cookie(request, response, value, cookie, body.keep_me_logged_in)
    return response


async def _sign_out(request: web.Request, response: web.StreamResponse) -> None:
    cookie = session_cookie(request)
    for value in cookie_values(request, cookie.name or ""):
        await request.app[SESSIONS].destroy(value)
    attributes = cookie_attributes(cookie, remember_me=False)
    response.del_cookie(cookie.name or "", domain=attributes.get("domain"), path="/")


async def logout_get(request: web.Request) -> web.Response:
    """End the session and go back to the sign-in page (or a safe rd)."""
    target = safe_redirect(request.app[CONFIG], request.query.get("rd"))
    response = web.HTTPFound(target or f"/?{SIGNED_OUT}")
    await _sign_out(request, response)
    raise response


async def api_logout_post(request: web.Request) -> web.Response:
    """End the session."""
    response = web.json_response({"status": "OK"})
    await _sign_out(request, response)
    return response


# -- passkey sign-in (webauthn.enable_passkey_login) ---------------------------------------------

PASSKEY_LOGIN = "/api/firstfactor/passkey"
# The sign-in's passkey challenge, sealed (WebAuthnService.seal), for this route only.
PASSKEY_LOGIN_COOKIE = "portal_passkey_login"


async def api_passkey_get(request: web.Request) -> web.Response:
    """Answer assertion options for a discoverable credential with user verification; the
    challenge goes to a sealed cookie (HttpOnly, SameSite=Strict, this path, webauthn.timeout)."""
    service = request.app[WEBAUTHN]
    challenge = await service.begin_authentication(None, "passkey_login")
    response = web.json_response({"status": "OK", "data": challenge.options})
    config = request.app[CONFIG]
    response.set_cookie(
        PASSKEY_LOGIN_COOKIE,
        service.seal(challenge, "passkey_login"),
        path=PASSKEY_LOGIN,
        httponly=True,
        samesite="Strict",
        max_age=int(config.webauthn.timeout.total_seconds()),
        secure=config.portal_is_https,
    )
    return response


async def api_passkey_post(request: web.Request) -> web.Response:
    """Sign in with an AuthenticationResponseJSON (with `targetURL`, `keepMeLoggedIn`): one
    factor, as POST /api/firstfactor answers; 401 KO for every refusal (one message)."""
    body = await read_json(request)
    raw_target = body.get("targetURL")
    target = safe_redirect(request.app[CONFIG], raw_target if isinstance(raw_target, str) else None)
    remember = body.get("keepMeLoggedIn") is True
    service, ip = request.app[WEBAUTHN], request_ip(request)
    record = await service.unseal_once(
        request.cookies.get(PASSKEY_LOGIN_COOKIE, ""), "passkey_login"
    )
    try:
        credential = await service.verify(None, record, "passkey_login", body, ip)
        user, value, cookie = await request.app[SIGNIN].sign_in_with_passkey(
            credential.username,
            ip,
            remember_me=remember,
            host=request_host(request),
            user_agent=request.headers.get("User-Agent", ""),
        )
    except (WebAuthnFailedError, SignInFailedError, PasswordChangeRequiredError) as exc:
        return web.json_response({"status": "KO", "message": exc.public_message}, status=401)
    # As Handle1FAResponse: a target needing two factors is not named; the page goes on to
    # the second step.
    data = {"redirect": target} if target and not needs_two_factors(request, user, target) else {}
    response = web.json_response({"status": "OK", "data": data} if data else {"status": "OK"})
    response.del_cookie(PASSKEY_LOGIN_COOKIE, path=PASSKEY_LOGIN)
    await rotate_session_cookie(request, response, value, cookie, remember)
    return response
