"""Passkeys over HTTP: registration and management (issue 16's JSON contract, Authelia 4.39's
routes) and the settings page /settings/passkeys. Registration, renaming and removal need an
elevated session (require_elevation); the decisions are WebAuthnService's.

The challenge of a ceremony is kept in the session record (Session.webauthn_challenge) and
dropped before its answer is checked, so each is answered at most once.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from portal.bodies import read_form, read_json
from portal.errors import (
    BadRequestError,
    ElevationRequiredError,
    PortalError,
    SignInRequiredError,
    WebAuthnCredentialNotFoundError,
    WebAuthnFailedError,
)
from portal.handlers.common import (
    current_session,
    parse_json,
    render_page,
    request_ip,
    require_session,
    see_other,
)
from portal.handlers.elevation import require_elevation
from portal.i18n import N_, gettext
from portal.keys import SESSIONS, WEBAUTHN
from portal.mail import when
from portal.sessions import Session
from portal.storage.base import WebAuthnCredential
from portal.webauthn import (
    DESCRIPTION_MAX,
    NAME_CONTROL_REASON,
    NAME_LENGTH_REASON,
    clean_description,
)

WEBAUTHN_SETTINGS = "/settings/passkeys"
ADDED = WEBAUTHN_SETTINGS + "/added"
REMOVED = WEBAUTHN_SETTINGS + "/removed"
RENAMED = WEBAUTHN_SETTINGS + "/renamed"


class DescriptionBody(BaseModel):
    """PUT .../credential/register and PUT .../credential/{id}: the credential's name."""

    model_config = ConfigDict(extra="ignore", str_max_length=256)

    description: str


async def response_body(request: web.Request) -> dict[str, Any]:
    """Return the JSON object a ceremony's answer is (RegistrationResponseJSON or
    AuthenticationResponseJSON); BadRequestError when the body is not a JSON object."""
    return await read_json(request)


NAME_INVALID = N_("The passkey's name is not valid: %(reason)s.")


def described(description: str) -> str:
    """Return the cleaned name, or BadRequestError saying what a name may be."""
    try:
        return clean_description(description)
    except ValueError as exc:
        raise BadRequestError(gettext(NAME_INVALID) % {"reason": exc}) from None


def _error_classes(base: type[PortalError]) -> list[type[PortalError]]:
    return [base, *(c for sub in base.__subclasses__() for c in _error_classes(sub))]


def script_messages() -> dict[str, Any]:
    """Return what static/webauthn.js may show, in the language in use, for a page to carry in
    a JSON block (templates/_macros.html webauthn_script): `refused` (a ceremony failed with
    nothing better to say), `cancelled` (the browser's prompt was cancelled or timed out: a
    NotAllowedError, WebAuthn Level 3 section 5.1.3/5.1.4.1) and `answers`, {the JSON API's
    English message: its translation} for every PortalError's public message and every reason a
    passkey's name is refused. The JSON API speaks English (portal.i18n): the script shows its
    message through `answers`, and `refused` for one it does not know.
    """
    answers = {m: gettext(m) for m in {c.public_message for c in _error_classes(PortalError)}}
    second_factor_first = ElevationRequiredError(second_factor=True).public_message
    answers[second_factor_first] = gettext(second_factor_first)
    for reason in (NAME_LENGTH_REASON, NAME_CONTROL_REASON):
        english = NAME_INVALID % {"reason": reason % {"most": DESCRIPTION_MAX}}
        reason_here = gettext(reason) % {"most": DESCRIPTION_MAX}
        answers[english] = gettext(NAME_INVALID) % {"reason": reason_here}
    return {
        "refused": gettext(WebAuthnFailedError.public_message),
        "cancelled": gettext("The passkey prompt was cancelled or timed out. Try again."),
        "answers": answers,
    }


def credential_json(credential: WebAuthnCredential) -> dict[str, Any]:
    """Return a credential as GET /api/secondfactor/webauthn/credentials lists it."""
    return {
        "id": credential.id,
        "description": credential.description,
        "created_at": credential.created_at,
        "last_used_at": credential.last_used_at,
        "aaguid": credential.aaguid,
        "backup_eligible": credential.backup_eligible,
        "backup_state": credential.backup_state,
    }


async def take_challenge(request: web.Request, session: Session) -> dict[str, Any] | None:
    """Return the session's challenge and drop it from the session (single use)."""
    record = session.webauthn_challenge
    if record is not None:
        await request.app[SESSIONS].update(session.id, {"webauthn_challenge": None})
    return await request.app[WEBAUTHN].claim(record)


# A credential's number as the storage keeps it: ASCII digits that fit a 64-bit INTEGER
# (SQLite's and PostgreSQL's bigint); a longer one cannot even be looked up (a 500 before).
_NUMBER = re.compile(r"[0-9]{1,18}")


