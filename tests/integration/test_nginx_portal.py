"""The real portal behind the real nginx (the files admins copy from deploy/nginx/, as shipped),
in front of the protected app: what a visitor with a browser-like client sees.

The portal runs in this process on a free loopback port, built by create_app on the test users
file, a real SQLite database and a real SMTP server (aiosmtpd). nginx starts before the portal
does: the portal's configuration names nginx's https port (authelia_url, default_redirection_url).
So the portal's socket is bound first, nginx is told its port (nginx connects to its upstream only
when a request comes), and the portal serves that socket once its configuration is known.

Every visitor is an aiohttp client with its own cookie jar that resolves portal.example.com and
app.example.com to nginx and verifies nginx's certificate; redirects are never followed for it, so
each story says where every answer sends the visitor.
"""

from __future__ import annotations

import asyncio
import base64
import email.message
import html
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pyotp
import pytest
import trustme
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey
from multidict import CIMultiDictProxy
from yarl import URL

from portal.app import create_app
from portal.clock import SystemClock
from portal.deps import (
    Dependencies,
    captcha_from_config,
    notifier_from_config,
    sessions_from_config,
    storage_from_config,
    users_from_config,
)
from portal.logs import SafeAccessLogger
from portal.storage.base import Storage, TotpConfiguration
from tests.conftest import ConfigFactory, deep_merge
from tests.integration.nginx import ACCESS_LOG, APP_HOST, PORTAL_HOST, Nginx, running_nginx
from tests.integration.process import HOST
from tests.integration.protected_app import ProtectedApp, run_protected_app
from tests.integration.redis_server import RedisServer
from tests.integration.smtp_server import SmtpServer, running_smtp_server
from tests.web.conftest import csrf_of, portal_settings, reset_link_from

SESSION_COOKIE = "portal_session"
PASSWORD = "password"  # every user in the users_file fixture
NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"
WRONG = "Incorrect username or password."
CHANGED = "Your password has been changed"
JOHN = {
    "Remote-User": ["john"],
    "Remote-Groups": ["admins,dev"],
    "Remote-Name": ["John Doe"],
    "Remote-Email": ["john.doe@authelia.com"],
}

# The rules the stories are told under. A subject that does not match makes a rule not apply
# (Authelia: "the first policy matching (domain, resource, subject) applies"), so /admin needs a
# deny after the admins' rule, or everyone else would fall through to the catch-all one_factor.
PUBLIC = {"domain": APP_HOST, "resources": ["^/public"], "policy": "bypass"}
ADMINS_ONLY = {
    "domain": APP_HOST,
    "resources": ["^/admin"],
    "subject": "group:admins",
    "policy": "one_factor",
}
NOBODY_ELSE_ON_ADMIN = {"domain": APP_HOST, "resources": ["^/admin"], "policy": "deny"}
DENIED = {"domain": APP_HOST, "resources": ["^/deny"], "policy": "deny"}
TWO_FACTORS = {"domain": APP_HOST, "resources": ["^/secure"], "policy": "two_factor"}
SIGNED_IN = {"domain": APP_HOST, "policy": "one_factor"}
RULES = [PUBLIC, ADMINS_ONLY, NOBODY_ELSE_ON_ADMIN, DENIED, TWO_FACTORS, SIGNED_IN]

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_ERROR = re.compile(r'<p class="error" id="signin-error" role="alert">([^<]*)</p>')


# --- the site: nginx, the portal, the app, the mail server -----------------------------------


