"""The reset pages and their JSON twins: parse, one service call, render."""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Any, NoReturn

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from portal.bodies import read_form
from portal.config import CaptchaEndpoint
from portal.errors import (
    BadRequestError,
    InvalidTokenError,
    ResetCodeRejectedError,
    ResetFormRejectedError,
)
from portal.handlers.common import (
    captcha_widget,
    parse_json,
    render_page,
    request_ip,
    require_captcha,
    see_other,
)
from portal.keys import CONFIG, QUESTIONS, RESET
from portal.password_policy import describe
from portal.tokens import MAX_TOKEN_LENGTH

TOKEN_COOKIE = "portal_reset"  # noqa: S105 - a cookie name, not a secret
REVOKE_COOKIE = "portal_revoke"
STEP2 = "/reset-password/step2"
REVOKE = "/revoke/reset-password"
# Result pages, reached by redirect-after-POST so that a refresh resubmits nothing. Outside the
# token cookies' paths (/reset-password/step2, /revoke/reset-password): they never receive one.
SENT = "/reset-password/step1/sent"
DONE = "/reset-password/done"
CANCELLED = "/reset-password/cancelled"
# What a JWT in compact form is made of; anything else is never put in a cookie.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# The reset's passkey challenge, sealed and bound to its link (PasswordResetService).
PASSKEY_COOKIE = "portal_reset_webauthn"
_CAPTCHA_ON: dict[str, CaptchaEndpoint] = {
    "reset_step1.html": "reset_password_start",
    "reset_step2.html": "reset_password_finish",
}


