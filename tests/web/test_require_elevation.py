"""require_elevation, the gate every sensitive setting calls first: a 403 in JSON for the API, a
redirect to /settings/elevate?next=... for pages, and through once the mailed code is typed.

The app under test gets two routes of the test's own (a page and an API call) guarded by it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from portal.app import create_app
from portal.deps import (
    Dependencies,
    captcha_from_config,
    notifier_from_config,
    sessions_from_config,
    storage_from_config,
    users_from_config,
)
from portal.handlers.elevation import require_elevation
from portal.security_questions import Argon2AnswerHasher
from tests.conftest import ConfigFactory, FakeClock
from tests.integration.smtp_server import SmtpServer
from tests.web.conftest import CHEAP_ARGON2, Client, Portal, portal_settings, sign_in, submit
from tests.web.test_elevation import API, HOME, code_from

PAGE = "/settings/sensitive"
CALL = "/api/sensitive"


async def sensitive_page(request: web.Request) -> web.Response:
    session = await require_elevation(request)
    return web.Response(text=f"sensitive page for {session.username}")


async def sensitive_call(request: web.Request) -> web.Response:
    session = await require_elevation(request)
    return web.json_response({"status": "OK", "data": {"username": session.username}})


@pytest.fixture
async def guarded(
    make_config: ConfigFactory, users_file: Path, smtp: SmtpServer, clock: FakeClock
) -> AsyncIterator[Portal]:
    config = make_config(**portal_settings(smtp.port, users_file))
    storage = storage_from_config(config)
    deps = Dependencies(
        users=users_from_config(config),
        storage=storage,
        notifier=notifier_from_config(config),
        clock=clock,
        answer_hasher=Argon2AnswerHasher(CHEAP_ARGON2),
        captcha=captcha_from_config(config, storage, clock),
        sessions=sessions_from_config(config, clock),
    )
    app = create_app(config, deps)
    # aiohttp finds a plain path by its index before the portal's catch-all route.
    app.router.add_get(PAGE, sensitive_page)
    app.router.add_get(CALL, sensitive_call)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    yield Portal(client, config, clock, smtp, storage, users_file)
    await client.close()


async def signed_in(guarded: Portal) -> Portal:
    assert (await sign_in(guarded.client)).status == 302
    return guarded


async def test_the_gate_answers_401_then_403_in_json_then_lets_an_elevated_session_through(
    guarded: Portal,
) -> None:
    anonymous = await guarded.client.get(CALL, headers=HOME)
    assert anonymous.status == 401 and (await anonymous.json())["status"] == "KO"

    await signed_in(guarded)
    refused = await guarded.client.get(CALL, headers=HOME)
    assert refused.status == 403
    assert await refused.json() == {
        "status": "KO",
        "message": "Confirm your identity with a one-time code first.",
    }

    assert (await guarded.client.post(API, json={}, headers=HOME)).status == 200
    code = code_from(await guarded.next_mail())
    assert (await guarded.client.put(API, json={"otc": code}, headers=HOME)).status == 200

    allowed = await guarded.client.get(CALL, headers=HOME)
    assert allowed.status == 200 and (await allowed.json())["data"] == {"username": "john"}
    elsewhere = await guarded.client.get(CALL, headers={"X-Forwarded-For": "203.0.113.9"})
    assert elsewhere.status == 403


async def test_the_gate_sends_a_page_to_the_elevation_page_and_back(guarded: Portal) -> None:
    anonymous = await guarded.client.get(PAGE, allow_redirects=False)
    assert anonymous.status == 303 and anonymous.headers["Location"].startswith("/?rd=")

    await signed_in(guarded)
    response = await guarded.client.get(f"{PAGE}?tab=2", allow_redirects=False)
    assert response.status == 303
    location = urlsplit(response.headers["Location"])
    assert location.path == "/settings/elevate"
    assert parse_qs(location.query) == {"next": [f"{PAGE}?tab=2"]}

    sent = await submit(
        guarded.client,
        response.headers["Location"],
        "/settings/elevate",
        next=f"{PAGE}?tab=2",
    )
    assert sent.status == 303
    code = code_from(await guarded.next_mail())
    done = await submit(
        guarded.client,
        sent.headers["Location"],
        "/settings/elevate/code",
        otc=code,
        next=f"{PAGE}?tab=2",
    )
    assert done.status == 303 and done.headers["Location"] == f"{PAGE}?tab=2"
    page = await guarded.client.get(done.headers["Location"])
    assert page.status == 200 and await page.text() == "sensitive page for john"
