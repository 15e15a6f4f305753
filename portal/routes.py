"""The whole URL surface on one screen."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from portal.handlers import health, reset, start
from portal.keys import CONFIG

STATIC = Path(__file__).resolve().parent.parent / "static"


def setup_routes(app: web.Application) -> None:
    """Register every route under its name."""
    add = app.router
    add.add_get("/", start.start_get, name="start")
    add.add_get("/api/health", health.health_get, name="health")
    add.add_static("/static/", STATIC, name="static")

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