@dataclass
class Site:
    """nginx in front of the running portal and the protected app, and the mail they send."""

    nginx: Nginx
    app: ProtectedApp
    smtp: SmtpServer
    storage: Storage
    # (client address and port) of the connection each authorization answer went out on, in
    # order: the portal's view of how nginx reaches it.
    authz_peers: list[tuple[str, int]] = field(default_factory=list)

    def app_url(self, path: str = "/") -> str:
        """Return https://app.example.com:<port><path>."""
        return self.nginx.url(APP_HOST, path)

    def portal_url(self, path: str = "/") -> str:
        """Return https://portal.example.com:<port><path>."""
        return self.nginx.url(PORTAL_HOST, path)

    def sign_in_url(self, wanted: str) -> str:
        """Return where the portal sends a visitor who wanted `wanted` and must sign in."""
        return f"{self.portal_url('/')}?rd={quote(wanted, safe='')}"

    @property
    def landing(self) -> str:
        """Return default_redirection_url: where a sign-in without a usable rd lands."""
        return self.app_url("/")

    async def mail(self, count: int, timeout: float = 10.0) -> email.message.EmailMessage:
        """Wait until the SMTP server holds `count` mails and return the newest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.smtp.deliveries) < count:
            assert loop.time() < deadline, f"only {len(self.smtp.deliveries)} mail(s) came"
            await asyncio.sleep(0.02)
        return self.smtp.deliveries[count - 1].message


def site_settings(https_port: int, smtp_port: int, users_file: Path) -> dict[str, Any]:
    """The configuration for portal.example.com behind nginx, on top of the web stories' one."""
    portal = f"https://{PORTAL_HOST}:{https_port}"
    app = f"https://{APP_HOST}:{https_port}/"
    return deep_merge(
        # Roomy reset limits: the stories make many requests from one address.
        portal_settings(smtp_port, users_file),
        {
            "server": {"trusted_proxies": ["127.0.0.1/32"]},
            "session": {
                "cookies": [
                    {
                        "domain": "example.com",
                        "authelia_url": portal,
                        "default_redirection_url": app,
                    }
                ]
            },
            "access_control": {"default_policy": "deny", "rules": RULES},
        },
    )


async def record_authz_peer(
    peers: list[tuple[str, int]], request: web.Request, response: web.StreamResponse
) -> None:
    """Note the connection an answer to nginx's auth_request goes out on (on_response_prepare)."""
    if request.path.startswith(("/api/authz/", "/api/verify")):
        assert request.transport is not None
        host, port = request.transport.get_extra_info("peername")[:2]
        peers.append((host, port))


StartSite = Callable[..., Awaitable[Site]]


@pytest.fixture(scope="session")
def nginx_ca() -> trustme.CA:
    """The private CA that signs nginx's certificate for *.example.com and example.com."""
    return trustme.CA()


@pytest.fixture
async def start_site(
    tmp_path: Path, nginx_ca: trustme.CA, make_config: ConfigFactory, users_file: Path
) -> AsyncIterator[StartSite]:
    """Start nginx, then the portal and the protected app behind it; all stop afterwards."""
    async with AsyncExitStack() as stack:

        async def start(*, authz_listener: bool = False, **overrides: Any) -> Site:
            """authz_listener: the portal answers auth_request on server.authz_address, and
            nginx asks there (the shipped commented-out upstream, uncommented)."""
            smtp = await stack.enter_async_context(running_smtp_server())
            app = await stack.enter_async_context(run_protected_app())
            # The portal's socket is bound before nginx picks its port, so neither can take
            # the other's; nginx connects to it only when a request comes.
            listener = stack.enter_context(socket.create_server((HOST, 0)))
            portal_port = listener.getsockname()[1]
            # A unix socket: no port that another server could take before the portal binds it.
            authz_socket = tmp_path / "authz.sock"
            authz = f"unix:{authz_socket}" if authz_listener else None
            nginx = stack.enter_context(
                running_nginx(
                    tmp_path / "nginx",
                    nginx_ca,
                    portal=f"{HOST}:{portal_port}",
                    app=app.address,
                    authz=authz,
                )
            )
            settings = site_settings(nginx.https_port, smtp.port, users_file)
            if authz is not None:
                settings["server"]["authz_address"] = f"unix://{authz_socket}"
            config = make_config(**deep_merge(settings, overrides))
            storage = storage_from_config(config)
            deps = Dependencies(
                users=users_from_config(config),
                storage=storage,
                notifier=notifier_from_config(config),
                captcha=captcha_from_config(config, storage, SystemClock()),
                sessions=sessions_from_config(config, SystemClock()),
            )
            site = Site(nginx, app, smtp, storage)
            portal = create_app(config, deps)
            portal.on_response_prepare.append(partial(record_authz_peer, site.authz_peers))
            # The access logger `portal serve` uses: the default one would log reset tokens.
            runner = web.AppRunner(portal, access_log_class=SafeAccessLogger)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.SockSite(runner, listener).start()
            return site

        yield start


@pytest.fixture
async def site(start_site: StartSite) -> Site:
    """The site under the rules above."""
    return await start_site()


# --- visitors --------------------------------------------------------------------------------