def _page(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    context.setdefault("captcha", captcha_widget(request, _CAPTCHA_ON.get(template)))
    return render_page(request, template, status, **context)


def _invalid_link(request: web.Request, cookie: str = TOKEN_COOKIE) -> web.Response:
    response = _page(request, "reset_invalid.html", status=400)
    response.del_cookie(cookie, path=STEP2 if cookie == TOKEN_COOKIE else REVOKE)
    return response


def _link_token(request: web.Request, cookie: str, path: str) -> str | None:
    """Return the link's token from its cookie; a token still in the URL is moved out first.

    A `?token=` in the address is never used from there: the answer is a 303 that stores it in
    the cookie (see _token_out_of_the_url), and the browser comes back without it.
    """
    token = request.query.get("token")
    if token is not None:
        _token_out_of_the_url(request, token, cookie, path)
    return request.cookies.get(cookie) or None


def _token_out_of_the_url(request: web.Request, token: str, cookie: str, path: str) -> NoReturn:
    """Answer 303 to the token-free path, with the token moved into a cookie scoped to it.

    Nothing is checked or rendered first, so no outcome (valid, invalid, expired, used, a
    throttled or failing backend) shows a page whose address holds the token. A value that is
    not shaped like a token is not stored: the cookie is cleared and the page says invalid.
    """
    response = see_other(path)
    if len(token) <= MAX_TOKEN_LENGTH and _TOKEN_SHAPE.fullmatch(token):
        lifespan = request.app[CONFIG].identity_validation.reset_password.jwt_lifespan
        # SECURITY: the token leaves the URL (address bar, history, screenshots, logs) for an
        # HttpOnly cookie scoped to this page. Lax, not Strict: the click comes from a mail
        # client on another site, and browsers withhold Strict cookies on that navigation.
        response.set_cookie(
            cookie,
            token,
            path=path,
            httponly=True,
            samesite="Lax",
            max_age=max(1, int(lifespan.total_seconds())),
            secure=request.app[CONFIG].portal_is_https,
        )
    else:
        response.del_cookie(cookie, path=path)
    raise response


# -- step 1 --------------------------------------------------------------------------------------


async def step1_get(request: web.Request) -> web.Response:
    """Show the form that asks for a username or email address."""
    return _page(request, "reset_step1.html")


def _step1_refused(
    request: web.Request, form: dict[str, str], exc: BadRequestError
) -> web.Response:
    """Show step 1 again with why it was refused and what was typed (cut to 256 characters)."""
    return _page(
        request,
        "reset_step1.html",
        status=400,
        error=exc.public_message,
        username=form.get("username", "")[:256],
    )


async def step1_post(request: web.Request) -> web.Response:
    """Queue a reset mail (or ask the security questions first): one page for everyone."""
    form = await read_form(request)
    try:
        await require_captcha(request, "reset_password_start", form)
        if request.app[RESET].questions_first:
            return await _questions_page(request, form.get("username", ""))
        await request.app[RESET].request_link(form.get("username", ""), request_ip(request))
    except BadRequestError as exc:
        return _step1_refused(request, form, exc)
    # SECURITY: one fixed redirect for everyone, as the page it leads to.
    raise see_other(SENT)


async def step1_sent_get(request: web.Request) -> web.Response:
    """Say a mail is on its way if an account matched (or if the answers were right)."""
    return _page(request, "reset_step1_sent.html", questions=request.app[RESET].questions_first)


async def _questions_page(request: web.Request, identifier: str) -> web.Response:
    prompt = await request.app[QUESTIONS].prompt(identifier, request_ip(request))
    # SECURITY: one template for real and decoy questions; only the question texts differ.
    without = request.app[QUESTIONS].settings.without_questions
    return _page(
        request,
        "reset_questions.html",
        identifier=prompt.identifier,
        questions=prompt.questions,
        ticket=prompt.ticket,
        without_questions=without,
    )


async def step1_answers_post(request: web.Request) -> web.Response:
    """Check the answers and queue the mail if right; the same page either way."""
    form = await read_form(request)
    questions = request.app[QUESTIONS]
    answers = [form.get(f"answer_{i}", "") for i in range(questions.settings.asked)]
    try:
        await questions.answer(
            form.get("username", ""), answers, request_ip(request), ticket=form.get("ticket", "")
        )
    except BadRequestError as exc:
        return _step1_refused(request, form, exc)
    raise see_other(SENT)


# -- step 2 --------------------------------------------------------------------------------------


async def step2_get(request: web.Request) -> web.Response:
    """Move a link's token from the URL into a cookie; then check it and show the form."""
    token = _link_token(request, TOKEN_COOKIE, STEP2)
    if token is None:
        return _invalid_link(request)
    try:
        # Opening the link uses nothing up: mail scanners open links too.
        _, user = await request.app[RESET].open_link(token, request_ip(request))
    except InvalidTokenError:
        return _invalid_link(request)
    return await _password_form(request, user.username)


async def _password_form(
    request: web.Request,
    username: str,
    reasons: list[str] | None = None,
    error: str = "",
    code_error: str = "",
) -> web.Response:
    """Render step 2 for the link's user; with a TOTP registered it asks for a code too
    (`totp_code`, the registered length). Only ever called once the link was checked."""
    policy = request.app[CONFIG].password_policy
    return _page(
        request,
        "reset_step2.html",
        status=400 if reasons or error or code_error else 200,
        username=username,
        reasons=reasons or [],
        hints=describe(policy),
        error=error,
        code_digits=await request.app[RESET].code_digits(username),
        has_passkey=await request.app[RESET].has_passkey(username),
        code_error=code_error,
    )


async def step2_post(request: web.Request) -> web.Response:
    """Set the new password from the form; the link is used up only if it works."""
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        return _invalid_link(request)
    form = await read_form(request)
    captcha = partial(require_captcha, request, "reset_password_finish", form)
    try:
        await request.app[RESET].complete(
            token,
            form.get("password", ""),
            form.get("password_confirm", ""),
            request_ip(request),
            totp_code=form.get("totp_code", ""),
            passkey=_passkey_answer(form.get("webauthn", "")),
            passkey_challenge=request.cookies.get(PASSKEY_COOKIE, ""),
            captcha=captcha,
        )
    except InvalidTokenError:
        return _invalid_link(request)
    except ResetCodeRejectedError as exc:
        return await _password_form(request, exc.username, code_error=exc.public_message)
    except ResetFormRejectedError as exc:
        error = "" if exc.reasons else exc.public_message
        return await _password_form(request, exc.username, exc.reasons, error=error)
    response = see_other(DONE)
    response.del_cookie(TOKEN_COOKIE, path=STEP2)
    response.del_cookie(PASSKEY_COOKIE, path="/")
    raise response


def _passkey_answer(text: str) -> dict[str, Any] | None:
    """Return the form's `webauthn` field (an AuthenticationResponseJSON) as an object, or None
    when empty; an answer that is not a JSON object counts as a wrong one (an empty object)."""
    if not text:
        return None
    try:
        answer = json.loads(text)
    # Deep nesting ends in RecursionError (bounded work: the body is at most 64 KiB), as in
    # bodies.read_json; a 500 before.
    except (ValueError, RecursionError):
        return {}
    return answer if isinstance(answer, dict) else {}


async def _passkey_options(request: web.Request, token: str) -> web.Response:
    """Answer the assertion options for the link's user, the challenge sealed in a cookie
    (HttpOnly, SameSite=Strict, lapsing with webauthn.timeout) that POSTs send back."""
    options, sealed = await request.app[RESET].passkey_options(token, request_ip(request))
    response = web.json_response({"status": "OK", "data": options})
    config = request.app[CONFIG]
    response.set_cookie(
        PASSKEY_COOKIE,
        sealed,
        path="/",
        httponly=True,
        samesite="Strict",
        max_age=int(config.webauthn.timeout.total_seconds()),
        secure=config.portal_is_https,
    )
    return response


async def step2_passkey_get(request: web.Request) -> web.Response:
    """GET /reset-password/step2/webauthn: the options for the step-2 page's script (the
    link's token comes from the step-2 cookie, scoped to this path)."""
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        raise InvalidTokenError("malformed")
    return await _passkey_options(request, token)


async def api_passkey_get(request: web.Request) -> web.Response:
    """GET /api/reset-password/webauthn with {"token"} (or the step-2 cookie): the options."""
    token = request.cookies.get(TOKEN_COOKIE)
    if request.can_read_body or not token:
        token = (await parse_json(request, TokenBody)).token
    return await _passkey_options(request, token)


async def done_get(request: web.Request) -> web.Response:
    """Say the password has been changed and every session ended."""
    return _page(request, "reset_done.html")


# -- revoke --------------------------------------------------------------------------------------


async def revoke_get(request: web.Request) -> web.Response:
    """Move the token out of the URL, then ask before cancelling (opening cancels nothing)."""
    token = _link_token(request, REVOKE_COOKIE, REVOKE)
    if token is None:
        return _invalid_link(request, REVOKE_COOKIE)
    try:
        await request.app[RESET].check_revocable(token, request_ip(request))
    except InvalidTokenError:
        return _invalid_link(request, REVOKE_COOKIE)
    return _page(request, "revoke_confirm.html")


async def revoke_post(request: web.Request) -> web.Response:
    """Cancel the link whose token the revoke page moved into its cookie."""
    token = request.cookies.get(REVOKE_COOKIE, "")
    try:
        await request.app[RESET].revoke(token, request_ip(request))
    except InvalidTokenError:
        return _invalid_link(request, REVOKE_COOKIE)
    response = see_other(CANCELLED)
    response.del_cookie(REVOKE_COOKIE, path=REVOKE)
    raise response


async def cancelled_get(request: web.Request) -> web.Response:
    """Say the link is cancelled."""
    return _page(request, "revoke_done.html")


# -- JSON API (Authelia's shapes) ----------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_max_length=4096)


class StartBody(_Body):
    """POST /api/reset-password/identity/start (answers when security questions are on)."""

    username: str
    answers: list[str] | None = None
    captcha: str | None = None


class QuestionsBody(_Body):
    """POST /api/reset-password/identity/questions."""

    username: str
    captcha: str | None = None


class TokenBody(_Body):
    """A body carrying a reset token."""

    token: str


class ResetBody(TokenBody):
    """POST /api/reset-password; `totp` is the current code when the user has TOTP."""

    password: str
    totp: str = ""
    # An AuthenticationResponseJSON instead of `totp`, when the user has a passkey.
    webauthn: dict[str, Any] | None = None
    captcha: str | None = None


OK = {"status": "OK"}


async def api_start_post(request: web.Request) -> web.Response:
    """Queue a reset mail; answer OK whoever was asked for."""
    body = await parse_json(request, StartBody)
    # SECURITY: the mail-sending call needs the CAPTCHA whether or not questions come first.
    await require_captcha(request, "reset_password_start", body.captcha)
    if request.app[RESET].questions_first and body.answers is not None:
        await request.app[QUESTIONS].answer(body.username, body.answers, request_ip(request))
    else:  # SECURITY: refused while questions come first (the API is no way around them)
        await request.app[RESET].request_link(body.username, request_ip(request))
    return web.json_response(OK)


async def api_questions_post(request: web.Request) -> web.Response:
    """List the security questions a reset for this username asks, whoever it is."""
    body = await parse_json(request, QuestionsBody)
    await require_captcha(request, "reset_password_start", body.captcha)
    prompt = await request.app[QUESTIONS].prompt(body.username, request_ip(request))
    return web.json_response({"status": "OK", "data": {"questions": list(prompt.questions)}})


async def api_finish_post(request: web.Request) -> web.Response:
    """Check a reset token without using it."""
    body = await parse_json(request, TokenBody)
    await request.app[RESET].open_link(body.token, request_ip(request))
    return web.json_response(OK)


async def api_reset_post(request: web.Request) -> web.Response:
    """Set a new password with a reset token (and `totp`, the current code, when the user
    has TOTP): 400 {"status":"KO","message"} when refused, the link still usable."""
    body = await parse_json(request, ResetBody)
    await require_captcha(request, "reset_password_finish", body.captcha)
    try:
        await request.app[RESET].complete(
            body.token,
            body.password,
            body.password,
            request_ip(request),
            totp_code=body.totp,
            passkey=body.webauthn,
            passkey_challenge=request.cookies.get(PASSKEY_COOKIE, ""),
        )
    except ResetFormRejectedError as exc:
        return web.json_response(
            {"status": "KO", "message": exc.public_message, "reasons": exc.reasons}, status=400
        )
    return web.json_response(OK)


async def api_reset_delete(request: web.Request) -> web.Response:
    """Revoke a reset token."""
    body = await parse_json(request, TokenBody)
    await request.app[RESET].revoke(body.token, request_ip(request))
    return web.json_response(OK)
