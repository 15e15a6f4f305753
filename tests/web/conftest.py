"""Fixtures for stories told over HTTP: a fake clock, a real SMTP server, a real portal."""

from __future__ import annotations

import asyncio
import email.message
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from portal.app import create_app
from portal.config import Argon2Config, Config
from portal.deps import (
    Dependencies,
    captcha_from_config,
    notifier_from_config,
    sessions_from_config,
    storage_from_config,
    users_from_config,
)
from portal.logs import JsonFormatter, SafeAccessLogger, TextFormatter
from portal.security_questions import AnswerHasher, Argon2AnswerHasher
from portal.storage.base import Storage
from tests.conftest import SESSION_SECRET, ConfigFactory, FakeClock, deep_merge
from tests.integration.smtp_server import SmtpServer, running_smtp_server

Client = TestClient[web.Request, web.Application]
PORTAL_URL = "http://127.0.0.1"
CHEAP_ARGON2 = Argon2Config(memory=1024, iterations=1, parallelism=1)
DEMO_PASSWORD = "password"  # noqa: S105 - every user in the users_file fixture has it
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Portal:
    """A running portal with the parts a story looks at."""

    client: Client
    config: Config
    clock: FakeClock
    smtp: SmtpServer
    storage: Storage
    users_file: Path

    async def drain_outbox(self, timeout: float = 10.0) -> None:
        """Wait until the outbox worker has handled everything queued."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.storage.outbox_pending():
            assert loop.time() < deadline, "the outbox did not drain"
            await asyncio.sleep(0.02)

    async def next_mail(self, index: int | None = None) -> email.message.EmailMessage:
        """Wait for the outbox to drain and return the newest (or the index-th) mail."""
        await self.drain_outbox()
        deliveries = self.smtp.deliveries
        assert deliveries, "no mail was delivered"
        return deliveries[-1 if index is None else index].message


def smtp_settings(smtp_port: int) -> dict[str, Any]:
    """Notifier settings for the plain test SMTP server."""
    return {
        "smtp": {
            "address": f"smtp://127.0.0.1:{smtp_port}",
            "sender": "Portal <portal@example.com>",
            "disable_require_tls": True,
            "timeout": "2s",
        },
        "disable_startup_check": True,
    }


def portal_settings(smtp_port: int, users_file: Path) -> dict[str, Any]:
    """The configuration overrides every story starts from."""
    roomy = {"buckets": [{"period": "10 minutes", "requests": 1000}]}
    return {
        # Stories make many requests from one address; the IP limits have their own tests.
        "server": {
            "endpoints": {
                "rate_limits": {"reset_password_start": roomy, "reset_password_finish": roomy}
            }
        },
        "notifier": {"filesystem": None, **smtp_settings(smtp_port)},
        "authentication_backend": {
            "file": {
                "path": str(users_file),
                "search": {"email": True, "case_insensitive": True},
                "password": {"argon2": {"memory": 1024, "iterations": 1, "parallelism": 1}},
            }
        },
        "session": {
            "secret": SESSION_SECRET,
            "cookies": [{"domain": "127.0.0.1", "authelia_url": PORTAL_URL}],
        },
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with running_smtp_server() as server:
        yield server


StartPortal = Callable[..., Awaitable[Portal]]


@pytest.fixture
async def start_portal(
    make_config: ConfigFactory, users_file: Path, smtp: SmtpServer, clock: FakeClock
) -> AsyncIterator[StartPortal]:
    """Start portals on the same files (call again to restart); all are stopped afterwards."""
    running: list[Client] = []

    async def start(*, answer_hasher: AnswerHasher | None = None, **overrides: Any) -> Portal:
        settings = portal_settings(smtp.port, users_file)
        config = make_config(**deep_merge(settings, overrides))
        storage = storage_from_config(config)
        deps = Dependencies(
            users=users_from_config(config),
            storage=storage,
            notifier=notifier_from_config(config),
            clock=clock,
            answer_hasher=answer_hasher or Argon2AnswerHasher(CHEAP_ARGON2),
            captcha=captcha_from_config(config, storage, clock),
            sessions=sessions_from_config(config, clock),
        )
        # The access logger `portal serve` uses: the default one would log reset tokens.
        server = TestServer(create_app(config, deps))
        await server.start_server(access_log_class=SafeAccessLogger)
        client = TestClient(server)
        await client.start_server()
        running.append(client)
        return Portal(client, config, clock, smtp, storage, users_file)

    yield start
    for client in running:
        await client.close()


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await start_portal()


# --- what a user does -----------------------------------------------------------------------------


def csrf_of(html: str) -> str:
    """Return the CSRF token a page's form carries."""
    match = _CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