@dataclass
class Reply:
    """What a visitor got back."""

    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def location(self) -> str:
        """Return where the answer sends the visitor."""
        return self.headers["Location"]

    def json(self) -> Any:
        """Parse the body (the protected app's echo, or the portal's API)."""
        return json.loads(self.text)

    @property
    def remote(self) -> dict[str, list[str]]:
        """Return the Remote-* headers the protected app was given."""
        remote: dict[str, list[str]] = self.json()["remote"]
        return remote

    @property
    def sign_in_error(self) -> str | None:
        """Return the error the sign-in page shows, if any."""
        match = _ERROR.search(self.text)
        return html.unescape(match.group(1)) if match else None


@dataclass
class Visitor:
    """One browser: its own cookie jar, talking to nginx only, following no redirect."""

    site: Site
    http: aiohttp.ClientSession

    async def request(self, method: str, url: str, **kwargs: Any) -> Reply:
        """Make one request, as a browser would, without following a redirect."""
        async with self.http.request(method, url, allow_redirects=False, **kwargs) as response:
            return Reply(response.status, response.headers, await response.text())

    async def get(self, url: str) -> Reply:
        """Open a URL."""
        return await self.request("GET", url)

    async def submit(self, page: str, action: str, **fields: str) -> Reply:
        """Load a page, then post its form with its hidden fields and the given ones."""
        loaded = await self.get(page)
        assert loaded.status == 200, loaded.text
        hidden = {name: html.unescape(value) for name, value in _HIDDEN.findall(loaded.text)}
        assert hidden.get("csrf_token") == csrf_of(loaded.text)
        return await self.request("POST", action, data={**hidden, **fields})

    async def visit(self, path: str) -> Reply:
        """Open a page of the protected app."""
        return await self.get(self.site.app_url(path))

    async def sign_in(
        self, username: str, password: str = PASSWORD, *, rd: str | None = None
    ) -> Reply:
        """Fill in the portal's sign-in form, reached with ?rd=<rd> as nginx sends visitors."""
        page = self.site.sign_in_url(rd) if rd is not None else self.site.portal_url("/")
        return await self.submit(
            page, self.site.portal_url("/"), username=username, password=password
        )

    async def sign_in_api(self, username: str, target: str) -> Reply:
        """Sign in through POST /api/firstfactor, as a single-page app does."""
        body = {
            "username": username,
            "password": PASSWORD,
            "keepMeLoggedIn": False,
            "targetURL": target,
        }
        return await self.request("POST", self.site.portal_url("/api/firstfactor"), json=body)

    def session_cookie(self) -> str | None:
        """Return the session cookie the browser holds for the app's site, if any."""
        cookies = self.http.cookie_jar.filter_cookies(URL(self.site.app_url("/")))
        morsel = cookies.get(SESSION_COOKIE)
        return morsel.value if morsel is not None else None


OpenVisitor = Callable[[], Awaitable[Visitor]]


@pytest.fixture
async def open_visitor(site: Site) -> AsyncIterator[OpenVisitor]:
    """Open as many browsers as a story needs; all are closed afterwards."""
    async with AsyncExitStack() as stack:

        async def open_one() -> Visitor:
            http = await stack.enter_async_context(site.nginx.client())
            return Visitor(site, http)

        yield open_one


@pytest.fixture
async def open_visitor_on() -> AsyncIterator[Callable[[Site], Awaitable[Visitor]]]:
    """Open browsers on a site a story started itself; all are closed afterwards."""
    async with AsyncExitStack() as stack:

        async def open_one(site: Site) -> Visitor:
            http = await stack.enter_async_context(site.nginx.client())
            return Visitor(site, http)

        yield open_one


@pytest.fixture
async def visitor(open_visitor: OpenVisitor) -> Visitor:
    """A browser with no cookies yet."""
    return await open_visitor()


