"""What nginx's auth_request endpoints answer, header by header: the Remote-* headers (200),
where to sign in (401), and the request's id; nothing meant for a browser page (nginx keeps only
what auth_request_set reads, deploy/nginx/portal-authrequest.conf), while every other route keeps
its security headers. A failure inside the verdict is a plain 500 with no traceback."""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

import pytest

from portal.authz import Authorizer
from tests.web.conftest import Portal, StartPortal, sign_in
from tests.web.test_signin import RULES, ask

PAGE_HEADERS = (
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "X-Frame-Options",
    "Cross-Origin-Opener-Policy",
)
HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await start_portal(access_control=RULES)


async def test_every_authz_answer_carries_its_verdict_and_request_id_and_no_page_headers(
    portal: Portal,
) -> None:
    anonymous = await ask(portal.client, "http://127.0.0.1/private")
    denied = await ask(portal.client, "http://127.0.0.1/deny")
    public = await ask(portal.client, "http://127.0.0.1/public")
    assert (await sign_in(portal.client, "john", "password")).status == 302
    allowed = await ask(portal.client, "http://127.0.0.1/private")
    legacy = await portal.client.get(
        "/api/verify", headers={"X-Original-URL": "http://127.0.0.1/private"}
    )
    answers = [anonymous, denied, public, allowed, legacy]
    assert [a.status for a in answers] == [401, 403, 200, 200, 200]
    assert anonymous.headers["Location"] == "http://127.0.0.1/?rd=" + quote(
        "http://127.0.0.1/private", safe=""
    )
    for answer in (allowed, legacy):
        assert answer.headers["Remote-User"] == "john"
        assert answer.headers["Remote-Groups"] == "admins,dev"
        assert answer.headers["Remote-Name"] == "John Doe"
        assert answer.headers["Remote-Email"] == "john.doe@authelia.com"
    assert "Remote-User" not in public.headers
    ids = [a.headers["X-Request-Id"] for a in answers]
    assert all(HEX32.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)
    for answer in answers:
        assert not [name for name in PAGE_HEADERS if name in answer.headers], answer.headers
    page = await portal.client.get("/api/health")
    assert all(name in page.headers for name in PAGE_HEADERS)
    # Outside the endpoints' own routes (another method, an unknown path) nothing changes.
    wrong_method = await portal.client.post("/api/authz/auth-request", json={})
    unknown = await portal.client.get("/api/authz/nothing-here")
    assert (wrong_method.status, unknown.status) == (405, 404)
    assert await unknown.json() == {"status": "KO", "message": "There is no page at this address."}
    assert all(name in wrong_method.headers for name in PAGE_HEADERS)


async def test_a_failing_verdict_is_a_plain_500_logged_once(
    portal: Portal, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the verdict broke")

    monkeypatch.setattr(Authorizer, "verdict", broken)
    answer = await ask(portal.client, "http://127.0.0.1/private")
    assert answer.status == 500
    body = await answer.text()
    assert "Traceback" not in body and "the verdict broke" not in body
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/authz/nothing-here", 404),
        ("GET", "/api/authz/auth-request/", 404),
        ("GET", "/api/verify/", 404),
        ("GET", "/api/verifyx", 404),
        ("POST", "/api/verify", 405),
        ("DELETE", "/api/authz/auth-request", 405),
        ("OPTIONS", "/api/verify", 405),
    ],
)
async def test_requests_outside_the_authz_routes_keep_every_page_header(
    portal: Portal, method: str, path: str, status: int
) -> None:
    # Without a body: the fallback route (404/405) is a route too, and it is no auth_request.
    answer = await portal.client.request(method, path)
    assert answer.status == status
    missing = [name for name in PAGE_HEADERS if name not in answer.headers]
    assert not missing, (method, path, answer.headers)
    assert answer.headers["Cache-Control"] == "no-store"


async def test_no_authz_answer_may_be_stored_by_a_cache(portal: Portal) -> None:
    # The Remote-* headers of one user's 200 sit at the same URL for everyone: a cache on the
    # way (an inherited nginx proxy_cache with proxy_cache_valid) must never keep them.
    anonymous = await ask(portal.client, "http://127.0.0.1/private")
    denied = await ask(portal.client, "http://127.0.0.1/deny")
    public = await ask(portal.client, "http://127.0.0.1/public")
    assert (await sign_in(portal.client, "john", "password")).status == 302
    allowed = await ask(portal.client, "http://127.0.0.1/private")
    legacy = await portal.client.get(
        "/api/verify", headers={"X-Original-URL": "http://127.0.0.1/private"}
    )
    head = await portal.client.head(
        "/api/verify", headers={"X-Original-URL": "http://127.0.0.1/private"}
    )
    answers = [anonymous, denied, public, allowed, legacy, head]
    assert [a.status for a in answers] == [401, 403, 200, 200, 200, 200]
    assert allowed.headers["Remote-User"] == head.headers["Remote-User"] == "john"
    assert [a.headers.get("Cache-Control") for a in answers] == ["no-store"] * len(answers)
