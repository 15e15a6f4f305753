"""The sign-in's second step: the one-time password page, its JSON twin, and where a browser
goes after the password (Authelia: handler_sign_totp.go, response.go Handle1FAResponse and
Handle2FAResponse); after a passkey sign-in, the password as the second step (Authelia 4.39:
/2fa/password, handler_firstfactor_password.go FirstFactorReauthenticatePOST).

A session opened by the password is at one factor; a good code raises it to two
(SessionStore.raise_level, which rotates the session id) and the browser goes on to its target.
Every refused code gets the same answer (SecondFactorFailedError); regulation, replay and the
audit of codes live in TotpService.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from portal.bodies import read_form, read_json
from portal.config import SessionCookieConfig
from portal.errors import (
    PasswordChangeRequiredError,
    SecondFactorFailedError,
    SignInFailedError,
    WebAuthnFailedError,
)
from portal.handlers.common import (
    cookie_values,
    landing,
    parse_json,
    redirecting_form_action,
    render_page,
    request_ip,
    route_path,
    session_cookie,
)
from portal.handlers.start import forgot_password_url
from portal.handlers.webauthn import take_challenge
from portal.i18n import N_
from portal.keys import AUTHZ, CONFIG, SESSIONS, SIGNIN, TOTP, WEBAUTHN
from portal.session_cookies import cookie_attributes
from portal.sessions import TWO_FACTORS, Session
from portal.signin import safe_redirect
from portal.users.base import User

TOTP_PAGE = "/2fa/one-time-password"
# The second step after a passkey sign-in (webauthn.enable_passkey_login): the password.
PASSWORD_PAGE = "/2fa/password"  # noqa: S105 - a path, not a secret
REAUTHENTICATE = "/api/firstfactor/reauthenticate"
INCORRECT_PASSWORD = N_("Incorrect password.")  # noqa: S105 - a message, not a secret
# A passkey and a code are both something the user has (RFC 8176 hwk, otp): one factor.
CODE_AFTER_A_PASSKEY = N_("You signed in with a passkey: confirm with your password instead.")
NOT_SIGNED_IN = N_("Please sign in first.")


def totp_page_url(target: str | None) -> str:
    """Return the second step's address, carrying the target (a safe rd) on to after it."""
    return f"{TOTP_PAGE}?rd={quote(target, safe='')}" if target else TOTP_PAGE


def password_page_url(target: str | None) -> str:
    """Return the password step's address, carrying the target (a safe rd) on to after it."""
    return f"{PASSWORD_PAGE}?rd={quote(target, safe='')}" if target else PASSWORD_PAGE


async def password_step(
    request: web.Request, found: tuple[Session, str, SessionCookieConfig], target: str | None
) -> str:
    """Return where a passkey-first session (passkey_first) goes for its second factor: the
    password step, carrying target on. With webauthn.enable_passkey_login turned off since the
    session was opened (or webauthn.disable), that step does not exist: the session is ended
    and the sign-in page takes the visitor back to target (a password, then their second
    factor), instead of a 404 until the session lapses."""
    if route_path(request, "second_factor_password") is not None:
        return password_page_url(target)
    await request.app[SESSIONS].destroy(found[1])
    return f"/?rd={quote(target, safe='')}" if target else "/"


def passkey_first(session: Session) -> bool:
    """Tell whether the session was opened by a passkey alone (amr "hwk", no "pwd"): its
    second factor is the password (something known), never a code or another passkey
    (something had, like the passkey). Authelia 4.39 counts factors by kind the same way."""
    return "hwk" in session.amr and "pwd" not in session.amr


def user_of(session: Session) -> User:
    """Return the user a session was opened for, as access_control's subjects see them."""
    return User(session.username, session.display_name, session.emails, session.groups)


def needs_two_factors(request: web.Request, user: User, target: str | None) -> bool:
    """Tell whether access_control asks two factors of user for target (a safe rd, or None)."""
    return (
        bool(target)
        and request.app[AUTHZ].required_level(target or "", user, request_ip(request))
        == "two_factor"
    )