async def refused_within(visitor: Visitor, path: str, seconds: float) -> Reply:
    """Ask for an app page until nginx sends the visitor to sign in, for `seconds` at most."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        reply = await visitor.visit(path)
        if reply.status == 302 or loop.time() >= deadline:
            return reply
        await asyncio.sleep(0.05)


# --- who may pass ------------------------------------------------------------------------------


async def test_an_anonymous_visitor_is_sent_to_sign_in_with_the_way_back(
    site: Site, visitor: Visitor
) -> None:
    wanted = site.app_url("/private?tab=2")

    reply = await visitor.get(wanted)

    assert reply.status == 302
    assert reply.location == (
        f"https://{PORTAL_HOST}:{site.nginx.https_port}/?rd={quote(wanted, safe='')}"
    )
    assert site.app.seen == []


async def test_a_public_page_needs_no_sign_in_and_names_nobody(
    site: Site, visitor: Visitor
) -> None:
    reply = await visitor.visit("/public/news")

    assert reply.status == 200
    assert reply.json()["path"] == "/public/news"
    assert reply.remote == {}


async def test_john_signs_in_through_the_form_and_comes_back_as_himself(
    site: Site, visitor: Visitor
) -> None:
    wanted = site.app_url("/private?tab=2")
    sent_away = await visitor.get(wanted)

    signed_in = await visitor.sign_in("john", rd=wanted)
    back = await visitor.get(signed_in.location)

    assert sent_away.location == site.sign_in_url(wanted)
    assert signed_in.status == 302
    assert signed_in.location == wanted
    assert visitor.session_cookie() is not None
    assert back.status == 200
    assert (back.json()["path"], back.json()["query"]) == ("/private", "tab=2")
    assert back.remote == JOHN


async def test_only_admins_reach_the_admin_pages(site: Site, open_visitor: OpenVisitor) -> None:
    harry, john = await open_visitor(), await open_visitor()
    await harry.sign_in("harry")
    await john.sign_in("john")

    as_harry = await harry.visit("/admin/users")
    as_john = await john.visit("/admin/users")
    harry_elsewhere = await harry.visit("/private")

    assert as_harry.status == 403
    assert as_john.status == 200 and as_john.remote == JOHN
    assert harry_elsewhere.status == 200
    # harry has no groups: the portal's empty Remote-Groups is a header nginx does not send.
    assert harry_elsewhere.remote == {
        "Remote-User": ["harry"],
        "Remote-Name": ["Harry Potter"],
        "Remote-Email": ["harry.potter@authelia.com"],
    }
    assert [seen["path"] for seen in site.app.seen] == ["/admin/users", "/private"]


async def test_without_a_deny_after_it_a_group_rule_lets_others_fall_through(
    start_site: StartSite,
) -> None:
    # Authelia's meaning, and the portal's: the admins' rule does not apply to harry, so the
    # next matching rule (the catch-all one_factor) decides. Admins write the deny themselves.
    rules = [PUBLIC, ADMINS_ONLY, DENIED, SIGNED_IN]
    site = await start_site(access_control={"default_policy": "deny", "rules": rules})
    async with site.nginx.client() as http:
        harry = Visitor(site, http)
        await harry.sign_in("harry")

        reply = await harry.visit("/admin/users")

    assert reply.status == 200
    assert reply.remote["Remote-User"] == ["harry"]


async def test_a_denied_page_is_403_even_for_john(site: Site, visitor: Visitor) -> None:
    await visitor.sign_in("john")

    reply = await visitor.visit("/deny/anything")

    assert reply.status == 403
    assert site.app.seen == []


async def test_nginx_asks_every_question_on_one_kept_alive_connection_whatever_the_answer(
    site: Site, open_visitor: OpenVisitor
) -> None:
    # nginx closes its connection to the portal after an authorization answer with a body it
    # does not read (auth_request reads headers only): every 401 and 403 would cost a new
    # connection. Asked one after the other, every answer (200, 401, 403) comes back on one.
    john, anonymous = await open_visitor(), await open_visitor()
    await john.sign_in("john")
    site.authz_peers.clear()

    statuses = []
    for _ in range(4):
        statuses.append((await john.visit("/private")).status)
        statuses.append((await anonymous.visit("/private")).status)
        statuses.append((await john.visit("/deny/x")).status)

    assert statuses == [200, 302, 403] * 4
    assert len(site.authz_peers) == 12
    assert len(set(site.authz_peers)) == 1, site.authz_peers


async def test_with_the_authz_listener_nginx_asks_it_and_every_answer_is_the_same(
    start_site: StartSite, open_visitor_on: Callable[[Site], Awaitable[Visitor]]
) -> None:
    site = await start_site(authz_listener=True)
    john, anonymous = await open_visitor_on(site), await open_visitor_on(site)
    await john.sign_in("john")
    site.authz_peers.clear()

    to_sign_in = await anonymous.visit("/private")
    allowed = await john.visit("/private")
    denied = await john.visit("/deny/x")

    assert to_sign_in.status == 302
    assert to_sign_in.location == site.sign_in_url(site.app_url("/private"))
    assert allowed.status == 200 and allowed.remote["Remote-User"] == ["john"]
    assert denied.status == 403
    # None of these questions reached the portal's own listener.
    assert site.authz_peers == []


async def test_an_exact_public_page_does_not_open_to_an_encoded_newline_after_it(
    start_site: StartSite,
) -> None:
    # nginx hands the portal /status%0A as sent; the rule means what it means to Authelia, whose
    # `$` (Go's RE2) is the end of the text, where Python's re also matched before a final "\n".
    status_only = {"domain": APP_HOST, "resources": ["^/status$"], "policy": "bypass"}
    rules = [status_only, SIGNED_IN]
    site = await start_site(access_control={"default_policy": "deny", "rules": rules})
    async with site.nginx.client() as http:
        visitor = Visitor(site, http)
        opened = await visitor.visit("/status")
        sneaked = await visitor.visit("/status%0A")

    assert opened.status == 200
    assert sneaked.status == 302
    assert [seen["path"] for seen in site.app.seen] == ["/status"]


# --- two factors -----------------------------------------------------------------------------


async def test_a_two_factor_page_sends_an_anonymous_visitor_to_the_portal(
    site: Site, visitor: Visitor
) -> None:
    wanted = site.app_url("/secure/vault?id=7")

    reply = await visitor.get(wanted)

    assert (reply.status, reply.location) == (302, site.sign_in_url(wanted))
    assert site.app.seen == []


async def test_after_the_password_alone_a_two_factor_page_sends_john_back_to_the_portal(
    site: Site, visitor: Visitor
) -> None:
    await visitor.sign_in("john")
    wanted = site.app_url("/secure/vault")

    one_factor_page = await visitor.visit("/private")
    two_factor_page = await visitor.get(wanted)

    assert one_factor_page.status == 200
    assert (two_factor_page.status, two_factor_page.location) == (302, site.sign_in_url(wanted))
    assert [seen["path"] for seen in site.app.seen] == ["/private"]


async def give_john_a_device(site: Site) -> str:
    """Register a TOTP device for john in the site's storage; return its base32 secret."""
    secret = pyotp.random_base32()
    await site.storage.save_totp_configuration(
        TotpConfiguration(
            username="john",
            created_at=time.time(),
            last_used_at=None,
            issuer="Portal",
            algorithm="SHA1",
            digits=6,
            period=30,
            secret=base64.b32decode(secret),
        )
    )
    return secret


