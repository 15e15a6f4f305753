"""Sign-in with a partner's signed token (trusted_issuers): the link, its confirmation page, and
the JSON twin. The service (SignInService, portal/partner_tokens.py) decides everything."""

from __future__ import annotations

from urllib.parse import urlencode, urljoin

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from portal.bodies import read_form, request_host
from portal.errors import PartnerTokenRejectedError
from portal.handlers.common import (
    landing,
    parse_json,
    redirecting_form_action,
    render_page,
    request_ip,
    see_other,
)
from portal.handlers.second_factor import needs_two_factors
from portal.handlers.signin import after_first_factor, rotate_session_cookie
from portal.keys import CONFIG, SIGNIN
from portal.middlewares import MAX_BODY
from portal.partner_tokens import LEEWAY, MAX_TOKEN_LENGTH
from portal.signin import safe_redirect

SSO_JWT = "/sso/jwt"
TOKEN_COOKIE = "portal_sso_jwt"  # noqa: S105 - a cookie name, not a secret


def _refused(request: web.Request) -> web.Response:
    """Answer 401 with one message whatever the reason (the audit has it); drop the token."""
    response = render_page(
        request,
        "partner_refused.html",
        PartnerTokenRejectedError.status,
        message=PartnerTokenRejectedError.public_message,
    )
    response.del_cookie(TOKEN_COOKIE, path=SSO_JWT)
    return response


def _token_out_of_the_url(request: web.Request, token: str) -> web.HTTPSeeOther:
    """Return a 303 to /sso/jwt (rd kept, token gone) storing the token in a cookie scoped to it.

    Nothing is checked first, so no outcome shows a page whose address holds the token.
    """
    rd = request.query.get("rd")
    response = see_other(f"{SSO_JWT}?{urlencode({'rd': rd})}" if rd else SSO_JWT)
    lifespans = [p.max_lifespan.total_seconds() for p in request.app[CONFIG].trusted_issuers]
    if len(token) <= MAX_TOKEN_LENGTH:
        # SECURITY: the token leaves the address bar, history and logs for an HttpOnly cookie
        # scoped to this page, for at most as long as a token may live. Lax: the link comes
        # from the partner's site, and browsers withhold Strict cookies on that navigation.
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            path=SSO_JWT,
            httponly=True,
            samesite="Lax",
            max_age=int(max(lifespans) + 2 * LEEWAY),
            secure=request.app[CONFIG].portal_is_https,
        )
    else:
        response.del_cookie(TOKEN_COOKIE, path=SSO_JWT)
    return response


async def sso_jwt_get(request: web.Request) -> web.Response:
    """Move a partner's token from the URL into a cookie; then show whom it signs in and where
    to, with a form to continue (a token planted on someone signs nobody in by itself)."""
    token = request.query.get("token")
    if token is not None:
        raise _token_out_of_the_url(request, token)
    rd = request.query.get("rd", "")
    try:
        verified, user = await request.app[SIGNIN].check_partner_token(
            request.cookies.get(TOKEN_COOKIE, ""), request_ip(request)
        )
    except PartnerTokenRejectedError:
        return _refused(request)
    return render_page(
        request,
        "partner_confirm.html",
        form_action=redirecting_form_action(request),
        partner=verified.partner.name,
        display_name=user.display_name or user.username,
        username=user.username,
        # Where Continue leads: the safe rd, else the default, else the portal itself.
        target=urljoin(request.app[CONFIG].portal_url, landing(request, rd)),
        rd=rd,
    )


async def sso_jwt_post(request: web.Request) -> web.Response:
    """Use the token up, open a one-factor session (a new cookie) and go on to the safe rd, or
    to the second step when the target needs two factors; the refusal page otherwise."""
    fields = await read_form(request)
    rd = fields.get("rd", "")
    target = safe_redirect(request.app[CONFIG], rd)
    going_to = landing(request, rd)
    try:
        user, value, cookie = await request.app[SIGNIN].sign_in_with_partner_token(
            request.cookies.get(TOKEN_COOKIE, ""),
            request_ip(request),
            host=request_host(request),
            user_agent=request.headers.get("User-Agent", ""),
        )
    except PartnerTokenRejectedError:
        return _refused(request)
    going_to = await after_first_factor(request, user, target, value, going_to)
    response = see_other(going_to)
    response.del_cookie(TOKEN_COOKIE, path=SSO_JWT)
    await rotate_session_cookie(request, response, value, cookie, False)
    raise response


class SsoJwtBody(BaseModel):
    """POST /api/sso/jwt: the partner's token and where to go after."""

    # The body's own cap bounds the token: one over 8 KiB gets the one refusal, not a 400.
    model_config = ConfigDict(extra="ignore", str_max_length=MAX_BODY)

    token: str
    target_url: str | None = Field(None, alias="targetURL")


async def api_sso_jwt_post(request: web.Request) -> web.Response:
    """Sign in with a partner's token from a script: {"status": "OK", "data": {"redirect"}} and
    the session cookie, as POST /api/firstfactor; 401 KO with one message for every refusal."""
    body = await parse_json(request, SsoJwtBody)
    target = safe_redirect(request.app[CONFIG], body.target_url)
    try:
        user, value, cookie = await request.app[SIGNIN].sign_in_with_partner_token(
            body.token,
            request_ip(request),
            host=request_host(request),
            user_agent=request.headers.get("User-Agent", ""),
        )
    except PartnerTokenRejectedError as exc:
        return web.json_response({"status": "KO", "message": exc.public_message}, status=401)
    # As Handle1FAResponse: a target needing two factors is not named; the client asks for the
    # second factor and is sent there after it.
    data = {"redirect": target} if target and not needs_two_factors(request, user, target) else {}
    response = web.json_response({"status": "OK", "data": data} if data else {"status": "OK"})
    await rotate_session_cookie(request, response, value, cookie, False)
    return response
