"""The signed-in user's settings: security questions."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from portal.bodies import read_form
from portal.errors import SecurityAnswersRejectedError
from portal.handlers.common import render_page, request_ip, require_session, see_other
from portal.keys import QUESTIONS
from portal.mail import when
from portal.sessions import Session

SECURITY_QUESTIONS = "/settings/security-questions"
# Result pages of the form (redirect-after-POST): each says only what the stored state confirms.
SAVED = SECURITY_QUESTIONS + "/saved"
REMOVED = SECURITY_QUESTIONS + "/removed"


async def _page(
    request: web.Request, session: Session, status: int = 200, **context: Any
) -> web.Response:
    questions = request.app[QUESTIONS]
    settings = questions.settings
    set_at = await questions.set_at(session.username)
    context.setdefault("chosen", settings.questions[: settings.setup])
    context.setdefault("answers", [""] * settings.setup)
    context.setdefault("faulty", frozenset())
    context.update(
        saved=context.get("saved", False) and set_at is not None,
        removed=context.get("removed", False) and set_at is None,
        questions=settings.questions,
        setup=settings.setup,
        asked=settings.asked,
        set_at=when(set_at) if set_at is not None else None,
    )
    return render_page(request, "settings_security_questions.html", status, **context)


async def security_questions_get(request: web.Request) -> web.Response:
    """Show whether the questions are set up (never the answers) and the form to set them."""
    return await _page(request, await require_session(request, SECURITY_QUESTIONS))


async def security_questions_saved_get(request: web.Request) -> web.Response:
    """The form's page after a save; it says "saved" only while questions are set up."""
    return await _page(request, await require_session(request, SECURITY_QUESTIONS), saved=True)


async def security_questions_removed_get(request: web.Request) -> web.Response:
    """The form's page after a removal; it says "removed" only while none are set up."""
    return await _page(request, await require_session(request, SECURITY_QUESTIONS), removed=True)


async def security_questions_post(request: web.Request) -> web.Response:
    """Replace (or remove) the questions after checking the current password."""
    session = await require_session(request, SECURITY_QUESTIONS)
    fields = await read_form(request)
    if fields.get("action") == "remove":
        try:
            await request.app[QUESTIONS].remove(
                session.username, fields.get("password", ""), request_ip(request)
            )
        except SecurityAnswersRejectedError as exc:
            return await _page(request, session, status=400, remove_reasons=exc.reasons)
        raise see_other(REMOVED)
    setup = request.app[QUESTIONS].settings.setup
    choices = [
        (fields.get(f"question_{i}", ""), fields.get(f"answer_{i}", "")) for i in range(setup)
    ]
    try:
        await request.app[QUESTIONS].set_up(
            session.username, fields.get("password", ""), choices, request_ip(request)
        )
    except SecurityAnswersRejectedError as exc:
        # What was typed is kept (the answers, the questions), never the password.
        return await _page(
            request,
            session,
            status=400,
            reasons=exc.reasons,
            chosen=[q for q, _ in choices],
            answers=[a for _, a in choices],
            faulty=exc.answers,
        )
    raise see_other(SAVED)