async def test_john_with_a_device_gives_his_code_after_the_password_and_reaches_the_page(
    site: Site, visitor: Visitor
) -> None:
    secret = await give_john_a_device(site)
    wanted = site.app_url("/secure/vault")
    sent_away = await visitor.get(wanted)

    signed_in = await visitor.sign_in("john", rd=wanted)
    asked = site.portal_url(signed_in.location)
    still_shut = await visitor.get(wanted)
    entered = await visitor.submit(
        asked, site.portal_url("/2fa/one-time-password"), token=pyotp.TOTP(secret).now()
    )
    back = await visitor.get(entered.location)

    assert sent_away.location == site.sign_in_url(wanted)
    assert signed_in.status == 302
    second_step = URL(signed_in.location)
    assert (second_step.path, second_step.query.get("rd")) == ("/2fa/one-time-password", wanted)
    assert still_shut.status == 302 and still_shut.location == site.sign_in_url(wanted)
    assert (entered.status, entered.location) == (302, wanted)
    assert back.status == 200
    assert back.json()["path"] == "/secure/vault"
    assert back.remote == JOHN


async def test_john_without_a_device_is_told_to_register_one_and_never_reaches_the_page(
    site: Site, visitor: Visitor
) -> None:
    wanted = site.app_url("/secure/vault")

    signed_in = await visitor.sign_in("john", rd=wanted)
    told = await visitor.get(site.portal_url(signed_in.location))
    guessed = await visitor.request(
        "POST",
        site.portal_url("/api/secondfactor/totp"),
        json={"token": "123456", "targetURL": wanted},
    )
    still_shut = await visitor.get(wanted)

    assert URL(signed_in.location).path == "/2fa/one-time-password"
    assert told.status == 200
    assert 'id="second-factor-missing"' in told.text
    assert 'href="/settings/one-time-password"' in told.text
    assert 'name="token"' not in told.text
    assert guessed.status == 401
    assert (still_shut.status, still_shut.location) == (302, site.sign_in_url(wanted))
    assert site.app.seen == []