def credential_number(text: str) -> int:
    """Return the credential number a path or form names (1 or more, at most 18 digits), or
    raise WebAuthnCredentialNotFoundError (404): no credential has another."""
    if not _NUMBER.fullmatch(text) or int(text) < 1:
        raise WebAuthnCredentialNotFoundError()
    return int(text)


# -- JSON API ---------------------------------------------------------------------------------


async def api_register_put(request: web.Request) -> web.Response:
    """Start a registration: {"status":"OK","data": PublicKeyCredentialCreationOptionsJSON}."""
    session = await require_elevation(request)
    body = await parse_json(request, DescriptionBody)
    challenge = await request.app[WEBAUTHN].begin_registration(
        session.username, session.display_name, described(body.description)
    )
    await request.app[SESSIONS].update(session.id, {"webauthn_challenge": challenge.record})
    return web.json_response({"status": "OK", "data": challenge.options})


async def api_register_post(request: web.Request) -> web.Response:
    """Complete it with the RegistrationResponseJSON: {"status":"OK","data":{credential}}."""
    session = await require_elevation(request)
    response = await response_body(request)
    record = await take_challenge(request, session)
    credential = await request.app[WEBAUTHN].complete_registration(
        session.username, record, response, request_ip(request)
    )
    return web.json_response({"status": "OK", "data": credential_json(credential)})


async def api_credentials_get(request: web.Request) -> web.Response:
    """List the signed-in user's credentials (no elevation: nothing secret is shown); 401 KO
    without a session."""
    session = await current_session(request)
    if session is None:
        raise SignInRequiredError()
    credentials = await request.app[WEBAUTHN].credentials(session.username)
    return web.json_response({"status": "OK", "data": [credential_json(c) for c in credentials]})


async def api_credential_put(request: web.Request) -> web.Response:
    """Rename a credential with {"description"}: {"status":"OK"}; 404 KO if not the user's."""
    session = await require_elevation(request)
    body = await parse_json(request, DescriptionBody)
    await request.app[WEBAUTHN].rename(
        session.username,
        credential_number(request.match_info["credential_id"]),
        described(body.description),
    )
    return web.json_response({"status": "OK"})


async def api_credential_delete(request: web.Request) -> web.Response:
    """Remove a credential: {"status":"OK"}; 404 KO when the user has no such credential."""
    session = await require_elevation(request)
    await request.app[WEBAUTHN].remove(
        session.username,
        credential_number(request.match_info["credential_id"]),
        actor="user",
        ip=request_ip(request),
    )
    return web.json_response({"status": "OK"})


# -- the settings page ----------------------------------------------------------------------------


async def _page(
    request: web.Request, session: Session, status: int = 200, **context: Any
) -> web.Response:
    credentials = await request.app[WEBAUTHN].credentials(session.username)
    rows = [
        {
            "id": c.id,
            "description": c.description,
            "added": when(c.created_at),
            "last_used": when(c.last_used_at) if c.last_used_at else N_("never"),
        }
        for c in credentials
    ]
    context.setdefault("forms", True)
    return render_page(request, "settings_passkeys.html", status, credentials=rows, **context)


async def settings_get(request: web.Request) -> web.Response:
    """Show the user's passkeys with rename and remove forms, and the add button (JavaScript)."""
    return await _page(request, await require_elevation(request, WEBAUTHN_SETTINGS))


def _result(message: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        session = await require_session(request, WEBAUTHN_SETTINGS)
        return await _page(request, session, status_message=message, forms=False)

    handler.__doc__ = f"The page after a change: says {message!r}, lists what is stored now."
    return handler


settings_added_get = _result(N_("Your passkey is added."))
settings_renamed_get = _result(N_("Your passkey is renamed."))
settings_removed_get = _result(N_("Your passkey is removed."))


async def settings_post(request: web.Request) -> web.Response:
    """action=rename (id, description) or action=remove (id); works without JavaScript."""
    session = await require_elevation(request, WEBAUTHN_SETTINGS)
    fields = await read_form(request)
    service = request.app[WEBAUTHN]
    number = 0
    try:
        number = credential_number(fields.get("id", ""))
        if fields.get("action") == "remove":
            await service.remove(session.username, number, actor="user", ip=request_ip(request))
            raise see_other(REMOVED)
        await service.rename(session.username, number, described(fields.get("description", "")))
    except (PortalError, ValueError) as exc:
        message = getattr(exc, "public_message", str(exc))
        status = getattr(exc, "status", 400)
        return await _page(request, session, status, error=message, error_id=number)
    raise see_other(RENAMED)
