"""The health endpoint that load balancers, nginx and monitoring probe."""

from __future__ import annotations

import logging

from aiohttp import web

from portal.keys import SESSION_RECORDS, STORAGE, USERS

log = logging.getLogger("portal.health")


async def health_get(request: web.Request) -> web.Response:
    """Answer OK when the user backend, the storage and (with session.redis) Redis answer.

    503 with `backends` naming each as 'ok' or 'failing' otherwise ('sessions' is Redis).
    """
    backends = {"users": "ok", "storage": "ok"}
    records = request.app[SESSION_RECORDS]
    if records is not None:
        backends["sessions"] = "ok" if await records.healthy() else "failing"
    try:
        if not await request.app[USERS].healthy():
            backends["users"] = "failing"
    except Exception:
        log.exception("health: the user backend check failed")
        backends["users"] = "failing"
    try:
        await request.app[STORAGE].schema_version()
    except Exception:
        log.exception("health: the storage check failed")
        backends["storage"] = "failing"
    if all(state == "ok" for state in backends.values()):
        return web.json_response({"status": "OK"})
    failing = ", ".join(name for name, state in backends.items() if state != "ok")
    return web.json_response(
        {"status": "KO", "message": f"failing: {failing}", "backends": backends}, status=503
    )
