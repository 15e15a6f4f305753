"""The whole URL surface on one screen."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from aiohttp import web
from aiohttp.http import HttpVersion11

from portal import openapi
from portal.handlers import (
    assets,
    authz,
    captcha,
    elevation,
    health,
    language,
    partner,
    password,
    reset,
    second_factor,
    security,
    settings,
    signin,
    totp,
    user,
    webauthn,
)
from portal.keys import CAPTCHA, CONFIG
from portal.middlewares import MAX_BODY, NO_SUCH_ROUTE

STATIC = Path(__file__).resolve().parent.parent / "static"


async def expect_continue(request: web.Request) -> None:
    """Answer `Expect: 100-continue`; ignore any other expectation (RFC 9110 section 10.1.1).

    Replaces aiohttp's own expect handler, which answers 417 by echoing the header into the
    body and fails with a 500 when the header holds bytes that are not UTF-8 (aiohttp 3.14).
    Another expectation is one a server MAY refuse; ignoring it lets the portal answer as usual.
    A body the portal will refuse anyway (over 64 KiB, or in a content coding) gets no 100: the
    client hears the final 413 or 415 instead of sending the body first (RFC 9110 section 10.1.1:
    a server may answer with a final status instead of 100).
    """
    expect = request.headers.get("Expect", "")
    if (request.content_length or 0) > MAX_BODY or request.headers.get(
        "Content-Encoding", "identity"
    ).strip().lower() not in ("identity", ""):
        return
    if request.version == HttpVersion11 and expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the 100 is not part of the answer's size


async def no_such_route(request: web.Request) -> web.StreamResponse:
    """Answer 405 (with Allow) for a known path and another method, else 404.

    Registered last, so every request reaches a route of ours and its expect handler, never
    aiohttp's system routes (whose expect handler is aiohttp's own).
    """
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


class _Router:
    """Add routes to an app's router, each with the portal's expect handler."""

    def __init__(self, app: web.Application) -> None:
        router = app.router
        self.add_get = partial(router.add_get, expect_handler=expect_continue)
        self.add_post = partial(router.add_post, expect_handler=expect_continue)
        self.add_put = partial(router.add_put, expect_handler=expect_continue)
        self.add_delete = partial(router.add_delete, expect_handler=expect_continue)
        self.add_static = partial(router.add_static, expect_handler=expect_continue)


def setup_routes(app: web.Application) -> None:
    """Register every route under its name, then the fallback that answers 404 and 405."""
    _routes(app)
    # Last but the fallback: the document names the routes registered before it.
    document = openapi.dump(openapi.document_for(app, app[CONFIG]))
    app.router.add_get(
        openapi.OPENAPI_PATH,
        openapi.handler(document),
        name="openapi",
        expect_handler=expect_continue,
    )
    app.router.add_route(
        "*", "/{path:.*}", no_such_route, name=NO_SUCH_ROUTE, expect_handler=expect_continue
    )


def _routes(app: web.Application) -> None:
    add = _Router(app)
    add.add_get("/", signin.signin_get, name="signin")
    add.add_post("/", signin.signin_post)
    add.add_post("/api/firstfactor", signin.api_firstfactor_post)
    add.add_get("/logout", signin.logout_get, name="logout")
    add.add_get("/language/{code}", language.language_get, name="language")
    add.add_post("/api/logout", signin.api_logout_post)
    add.add_get("/api/authz/auth-request", authz.auth_request_get, name="auth_request")
    add.add_get("/api/verify", authz.auth_request_get, name="verify")
    if app[CONFIG].identity_token.enabled:
        add.add_get("/.well-known/jwks.json", authz.jwks_get, name="jwks")
    add.add_get("/api/health", health.health_get, name="health")
    add.add_get("/api/state", user.state_get, name="state")
    add.add_get("/api/user/info", user.user_info_get, name="user_info")
    add.add_get(second_factor.TOTP_PAGE, second_factor.totp_get, name="second_factor_totp")
    add.add_post(second_factor.TOTP_PAGE, second_factor.totp_post)
    add.add_post("/api/secondfactor/totp", second_factor.api_totp_post)
    # Before /static/, which would otherwise answer for the logo's address.
    if (logo := assets.asset(app[CONFIG], "logo.png")) is not None:
        add.add_get(assets.LOGO, assets.file_handler(logo, "image/png"), name="logo")
    if (favicon := assets.asset(app[CONFIG], "favicon.ico")) is not None:
        add.add_get(assets.FAVICON, assets.file_handler(favicon, "image/x-icon"), name="favicon")
    add.add_static("/static/", STATIC, name="static")
    if app[CAPTCHA].self_hosted:
        add.add_get("/api/captcha/challenge", captcha.challenge_get, name="captcha_challenge")
    # The security settings page and the user's sessions (no elevation: they only end access).
    add.add_get(security.SETTINGS, security.settings_get, name="security_settings")
    add.add_post(security.SESSIONS_FORM, security.sessions_post)
    add.add_get("/api/user/sessions", security.api_sessions_get, name="user_sessions")
    add.add_delete("/api/user/sessions", security.api_sessions_delete)
    add.add_delete("/api/user/sessions/{session_id}", security.api_session_delete)
    # The elevated session (Authelia 4.39): its API, its pages and the mail's revoke page.
    add.add_post("/api/user/session/elevation", elevation.api_elevation_post)
    add.add_put("/api/user/session/elevation", elevation.api_elevation_put)
    add.add_get("/api/user/session/elevation", elevation.api_elevation_get, name="elevation")
    add.add_delete("/api/user/session/elevation/{delete_id}", elevation.api_elevation_delete)
    add.add_get(elevation.ELEVATE, elevation.elevate_get, name="elevate")
    add.add_post(elevation.ELEVATE, elevation.elevate_post)
    add.add_get(elevation.ELEVATE_CODE, elevation.elevate_code_get, name="elevate_code")
    add.add_post(elevation.ELEVATE_CODE, elevation.elevate_code_post)
    add.add_get(elevation.REVOKE, elevation.revoke_code_get, name="revoke_one_time_code")
    add.add_post(elevation.REVOKE, elevation.revoke_code_post)
    add.add_get(elevation.REVOKED, elevation.revoke_code_done_get)
    if not app[CONFIG].totp.disable:
        # TOTP registration and removal (Authelia's routes); with totp.disable they do not exist.
        add.add_put("/api/secondfactor/totp/register", totp.api_register_put)
        add.add_post("/api/secondfactor/totp/register", totp.api_register_post)
        add.add_delete("/api/secondfactor/totp", totp.api_totp_delete)
        add.add_get(totp.TOTP_SETTINGS, totp.settings_get, name="totp_settings")
        add.add_post(totp.TOTP_SETTINGS, totp.settings_post)
        add.add_get(totp.REGISTERED, totp.settings_registered_get)
        add.add_get(totp.REMOVED, totp.settings_removed_get)
    if not app[CONFIG].webauthn.disable:
        # Passkeys (issue 16, Authelia's routes); with webauthn.disable they do not exist.
        register = "/api/secondfactor/webauthn/credential/register"
        add.add_put(register, webauthn.api_register_put)
        add.add_post(register, webauthn.api_register_post)
        add.add_get("/api/secondfactor/webauthn/credentials", webauthn.api_credentials_get)
        # A number (the credential's id), so .../credential/register is not read as one: a
        # DELETE there is a 405 naming the register route's methods, not a 404 for "register".
        credential = "/api/secondfactor/webauthn/credential/{credential_id:[0-9]+}"
        add.add_put(credential, webauthn.api_credential_put)
        add.add_delete(credential, webauthn.api_credential_delete)
        add.add_get(webauthn.WEBAUTHN_SETTINGS, webauthn.settings_get, name="webauthn_settings")
        add.add_post(webauthn.WEBAUTHN_SETTINGS, webauthn.settings_post)
        add.add_get(webauthn.ADDED, webauthn.settings_added_get)
        add.add_get(webauthn.RENAMED, webauthn.settings_renamed_get)
        add.add_get(webauthn.REMOVED, webauthn.settings_removed_get)
        add.add_get("/api/secondfactor/webauthn", second_factor.api_webauthn_get)
        add.add_post("/api/secondfactor/webauthn", second_factor.api_webauthn_post)
        if app[CONFIG].webauthn.enable_passkey_login:
            add.add_get(signin.PASSKEY_LOGIN, signin.api_passkey_get)
            add.add_post(signin.PASSKEY_LOGIN, signin.api_passkey_post)
            # A passkey sign-in is one factor; the password is its second (Authelia 4.39).
            add.add_get(
                second_factor.PASSWORD_PAGE,
                second_factor.password_get,
                name="second_factor_password",
            )
            add.add_post(second_factor.PASSWORD_PAGE, second_factor.password_post)
            add.add_post(second_factor.REAUTHENTICATE, second_factor.api_reauthenticate_post)

    if app[CONFIG].trusted_issuers:
        # Sign-in with a partner's signed token (issue 17); without partners they do not exist.
        add.add_get(partner.SSO_JWT, partner.sso_jwt_get, name="sso_jwt")
        add.add_post(partner.SSO_JWT, partner.sso_jwt_post)
        add.add_post("/api/sso/jwt", partner.api_sso_jwt_post)

    if not app[CONFIG].authentication_backend.password_change.disable:
        # The signed-in password change (Authelia's route); with disable they do not exist.
        add.add_post("/api/change-password", password.api_change_password_post)
        add.add_get(password.PASSWORD_SETTINGS, password.password_get, name="password_settings")
        add.add_post(password.PASSWORD_SETTINGS, password.password_post)
        add.add_get(password.CHANGED, password.password_changed_get)

    password_reset = app[CONFIG].authentication_backend.password_reset
    if password_reset.disable or password_reset.custom_url:
        return  # the reset pages and API do not exist at all
    add.add_get("/reset-password/step1", reset.step1_get, name="reset_step1")
    add.add_post("/reset-password/step1", reset.step1_post)
    add.add_get(reset.SENT, reset.step1_sent_get, name="reset_sent")
    add.add_get(reset.DONE, reset.done_get, name="reset_done")
    add.add_get(reset.CANCELLED, reset.cancelled_get, name="reset_cancelled")
    add.add_get("/reset-password/step2", reset.step2_get, name="reset_step2")
    add.add_post("/reset-password/step2", reset.step2_post)
    add.add_get("/revoke/reset-password", reset.revoke_get, name="revoke_reset")
    add.add_post("/revoke/reset-password", reset.revoke_post)
    add.add_post("/api/reset-password/identity/start", reset.api_start_post)
    add.add_post("/api/reset-password/identity/finish", reset.api_finish_post)
    add.add_post("/api/reset-password", reset.api_reset_post)
    add.add_delete("/api/reset-password", reset.api_reset_delete)
    if not app[CONFIG].webauthn.disable:
        add.add_get("/api/reset-password/webauthn", reset.api_passkey_get)
        add.add_get("/reset-password/step2/webauthn", reset.step2_passkey_get)
    if app[CONFIG].identity_validation.reset_password.security_questions.enabled:
        add.add_post("/reset-password/step1/answers", reset.step1_answers_post)
        add.add_post("/api/reset-password/identity/questions", reset.api_questions_post)
        add.add_get(
            "/settings/security-questions",
            settings.security_questions_get,
            name="security_questions",
        )
        add.add_post("/settings/security-questions", settings.security_questions_post)
        add.add_get(settings.SAVED, settings.security_questions_saved_get)
        add.add_get(settings.REMOVED, settings.security_questions_removed_get)
