"""The nginx files admins copy (deploy/nginx/), as shipped, on a real nginx: the auth_request
wiring, the Remote-* headers, HSTS and the rate limit on password reset.

The portal here is a stand-in that answers the authorization endpoint by a fixed rule and records
what nginx sends it: it proves the wiring only. The portal's own decisions are tested elsewhere.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
import trustme
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.integration.nginx import (
    APP_HOST,
    DEPLOY,
    LAYOUT,
    PORTAL_HOST,
    SUBSTITUTED,
    Nginx,
    running_nginx,
)
from tests.integration.process import HOST
from tests.integration.protected_app import ProtectedApp, run_protected_app

AUTHZ_PATH = "/api/authz/auth-request"
SESSION_COOKIE = "portal_session"
HSTS = "max-age=31536000; includeSubDomains"
JOHN = {
    "Remote-User": "john",
    "Remote-Groups": "admins,dev",
    "Remote-Name": "John Doe",
    "Remote-Email": "john.doe@authelia.com",
    # What identity_token adds: the stand-in's token is opaque; the wiring passes it on.
    "Remote-JWT": "stand-in.signed.token",
}
BURST = 10  # portal.conf: limit_req zone=portal_reset burst=10 nodelay


# --- the stand-in portal ---------------------------------------------------------------------


@dataclass
class AuthzCall:
    """One request nginx made to the authorization endpoint."""

    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class StandInPortal:
    """A stand-in for the portal, for the nginx wiring test only, on a free loopback port.

    Its authorization endpoint's rule: an X-Original-URL path under /deny gets 403, under
    /public 200 with nobody named (a bypass rule); otherwise `Cookie: portal_session=ok` gets 200
    as john, and anything else 401 with Location <portal_url>/?rd=<X-Original-URL>. Every other
    path is a portal page: 200, with an HSTS header of its own, as the real portal sends.
    """

    host: str
    port: int = 0
    portal_url: str = ""  # https://portal.example.com:<nginx port>, once nginx is up
    authz_calls: list[AuthzCall] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        """Return host:port for nginx's upstream."""
        return f"{self.host}:{self.port}"

    async def authz(self, request: web.Request) -> web.Response:
        """Decide by the stand-in rule, and record what nginx sent."""
        self.authz_calls.append(
            AuthzCall(
                request.method,
                request.path_qs,
                CIMultiDictProxy(CIMultiDict(request.headers)),
                await request.read(),
            )
        )
        original = request.headers.get("X-Original-URL", "")
        path = urlsplit(original).path
        if path.startswith("/deny"):
            return web.Response(status=403, text="denied")
        if path.startswith("/public"):
            return web.Response(status=200)
        if request.cookies.get(SESSION_COOKIE) == "ok":
            return web.Response(status=200, headers=JOHN)
        location = f"{self.portal_url}/?rd={quote(original, safe='')}"
        return web.Response(status=401, headers={"Location": location}, text="sign in")

    async def page(self, request: web.Request) -> web.Response:
        """Answer any portal page."""
        self.pages.append(request.path)
        return web.Response(
            text=f"stand-in portal page {request.path}",
            headers={"Strict-Transport-Security": "max-age=60"},
        )


@pytest.fixture
async def stand_in_portal() -> AsyncIterator[StandInPortal]:
    """Serve the stand-in portal until the test ends."""
    portal = StandInPortal(HOST)
    web_app = web.Application()
    web_app.router.add_get(AUTHZ_PATH, portal.authz)
    web_app.router.add_route("*", "/{tail:.*}", portal.page)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, 0).start()
        portal.port = runner.addresses[0][1]
        yield portal
    finally:
        await runner.cleanup()


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx_ca() -> trustme.CA:
    """The private CA that signs nginx's certificate for *.example.com and example.com."""
    return trustme.CA()


@pytest.fixture
async def protected_app() -> AsyncIterator[ProtectedApp]:
    """The app behind nginx, echoing who it was told the visitor is."""
    async with run_protected_app() as app:
        yield app


@pytest.fixture
async def nginx(
    tmp_path: Path,
    nginx_ca: trustme.CA,
    stand_in_portal: StandInPortal,
    protected_app: ProtectedApp,
) -> AsyncIterator[Nginx]:
    """nginx with the shipped files, in front of the stand-in portal and the protected app."""
    with running_nginx(
        tmp_path / "nginx", nginx_ca, portal=stand_in_portal.address, app=protected_app.address
    ) as server:
        stand_in_portal.portal_url = server.url(PORTAL_HOST, "")
        yield server