async def test_wrong_codes_through_nginx_ban_john_with_the_same_answer_as_a_wrong_code(
    site: Site, visitor: Visitor
) -> None:
    secret = await give_john_a_device(site)
    wanted = site.app_url("/secure/vault")
    signed_in = await visitor.sign_in("john", rd=wanted)
    asked = site.portal_url(signed_in.location)
    action = site.portal_url("/2fa/one-time-password")
    right = pyotp.TOTP(secret).now()
    wrong = [c for c in ("000000", "111111", "222222", "333333") if c != right][:3]

    refused = [await visitor.submit(asked, action, token=code) for code in wrong]
    banned = await visitor.submit(asked, action, token=right)
    still_shut = await visitor.get(wanted)

    assert [r.status for r in refused] == [401, 401, 401]
    assert all("Incorrect code." in r.text for r in refused)
    assert banned.status == 401
    assert "Incorrect code." in banned.text
    assert re.sub(r'value="[^"]*"', "", banned.text) == re.sub(
        r'value="[^"]*"', "", refused[-1].text
    )
    assert (still_shut.status, still_shut.location) == (302, site.sign_in_url(wanted))
    assert site.app.seen == []


# --- leaving ---------------------------------------------------------------------------------


async def test_after_sign_out_the_app_sends_john_to_sign_in_again(
    site: Site, visitor: Visitor, open_visitor: OpenVisitor
) -> None:
    await visitor.sign_in("john")
    before = await visitor.visit("/private")
    session = visitor.session_cookie()

    signed_out = await visitor.get(site.portal_url("/logout"))
    after = await visitor.visit("/private")
    replay = await open_visitor()
    replayed = await replay.request(
        "GET", site.app_url("/private"), headers={"Cookie": f"{SESSION_COOKIE}={session}"}
    )

    assert before.status == 200
    assert signed_out.status == 302
    assert visitor.session_cookie() is None
    assert after.status == 302
    assert after.location == site.sign_in_url(site.app_url("/private"))
    assert replayed.status == 302, "the session ended on the server, not only in the browser"


async def test_the_whole_password_reset_through_nginx_ends_johns_other_sessions(
    site: Site, visitor: Visitor, open_visitor: OpenVisitor
) -> None:
    laptop = await open_visitor()
    await laptop.sign_in("john")
    assert (await laptop.visit("/private")).status == 200

    asked = await visitor.submit(
        site.portal_url("/reset-password/step1"),
        site.portal_url("/reset-password/step1"),
        username="john",
    )
    mail = await site.mail(1)
    link = reset_link_from(mail)
    opened = await visitor.get(link)
    done = await visitor.submit(
        site.portal_url(opened.location),
        site.portal_url("/reset-password/step2"),
        password=NEW_PASSWORD,
        password_confirm=NEW_PASSWORD,
    )
    laptop_after = await refused_within(laptop, "/private", seconds=1.0)
    shown = await visitor.get(site.portal_url(done.location))

    assert (asked.status, asked.location) == (303, "/reset-password/step1/sent")
    assert mail["To"] == "john.doe@authelia.com"
    assert link.startswith(site.portal_url("/reset-password/step2?token="))
    assert opened.status == 303 and opened.location == "/reset-password/step2"
    assert (done.status, done.location) == (303, "/reset-password/done")
    assert shown.status == 200 and CHANGED in shown.text
    assert visitor.session_cookie() is None, "a reset never signs anyone in"
    assert laptop_after.status == 302
    assert laptop_after.location == site.sign_in_url(site.app_url("/private"))

    old = await visitor.sign_in("john", PASSWORD)
    new = await visitor.sign_in("john", NEW_PASSWORD, rd=site.app_url("/private"))
    assert (old.status, old.sign_in_error) == (401, WRONG)
    assert (new.status, new.location) == (302, site.app_url("/private"))
    assert (await visitor.visit("/private")).remote == JOHN


# --- where sign-in may send a visitor ----------------------------------------------------------