async def submit(client: Client, page: str, action: str, /, **fields: str) -> ClientResponse:
    """Load a page, then post its form with the given fields (as a browser would)."""
    loaded = await client.get(page)
    fields["csrf_token"] = csrf_of(await loaded.text())
    return await client.post(action, data=fields, allow_redirects=False)


async def follow_result(client: Client, response: ClientResponse) -> ClientResponse:
    """Follow a form's 303 to its result page as a browser does (redirect-after-POST).

    The answer to the POST is kept in the result's `history`, so a story can still look at it.
    """
    if response.status != 303:
        return response
    shown = await client.get(response.headers["Location"], allow_redirects=False)
    shown._history = (response,)  # what aiohttp sets when it follows a redirect itself
    return shown


async def request_reset(client: Client, identifier: str, **fields: str) -> ClientResponse:
    """Ask for a reset link through the HTML form (with extra fields, such as the CAPTCHA's),
    following the redirect to the page that says what happened."""
    return await follow_result(
        client,
        await submit(
            client, "/reset-password/step1", "/reset-password/step1", username=identifier, **fields
        ),
    )


async def sign_in(
    client: Client, username: str = "john", password: str = DEMO_PASSWORD, **fields: str
) -> ClientResponse:
    """Post the sign-in form (with extra fields, such as rd or the CAPTCHA's); callers assert."""
    return await submit(client, "/", "/", username=username, password=password, **fields)


async def no_mail_sent(portal: Portal) -> bool:
    """Tell whether nothing was (or will be) mailed: wait for the outbox, then look."""
    await portal.drain_outbox()
    return portal.smtp.deliveries == []


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """Return the structured fields portal.audit put on a record (``extra={"fields": ...}``).

    Raises KeyError for a record that carries none.
    """
    fields: dict[str, Any] = record.__dict__["fields"]
    return fields


def as_logged(records: list[logging.LogRecord]) -> str:
    """Return the records as the portal's log would hold them, in both `log.format`s (text and
    JSON lines, portal/logs.py), for tests that look for what must never be logged."""
    formatters = (TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"), JsonFormatter())
    return "\n".join(f.format(r) for r in records for f in formatters)


def audit_events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """Return the structured fields of every audit event of that name logged so far."""
    return [
        fields_of(r) for r in caplog.records if r.name == "portal.audit" and r.getMessage() == event
    ]


def same_for_everyone(response: ClientResponse) -> dict[str, str]:
    """Return the answer's headers but those that differ between any two answers (Date, and
    X-Request-Id: each request's own random id), for answers that must not tell who asked."""
    return {k: v for k, v in response.headers.items() if k.lower() not in ("date", "x-request-id")}


def has_session(response: ClientResponse) -> bool:
    """Tell whether the answer set a session cookie."""
    return "portal_session" in response.cookies


async def signed_in(client: Client) -> int:
    """Ask what nginx asks for a protected page; 200 means the session opens it."""
    response = await client.get(
        "/api/authz/auth-request",
        headers={"X-Original-URL": "http://127.0.0.1/private", "X-Original-Method": "GET"},
        allow_redirects=False,
    )
    return response.status


def reset_link_from(mail: email.message.EmailMessage) -> str:
    """Return the link in the mail's HTML part (the element with id="reset-link")."""
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    match = re.search(r'id="reset-link" href="([^"]+)"', html.get_content())
    assert match, "no reset link in the HTML part"
    return match.group(1).replace("&amp;", "&")


def text_of(mail: email.message.EmailMessage) -> str:
    """Return the mail's plain-text part."""
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def token_of(link: str) -> str:
    """Return the token a reset link carries."""
    return parse_qs(urlsplit(link).query)["token"][0]


def path_of(link: str) -> str:
    """Return a link's path and query (the test client talks to the portal directly)."""
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


async def open_link(client: Client, link: str) -> ClientResponse:
    """Open a reset link the way a browser does, following the redirect."""
    return await client.get(path_of(link))


async def choose_password(
    client: Client, password: str, confirm: str | None = None
) -> ClientResponse:
    """Fill in the new-password form shown after opening a link (following its redirect)."""
    return await follow_result(
        client,
        await submit(
            client,
            "/reset-password/step2",
            "/reset-password/step2",
            password=password,
            password_confirm=password if confirm is None else confirm,
        ),
    )