@pytest.fixture
async def http(nginx: Nginx) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that reaches portal.example.com and app.example.com on nginx, verifying TLS."""
    async with nginx.client() as session:
        yield session


# --- actions ---------------------------------------------------------------------------------


@dataclass
class Reply:
    """What a visitor got back."""

    status: int
    headers: CIMultiDictProxy[str]
    text: str

    def json(self) -> Any:
        """Parse the body (the protected app's echo)."""
        return json.loads(self.text)


async def visit(
    http: aiohttp.ClientSession,
    url: str,
    *,
    method: str = "GET",
    signed_in: bool = False,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> Reply:
    """Make one request as a browser would, without following redirects."""
    sent = dict(headers or {})
    if signed_in:
        sent["Cookie"] = f"{SESSION_COOKIE}=ok"
    async with http.request(
        method, url, headers=sent, data=data, allow_redirects=False
    ) as response:
        return Reply(response.status, response.headers, await response.text())


# --- the configuration -----------------------------------------------------------------------


def test_nginx_accepts_the_shipped_files(nginx: Nginx) -> None:
    result = nginx.check_config()

    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr


def test_only_addresses_ports_and_certificate_paths_differ_from_the_shipped_files(
    nginx: Nginx,
) -> None:
    for target, source in LAYOUT.items():
        shipped = (DEPLOY / source).read_text().splitlines()
        rendered = (nginx.workdir / target).read_text().splitlines()

        assert len(rendered) == len(shipped), target
        for before, after in zip(shipped, rendered, strict=True):
            if before != after:
                assert any(value in before for value in SUBSTITUTED), (target, before, after)


def test_the_zone_portal_conf_documents_is_the_one_portal_http_conf_defines() -> None:
    zone = re.compile(r"limit_req_zone .*;")
    defined = zone.findall((DEPLOY / "portal-http.conf").read_text())
    documented = zone.findall((DEPLOY / "portal.conf").read_text())

    assert defined == documented and len(defined) == 1


# --- the protected app -----------------------------------------------------------------------


async def test_anonymous_visitor_is_sent_to_sign_in_with_the_way_back(
    nginx: Nginx, http: aiohttp.ClientSession, protected_app: ProtectedApp
) -> None:
    wanted = nginx.url(APP_HOST, "/reports/2024?page=2")

    reply = await visit(http, wanted)

    assert reply.status == 302
    assert reply.headers["Location"] == (
        f"{nginx.url(PORTAL_HOST, '/')}?rd={quote(wanted, safe='')}"
    )
    assert protected_app.seen == []


async def test_nginx_asks_the_portal_about_the_original_request_and_sends_no_body(
    nginx: Nginx, http: aiohttp.ClientSession, stand_in_portal: StandInPortal
) -> None:
    wanted = nginx.url(APP_HOST, "/upload?as=csv")

    await visit(
        http,
        wanted,
        method="POST",
        signed_in=True,
        data=b"a,b,c\n" * 1000,
        headers={
            "X-Original-URL": "https://public.example.com/",
            "X-Original-Method": "GET",
            "X-Forwarded-For": "203.0.113.9",
            "X-Request-Id": "made-up-by-the-visitor",
        },
    )

    [call] = stand_in_portal.authz_calls
    # nginx's own id for the request, which the portal logs under: never the visitor's.
    assert re.fullmatch(r"[0-9a-f]{32}", call.headers.get("X-Request-Id", ""))
    assert call.path_qs == AUTHZ_PATH
    assert call.headers.getall("X-Original-URL") == [wanted]
    assert call.headers.getall("X-Original-Method") == ["POST"]
    assert call.headers.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert call.headers.getall("X-Forwarded-Host") == [f"{APP_HOST}:{nginx.https_port}"]
    assert call.headers.getall("X-Forwarded-Proto") == ["https"]
    assert call.headers.get("Cookie") == f"{SESSION_COOKIE}=ok"
    assert call.body == b""
    assert "Content-Length" not in call.headers and "Transfer-Encoding" not in call.headers


async def test_signed_in_visitor_reaches_the_app_as_the_portal_user(
    nginx: Nginx, http: aiohttp.ClientSession
) -> None:
    reply = await visit(http, nginx.url(APP_HOST, "/reports?page=2"), signed_in=True)

    assert reply.status == 200
    seen = reply.json()
    assert (seen["path"], seen["query"]) == ("/reports", "page=2")
    assert seen["remote"] == {name: [value] for name, value in JOHN.items()}
    assert seen["forwarded"]["X-Forwarded-For"] == ["127.0.0.1"]
    assert seen["forwarded"]["X-Forwarded-Proto"] == ["https"]


async def test_denied_visitor_gets_403_and_the_app_sees_nothing(
    nginx: Nginx, http: aiohttp.ClientSession, protected_app: ProtectedApp
) -> None:
    reply = await visit(http, nginx.url(APP_HOST, "/deny/admin"), signed_in=True)

    assert reply.status == 403
    assert protected_app.seen == []


async def test_visitor_cannot_put_words_in_the_portals_mouth(
    nginx: Nginx, http: aiohttp.ClientSession
) -> None:
    forged = {
        "Remote-User": "admin",
        "Remote-Groups": "admins",
        "Remote-Name": "Admin",
        "Remote-Email": "admin@example.com",
        "Remote-JWT": "forged.visitor.token",
        "X-Forwarded-For": "203.0.113.9",
    }

    as_john = await visit(http, nginx.url(APP_HOST, "/"), signed_in=True, headers=forged)
    as_nobody = await visit(http, nginx.url(APP_HOST, "/public/page"), headers=forged)

    assert as_john.json()["remote"] == {name: [value] for name, value in JOHN.items()}
    assert as_john.json()["forwarded"]["X-Forwarded-For"] == ["127.0.0.1"]
    assert as_nobody.status == 200
    assert as_nobody.json()["remote"] == {}


async def test_forged_remote_header_spelled_differently_does_not_reach_the_app(
    nginx: Nginx, http: aiohttp.ClientSession
) -> None:
    reply = await visit(
        http,
        nginx.url(APP_HOST, "/public/page"),
        headers={
            "REMOTE-USER": "admin",
            "Remote_User": "admin",
            "remote-groups": "admins",
            "remote-jwt": "forged.visitor.token",
            "Remote_JWT": "forged.visitor.token",
        },
    )

    assert reply.status == 200
    assert reply.json()["remote"] == {}


async def test_visitor_cannot_call_the_internal_authorization_location(
    nginx: Nginx,
    http: aiohttp.ClientSession,
    stand_in_portal: StandInPortal,
    protected_app: ProtectedApp,
) -> None:
    reply = await visit(http, nginx.url(APP_HOST, "/internal/portal/authz"), signed_in=True)

    assert reply.status == 404
    assert stand_in_portal.authz_calls == [] and protected_app.seen == []


async def test_a_name_no_server_block_claims_is_refused(
    nginx: Nginx,
    http: aiohttp.ClientSession,
    stand_in_portal: StandInPortal,
    protected_app: ProtectedApp,
) -> None:
    reply = await visit(
        http, nginx.url(APP_HOST, "/"), signed_in=True, headers={"Host": "public.example.com"}
    )

    assert reply.status == 421
    assert stand_in_portal.authz_calls == [] and protected_app.seen == []


# --- the portal's own site -------------------------------------------------------------------


async def test_portal_pages_go_through_and_its_authorization_endpoints_do_not(
    nginx: Nginx, http: aiohttp.ClientSession, stand_in_portal: StandInPortal
) -> None:
    page = await visit(http, nginx.url(PORTAL_HOST, "/?rd=x"))
    authz = await visit(http, nginx.url(PORTAL_HOST, AUTHZ_PATH))
    verify = await visit(http, nginx.url(PORTAL_HOST, "/api/verify"))

    assert page.status == 200 and page.text == "stand-in portal page /"
    assert (authz.status, verify.status) == (404, 404)
    assert stand_in_portal.pages == ["/"] and stand_in_portal.authz_calls == []


async def test_both_sites_send_one_hsts_header_on_every_answer(
    nginx: Nginx, http: aiohttp.ClientSession
) -> None:
    replies = [
        await visit(http, nginx.url(PORTAL_HOST, "/")),
        await visit(http, nginx.url(PORTAL_HOST, "/api/verify")),
        await visit(http, nginx.url(APP_HOST, "/"), signed_in=True),
        await visit(http, nginx.url(APP_HOST, "/")),
        await visit(http, nginx.url(APP_HOST, "/deny")),
    ]

    assert [reply.status for reply in replies] == [200, 404, 200, 302, 403]
    for reply in replies:
        assert reply.headers.getall("Strict-Transport-Security") == [HSTS]


async def test_a_burst_on_password_reset_gets_429_and_sign_in_still_works(
    nginx: Nginx, http: aiohttp.ClientSession, stand_in_portal: StandInPortal
) -> None:
    statuses = [
        (await visit(http, nginx.url(PORTAL_HOST, "/reset-password/step1"))).status
        for _ in range(BURST + 4)
    ]
    api = await visit(
        http, nginx.url(PORTAL_HOST, "/api/reset-password/identity/start"), method="POST"
    )
    sign_in = await visit(http, nginx.url(PORTAL_HOST, "/"))

    assert statuses[: BURST + 1] == [200] * (BURST + 1)
    assert statuses[-1] == 429
    assert api.status == 429, "one zone covers the pages and the API"
    assert api.headers.getall("Strict-Transport-Security") == [HSTS]
    assert sign_in.status == 200
    assert stand_in_portal.pages.count("/reset-password/step1") == statuses.count(200)


# --- the fixture -----------------------------------------------------------------------------


def test_stop_leaves_no_nginx_process_and_frees_the_port(
    tmp_path: Path, nginx_ca: trustme.CA
) -> None:
    with running_nginx(tmp_path, nginx_ca, portal=f"{HOST}:9", app=f"{HOST}:9") as server:
        pids = [server.master_pid, *server.worker_pids()]
        port = server.https_port
        assert len(pids) == 2

    server.stop()  # again: stopping is idempotent

    assert not server.running
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
    with pytest.raises(OSError), socket.create_connection((HOST, port), timeout=1):
        pass