async def test_sign_in_never_sends_john_to_another_site_or_to_plain_http(
    site: Site, open_visitor: OpenVisitor
) -> None:
    first, second, script = await open_visitor(), await open_visitor(), await open_visitor()
    plain_http = site.app_url("/private").replace("https://", "http://")

    foreign = await first.sign_in("john", rd="https://evil.com/")
    plain = await second.sign_in("john", rd=plain_http)
    scripted = await script.sign_in_api("john", "https://evil.com/")

    assert (foreign.status, foreign.location) == (302, site.landing)
    assert (plain.status, plain.location) == (302, site.landing)
    assert (scripted.status, scripted.json()) == (200, {"status": "OK"})
    assert (await first.visit("/private")).remote == JOHN


# --- refusals ----------------------------------------------------------------------------------


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    site: Site, visitor: Visitor
) -> None:
    wrong = await visitor.sign_in("john", "not-his-password")
    unknown = await visitor.sign_in("nobody", "whatever")

    assert (wrong.status, wrong.sign_in_error) == (401, WRONG)
    assert (unknown.status, unknown.sign_in_error) == (401, WRONG)
    assert visitor.session_cookie() is None
    assert (await visitor.visit("/private")).status == 302


async def test_after_three_wrong_passwords_bob_is_refused_even_with_the_right_one(
    site: Site, visitor: Visitor
) -> None:
    wrong = [await visitor.sign_in("bob", f"guess-{n}") for n in range(3)]

    right = await visitor.sign_in("bob", PASSWORD, rd=site.app_url("/private"))

    assert [(reply.status, reply.sign_in_error) for reply in wrong] == [(401, WRONG)] * 3
    assert (right.status, right.sign_in_error) == (401, WRONG)
    assert visitor.session_cookie() is None
    assert (await visitor.visit("/private")).status == 302


# --- sessions in Redis -------------------------------------------------------------------------


async def test_with_redis_down_nginx_serves_no_protected_page_and_all_works_once_it_is_back(
    redis_server: RedisServer,
    start_site: StartSite,
    open_visitor_on: Callable[[Site], Awaitable[Visitor]],
) -> None:
    redis = {
        "host": redis_server.host,
        "port": redis_server.port,
        "username": redis_server.username,
        "password": redis_server.user_password,
    }
    site = await start_site(session={"redis": redis})
    visitor = await open_visitor_on(site)
    assert (await visitor.sign_in("john", rd=site.app_url("/private"))).status == 302
    assert (await visitor.visit("/private")).remote["Remote-User"] == ["john"]
    seen = len(site.app.seen)

    redis_server.stop()
    await asyncio.sleep(1.1)  # past the one second a replica trusts its cached session
    refused = await visitor.visit("/private")
    signing_in = await visitor.get(site.portal_url("/"))

    assert refused.status >= 500 and "john" not in refused.text
    assert len(site.app.seen) == seen  # the protected app was never asked
    assert signing_in.status == 503 and "temporarily unavailable" in signing_in.text

    redis_server.start()  # back, without its data (no persistence); the portal is not restarted
    assert (await visitor.visit("/private")).status == 302  # the session is gone: sign in again
    assert (await visitor.sign_in("john", rd=site.app_url("/private"))).status == 302
    assert (await visitor.visit("/private")).remote["Remote-User"] == ["john"]


# --- the signed identity token ------------------------------------------------------------------


async def test_with_identity_token_the_app_gets_the_portals_token_and_never_the_visitors(
    start_site: StartSite, open_visitor_on: Callable[[Site], Awaitable[Visitor]]
) -> None:
    site = await start_site(identity_token={"enabled": True})
    visitor = await open_visitor_on(site)
    forged = {"Remote-JWT": "forged.visitor.token"}
    anonymous_public = await visitor.request("GET", site.app_url("/public/x"), headers=forged)
    await visitor.sign_in("john", rd=site.app_url("/private"))

    reply = await visitor.request("GET", site.app_url("/private"), headers=forged)
    public = await visitor.request("GET", site.app_url("/public/x"), headers=forged)

    assert reply.status == 200
    (token,) = reply.remote["Remote-JWT"]  # one value: the portal's, not the visitor's too
    assert {k: v for k, v in reply.remote.items() if k != "Remote-JWT"} == JOHN
    # The app checks it with the key set the portal publishes, fetched through nginx.
    jwks = (await visitor.get(site.portal_url("/.well-known/jwks.json"))).json()
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": site.portal_url("/").rstrip("/")},
        aud={"essential": True, "value": site.app_url("/").rstrip("/")},
        sub={"essential": True, "value": "john"},
    ).validate(decoded.claims)
    # A bypass page names nobody, signed in or not: no token, and never the visitor's.
    assert public.status == anonymous_public.status == 200
    assert public.remote == anonymous_public.remote == {}