async def second_step_first(request: web.Request, user: User, target: str | None) -> bool:
    """Tell whether user, past the password and headed for target (a safe rd, None: the portal
    itself), is asked for a second factor before going on.

    Yes when target needs two factors (a user with no device is then told to register one);
    with no target, yes when some rule asks for two factors and the user has a TOTP device
    (Authelia's frontend goes to its second-factor page after the password then).
    """
    if target:
        return needs_two_factors(request, user, target)
    if not request.app[AUTHZ].second_factor_enabled:
        return False
    return await has_second_factor(request, user.username)


async def has_second_factor(request: web.Request, username: str) -> bool:
    """Tell whether the user has a second factor to use now (TOTP or a passkey)."""
    return await request.app[TOTP].registered(username) or await request.app[WEBAUTHN].registered(
        username
    )


async def _signed_in(request: web.Request) -> tuple[Session, str, SessionCookieConfig] | None:
    """Return the live session this request carries, with its cookie value and domain."""
    cookie = session_cookie(request)
    sessions = request.app[SESSIONS]
    for value in cookie_values(request, cookie.name or ""):
        session = await sessions.get(value, cookie)
        if session is not None:
            return session, value, cookie
    return None


async def _page(
    request: web.Request, session: Session, status: int = 200, **context: object
) -> web.Response:
    """The second step: the TOTP field when the user has TOTP, the passkey button when they
    have a passkey (both when both)."""
    username = session.username
    return render_page(
        request,
        "second_factor_totp.html",
        status,
        form_action=redirecting_form_action(request),
        username=session.display_name or username,
        has_totp=await request.app[TOTP].registered(username),
        has_passkey=await _passkey_usable(request, session),
        **context,
    )


async def totp_get(request: web.Request) -> web.Response:
    """Ask a one-factor session for its code (or, with no device, to register one first: a
    one-time password app or a passkey, whichever the configuration offers)."""
    target = safe_redirect(request.app[CONFIG], request.query.get("rd"))
    found = await _signed_in(request)
    if found is None:
        raise web.HTTPFound(f"/?rd={quote(target, safe='')}" if target else "/")
    session = found[0]
    if session.level >= TWO_FACTORS:
        raise web.HTTPFound(landing(request, target))
    if passkey_first(session):
        raise web.HTTPFound(await password_step(request, found, target))
    if not (
        await request.app[TOTP].registered(session.username)
        or await _passkey_usable(request, session)
    ):
        # Where a user registers a one-time password app or a passkey: the settings pages
        # the configuration has (totp.disable and webauthn.disable leave theirs out).
        return await _page(
            request,
            session,
            missing=True,
            register_totp=route_path(request, "totp_settings"),
            register_passkey=route_path(request, "webauthn_settings"),
            # Back here once one is registered (another tab, the history), still headed for rd.
            continue_url=totp_page_url(target),
        )
    return await _page(request, session, rd=target or "", done=landing(request, target))


async def _raise_level(
    request: web.Request,
    response: web.StreamResponse,
    found: tuple[Session, str, SessionCookieConfig],
    method: str = "otp",
) -> None:
    session, value, cookie = found
    try:
        new = await request.app[SESSIONS].raise_level(value, cookie, method=method)
    except LookupError:
        # Ended between the code and now (a sign-out elsewhere, a reset): sign in again.
        raise SecondFactorFailedError() from None
    # SECURITY: the id changed with the level; the browser gets the new value, the old is gone.
    attributes = cookie_attributes(cookie, remember_me=session.remember_me)
    response.set_cookie(cookie.name or "", new, **attributes)


async def totp_post(request: web.Request) -> web.Response:
    """Check the code; on success raise the session to two factors and go on to the target."""
    fields = await read_form(request)
    rd = fields.get("rd", "")
    target = safe_redirect(request.app[CONFIG], rd)
    found = await _signed_in(request)
    if found is None:
        raise web.HTTPSeeOther(f"/?rd={quote(target, safe='')}" if target else "/")
    session = found[0]
    if session.level >= TWO_FACTORS:
        raise web.HTTPFound(landing(request, target))
    if passkey_first(session):
        raise web.HTTPSeeOther(await password_step(request, found, target))
    try:
        await request.app[TOTP].verify(
            session.username, fields.get("token", ""), request_ip(request)
        )
        response = web.HTTPFound(landing(request, target))
        await _raise_level(request, response, found)
    except SecondFactorFailedError as exc:
        # The field is drawn empty again, with the focus on it (the page's autofocus).
        return await _page(
            request,
            session,
            exc.status,
            error=exc.public_message,
            rd=target or "",
            done=landing(request, target),
        )
    raise response


