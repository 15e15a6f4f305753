"""The whole URL surface on one screen."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from portal.handlers import authz, captcha, health, reset, settings, signin
from portal.keys import CAPTCHA, CONFIG

STATIC = Path(__file__).resolve().parent.parent / "static"


def setup_routes(app: web.Application) -> None:
    """Register every route under its name."""
    add = app.router
    add.add_get("/", signin.signin_get, name="signin")
    add.add_post("/", signin.signin_post)
    add.add_post("/api/firstfactor", signin.api_firstfactor_post)
    add.add_get("/logout", signin.logout_get, name="logout")
    add.add_post("/api/logout", signin.api_logout_post)
    add.add_get("/api/authz/auth-request", authz.auth_request_get, name="auth_request")
    add.add_get("/api/verify", authz.auth_request_get, name="verify")
    add.add_get("/api/health", health.health_get, name="health")
    add.add_static("/static/", STATIC, name="static")
    if app[CAPTCHA].self_hosted:
        add.add_get("/api/captcha/challenge", captcha.challenge_get, name="captcha_challenge")

    password_reset = app[CONFIG].authentication_backend.password_reset
    if password_reset.disable or password_reset.custom_url:
        return  # the reset pages and API do not exist at all
    add.add_get("/reset-password/step1", reset.step1_get, name="reset_step1")
    add.add_post("/reset-password/step1", reset.step1_post)
    add.add_get("/reset-password/step2", reset.step2_get, name="reset_step2")
    add.add_post("/reset-password/step2", reset.step2_post)
    add.add_get("/revoke/reset-password", reset.revoke_get, name="revoke_reset")
    add.add_post("/revoke/reset-password", reset.revoke_post)
    add.add_post("/api/reset-password/identity/start", reset.api_start_post)
    add.add_post("/api/reset-password/identity/finish", reset.api_finish_post)
    add.add_post("/api/reset-password", reset.api_reset_post)
    add.add_delete("/api/reset-password", reset.api_reset_delete)
    if app[CONFIG].identity_validation.reset_password.security_questions.enabled:
        add.add_post("/reset-password/step1/answers", reset.step1_answers_post)
        add.add_post("/api/reset-password/identity/questions", reset.api_questions_post)
        add.add_get("/settings/security-questions", settings.security_questions_get,
                    name="security_questions")  # fmt: skip
        add.add_post("/settings/security-questions", settings.security_questions_post)