async def test_without_identity_token_a_visitors_remote_jwt_never_reaches_the_app(
    site: Site, visitor: Visitor
) -> None:
    await visitor.sign_in("john", rd=site.app_url("/private"))

    reply = await visitor.request(
        "GET", site.app_url("/private"), headers={"Remote-JWT": "forged.visitor.token"}
    )

    assert reply.status == 200
    assert reply.remote == JOHN  # the portal sent no token, so the app gets none at all


async def test_a_visitors_remote_jwt_in_another_case_or_with_underscores_never_reaches_the_app(
    start_site: StartSite, open_visitor_on: Callable[[Site], Awaitable[Visitor]]
) -> None:
    site = await start_site(identity_token={"enabled": True})
    visitor = await open_visitor_on(site)
    await visitor.sign_in("john", rd=site.app_url("/private"))
    forged = [
        {"remote-jwt": "forged.visitor.token"},
        {"REMOTE-JWT": "forged.visitor.token"},
        {"Remote_JWT": "forged.visitor.token"},
        {"Remote_User": "bob"},
    ]

    url = site.app_url("/private")
    replies = [await visitor.request("GET", url, headers=h) for h in forged]

    for reply in replies:
        assert reply.status == 200
        (token,) = reply.remote["Remote-JWT"]  # the portal's only
        assert token != "forged.visitor.token" and reply.remote["Remote-User"] == ["john"]
        assert reply.json()["smuggled"] == [], "nginx drops names with '_' (its default)"


async def test_a_user_in_many_groups_reaches_the_app_with_identity_token_on(
    start_site: StartSite,
    open_visitor_on: Callable[[Site], Awaitable[Visitor]],
    users_file: Path,
) -> None:
    # A directory user in 60 groups with names as AD has them: the token repeats the groups,
    # so the auth_request answer's headers grow past nginx's default 4 KiB header buffer.
    groups = [f"GRP-Finance-Reports-Region-{n:02}-ReadOnly" for n in range(60)]
    listed = "".join(f"      - {group}\n" for group in groups)
    text = users_file.read_text("utf-8")
    users_file.write_text(text.replace("      - admins\n      - dev\n", listed, 1), "utf-8")
    site = await start_site(identity_token={"enabled": True})
    visitor = await open_visitor_on(site)
    await visitor.sign_in("john", rd=site.app_url("/private"))

    reply = await visitor.visit("/private")

    assert reply.status == 200, site.nginx.error_log.read_text()[-300:]
    (token,) = reply.remote["Remote-JWT"]
    jwks = (await visitor.get(site.portal_url("/.well-known/jwks.json"))).json()
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    assert decoded.claims["groups"] == groups
    assert reply.remote["Remote-Groups"] == [",".join(groups)]


# --- tokens in links and nginx's own log --------------------------------------------------------

PARTNER_SECRET = "shop-shared-secret-" + "s" * 45


async def test_nginx_logs_a_partner_link_and_a_reset_link_without_their_tokens(
    start_site: StartSite, open_visitor_on: Callable[[Site], Awaitable[Visitor]]
) -> None:
    shop = {"name": "Shop", "issuer": "https://shop.example.net", "algorithms": ["HS256"]}
    site = await start_site(trusted_issuers=[{**shop, "secret": PARTNER_SECRET}])
    visitor = await open_visitor_on(site)
    now = int(time.time())
    claims: dict[str, Any] = {"iss": shop["issuer"], "aud": site.portal_url("/").rstrip("/")}
    claims.update(sub="john", iat=now, exp=now + 60, jti="order-1")
    token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(PARTNER_SECRET))
    query = urlencode({"token": token, "rd": site.app_url("/private")})

    link = await visitor.get(site.portal_url(f"/sso/jwt?{query}"))
    page = await visitor.get(site.portal_url(link.location))
    reset = await visitor.get(site.portal_url("/reset-password/step2?token=reset.link.token"))

    assert link.status == 303 and page.status == 200 and "Continue" in page.text
    assert reset.status == 303
    logged = (site.nginx.workdir / ACCESS_LOG).read_text()
    assert "GET /sso/jwt " in logged and "GET /reset-password/step2 " in logged
    # SECURITY: whoever reads the log could use the token before its owner presses Continue.
    assert token not in logged and "reset.link.token" not in logged