class TotpBody(BaseModel):
    """POST /api/secondfactor/totp (Authelia's names)."""

    model_config = ConfigDict(extra="ignore", str_max_length=4096, populate_by_name=True)

    token: str
    target_url: str | None = Field(None, alias="targetURL")


def _ok(target: str | None) -> web.Response:
    # Authelia's Handle2FAResponse: a safe target is named; without one, nothing is.
    if target:
        return web.json_response({"status": "OK", "data": {"redirect": target}})
    return web.json_response({"status": "OK"})


async def api_totp_post(request: web.Request) -> web.Response:
    """Raise a one-factor session to two factors with a TOTP code, from a script or an SPA."""
    body = await parse_json(request, TotpBody)
    target = safe_redirect(request.app[CONFIG], body.target_url)
    found = await _signed_in(request)
    if found is None:
        return web.json_response({"status": "KO", "message": NOT_SIGNED_IN}, status=401)
    if found[0].level >= TWO_FACTORS:
        return _ok(target)
    if passkey_first(found[0]):
        return web.json_response({"status": "KO", "message": CODE_AFTER_A_PASSKEY}, status=401)
    try:
        await request.app[TOTP].verify(found[0].username, body.token, request_ip(request))
        response = _ok(target)
        await _raise_level(request, response, found)
    except SecondFactorFailedError as exc:
        return web.json_response({"status": "KO", "message": exc.public_message}, status=exc.status)
    return response


# -- passkeys (WebAuthn) as the second factor ---------------------------------------------------


async def _passkey_usable(request: web.Request, session: Session) -> bool:
    """Tell whether a passkey may raise this session: the user has one, and the first factor
    was not a passkey already (a passkey sign-in, amr "hwk": the same factor twice is one)."""
    return "hwk" not in session.amr and await request.app[WEBAUTHN].registered(session.username)


async def api_webauthn_get(request: web.Request) -> web.Response:
    """Answer the assertion options for the one-factor session's user (their credentials
    allowed); the challenge is kept in the session. 401 KO without a session."""
    found = await _signed_in(request)
    if found is None:
        return web.json_response({"status": "KO", "message": NOT_SIGNED_IN}, status=401)
    session = found[0]
    challenge = await request.app[WEBAUTHN].begin_authentication(session.username, "second_factor")
    await request.app[SESSIONS].update(session.id, {"webauthn_challenge": challenge.record})
    return web.json_response({"status": "OK", "data": challenge.options})


async def api_webauthn_post(request: web.Request) -> web.Response:
    """Raise the session to two factors with an AuthenticationResponseJSON (and `targetURL`):
    {"status":"OK","data":{"redirect"}} as for TOTP; 401 KO for every refusal (one message)."""
    body = await read_json(request)
    raw_target = body.get("targetURL")
    target = safe_redirect(request.app[CONFIG], raw_target if isinstance(raw_target, str) else None)
    found = await _signed_in(request)
    if found is None:
        return web.json_response({"status": "KO", "message": NOT_SIGNED_IN}, status=401)
    session = found[0]
    if session.level >= TWO_FACTORS:
        return _ok(target)
    record = await take_challenge(request, session)
    if "hwk" in session.amr:  # signed in with a passkey: it cannot be the second factor too
        record = None
    try:
        await request.app[WEBAUTHN].verify(
            session.username, record, "second_factor", body, request_ip(request)
        )
        response = _ok(target)
        await _raise_level(request, response, found, method="hwk")
    except (WebAuthnFailedError, SecondFactorFailedError) as exc:
        return web.json_response({"status": "KO", "message": exc.public_message}, status=exc.status)
    return response


# -- the password as the second step, after a passkey sign-in -----------------------------------


async def _password_page(
    request: web.Request, session: Session, target: str | None, status: int = 200, **context: object
) -> web.Response:
    return render_page(
        request,
        "second_factor_password.html",
        status,
        form_action=redirecting_form_action(request),
        username=session.username,
        display_name=session.display_name or session.username,
        rd=target or "",
        forgot_url=forgot_password_url(request),
        **context,
    )


async def _password_step_session(
    request: web.Request, target: str | None
) -> tuple[Session, str, SessionCookieConfig]:
    """Return the passkey session this request carries, or redirect where the browser belongs:
    the sign-in without a session, the target at two factors, the code page otherwise."""
    found = await _signed_in(request)
    if found is None:
        raise web.HTTPSeeOther(f"/?rd={quote(target, safe='')}" if target else "/")
    if found[0].level >= TWO_FACTORS:
        raise web.HTTPSeeOther(landing(request, target))
    if not passkey_first(found[0]):
        raise web.HTTPFound(totp_page_url(target))
    return found


async def password_get(request: web.Request) -> web.Response:
    """Ask a passkey session for the password, the second factor a two_factor site needs."""
    target = safe_redirect(request.app[CONFIG], request.query.get("rd"))
    found = await _password_step_session(request, target)
    return await _password_page(request, found[0], target)


async def password_post(request: web.Request) -> web.Response:
    """Check the password under regulation; on success raise the session to two factors
    (amr hwk and pwd, a new session id) and go on to the target."""
    fields = await read_form(request)
    target = safe_redirect(request.app[CONFIG], fields.get("rd", ""))
    found = await _password_step_session(request, target)
    session = found[0]
    try:
        await request.app[SIGNIN].reauthenticate(
            session.username, fields.get("password", ""), request_ip(request)
        )
    except SignInFailedError as exc:
        return await _password_page(request, session, target, exc.status, error=INCORRECT_PASSWORD)
    except PasswordChangeRequiredError as exc:
        return await _password_page(
            request, session, target, exc.status, error=exc.public_message, must_change=True
        )
    response = web.HTTPFound(landing(request, target))
    try:
        await _raise_level(request, response, found, method="pwd")
    except SecondFactorFailedError:
        # The session ended meanwhile (a sign-out elsewhere, a reset): sign in again.
        raise web.HTTPSeeOther(f"/?rd={quote(target, safe='')}" if target else "/") from None
    raise response


class ReauthenticateBody(BaseModel):
    """POST /api/firstfactor/reauthenticate (Authelia's names)."""

    model_config = ConfigDict(extra="ignore", str_max_length=4096, populate_by_name=True)

    password: str
    target_url: str | None = Field(None, alias="targetURL")


async def api_reauthenticate_post(request: web.Request) -> web.Response:
    """Check the signed-in user's password: a passkey session rises to two factors (answered
    as Handle2FAResponse); any other session stays as it is (the password twice is one factor)
    and a target is named only if its level already opens it. 401 KO without a session, for a
    wrong password or a ban (one message), and when the password must be changed first."""
    body = await parse_json(request, ReauthenticateBody)
    target = safe_redirect(request.app[CONFIG], body.target_url)
    found = await _signed_in(request)
    if found is None:
        return web.json_response({"status": "KO", "message": NOT_SIGNED_IN}, status=401)
    session = found[0]
    try:
        await request.app[SIGNIN].reauthenticate(
            session.username, body.password, request_ip(request)
        )
    except SignInFailedError:
        return web.json_response({"status": "KO", "message": INCORRECT_PASSWORD}, status=401)
    except PasswordChangeRequiredError as exc:
        return web.json_response({"status": "KO", "message": exc.public_message}, status=401)
    if session.level < TWO_FACTORS and passkey_first(session):
        response = _ok(target)
        try:
            await _raise_level(request, response, found, method="pwd")
        except SecondFactorFailedError as exc:
            return web.json_response(
                {"status": "KO", "message": exc.public_message}, status=exc.status
            )
        return response
    opens = session.level >= TWO_FACTORS or not needs_two_factors(request, user_of(session), target)
    return _ok(target if opens else None)
