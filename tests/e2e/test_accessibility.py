"""axe-core finds no violation on any page of the portal, in every theme, at desktop and phone
widths (issues 12 and 16).

The states are reached once in headless Chromium against the portal process on localhost (so
passkeys work), with the CAPTCHA (ALTCHA), the security questions, passkey sign-in, a partner
(trusted_issuers), a password policy and the organisation's logo and name on, and a DevTools
virtual authenticator in the tab: signed out, signed in with one factor and with two,
elevated, with a reset link's cookie, forms with their errors shown, the settings with a TOTP
app and a passkey, a partner's sign-in link, the error pages. Each page as served is kept,
then replayed at its own address (so its stylesheet, scripts and widget load from the portal
as they did) in one reused tab under each theme (the `data-theme` the portal writes for it;
`auto` in a light and in a dark browser, set with emulate_media) and width, and axe-core
(installed by `make test` with npm, never fetched here) checks it.

The walk must be complete: every GET route the app's router registers for this configuration
is a page the walk met, or is named in NOT_PAGES (with why) and shown not to answer HTML. A
page added later without a state here fails the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import jwt as pyjwt
import pyotp
import pytest
from playwright.async_api import Browser, Page, Response, Route, expect

from portal.app import create_app
from portal.config import DEFAULT_QUESTIONS, load_config
from portal.middlewares import NO_SUCH_ROUTE
from tests.conftest import REPO
from tests.e2e.conftest import (
    RunningPortal,
    add_virtual_authenticator,
    code_in,
    elevate,
    portal_environment,
    reset_link_from,
    run_portal,
    wait_for_health,
)

AXE = Path(
    os.environ.get("AXE_CORE", REPO / ".venv" / "axe" / "node_modules" / "axe-core" / "axe.min.js")
)
# (theme, the browser's colour scheme): a fixed theme must hold whatever the browser prefers.
ColorScheme = Literal["light", "dark"]
VARIANTS: tuple[tuple[str, ColorScheme], ...] = (
    ("light", "dark"),
    ("dark", "light"),
    ("grey", "light"),
    ("auto", "light"),
    ("auto", "dark"),
)
WIDTHS = {"desktop": (1280, 800), "phone": (375, 667)}
EASY = {"cost": 1, "max_number": 50}
# The settings form offers the first questions of the list by default; these answer them.
ANSWERS = ("Mister Fluffy", "The Beatles", "Pancakes")
SOLUTION = re.compile(r"^[A-Za-z0-9+/=]{100,}$")
# For a person reviewing the pages: a folder to keep a screenshot of every state checked.
SCREENSHOTS = os.environ.get("PORTAL_SCREENSHOTS")
PARTNER = "https://shop.example.net"
PARTNER_SECRET = "partner-shared-secret-" + "s" * 42  # noqa: S105 - a test partner's HS256 key
# What marks an elevation mail.
CODE = 'id="one-time-code"'
# John's password after the walk's signed-in password change.
CHANGED_PASSWORD = "Another-Long-Passphrase-77"  # noqa: S105 - a test user's password
# Authelia's JSON API: every GET under it answers JSON (portal/headers.py is_api), never a page.
API = "/api/"
# The other GET routes that are no page, each with an address that shows it and why; the test
# fetches each and fails if it answers HTML.
NOT_PAGES: dict[str, tuple[str, str]] = {
    "/logout": ("/logout", "ends the session and redirects to sign-in (walked: 'signed out')"),
    "/language/{code}": ("/language/de?back=/", "sets the language cookie and redirects back"),
    "/static": ("/static/portal.css", "the stylesheet, scripts and vendored files"),
    "/static/media/logo.png": ("/static/media/logo.png", "the logo from server.asset_path"),
    "/favicon.ico": ("/favicon.ico", "the icon from server.asset_path"),
    "/.well-known/jwks.json": ("/.well-known/jwks.json", "JSON: identity_token's public keys"),
    "/reset-password/step2/webauthn": (
        "/reset-password/step2/webauthn",
        "JSON: the passkey options for step 2's script (outside /api/: its cookie's path)",
    ),
}


@dataclass(frozen=True)
class State:
    """A page as the portal served it in one state."""

    name: str
    url: str
    status: int
    html: str


def tiny_png() -> bytes:
    """Return a valid 1x1 PNG (a logo for server.asset_path)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x24\x57\xc5")
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


@pytest.fixture
async def portal(tmp_path: Path, users_file: Path) -> AsyncIterator[RunningPortal]:
    """Run the portal on localhost with ALTCHA on every form (sign-in after one failure), the
    questions, passkey sign-in, and a logo and name."""
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "logo.png").write_bytes(tiny_png())
    extra: dict[str, Any] = {
        "organization_name": "Example Inc.",
        "captcha": {
            "enabled_on": ["reset_password_start", "reset_password_finish", "login"],
            "login_after_failures": 1,
            "altcha": EASY,
        },
        "identity_validation": {"reset_password": {"security_questions": {"enabled": True}}},
        "password_policy": {"standard": {"enabled": True, "min_length": 12}},
        # The walk fails on purpose (sign-in, questions, codes, password change, second steps)
        # and must not be banned for it.
        "regulation": {"max_retries": 12},
        "server": {
            "asset_path": str(assets),
            "endpoints": {
                "rate_limits": {
                    "reset_password_start": {"buckets": [{"period": "10 minutes", "requests": 6}]}
                }
            },
        },
        "webauthn": {"enable_passkey_login": True},
        # A partner whose signed links sign in (issue 17): the /sso/jwt pages exist.
        "trusted_issuers": [
            {"name": "Shop", "issuer": PARTNER, "algorithms": ["HS256"], "secret": PARTNER_SECRET}
        ],
    }
    with run_portal(tmp_path, users_file, extra, host="localhost") as running:
        await wait_for_health(running.url, running.process, running.log_file)
        yield running


class Walk:
    """Go through the portal's pages in one browser tab, keeping each state met."""

    def __init__(self, page: Page, portal: RunningPortal) -> None:
        self.page, self.portal = page, portal
        self.states: list[State] = []

    async def keep(self, name: str, response: Response | None) -> None:
        """Keep the page as the portal sent it (not as its scripts have changed it since)."""
        assert response is not None
        await self.page.wait_for_load_state()
        self.states.append(State(name, response.url, response.status, await response.text()))

    async def goto(self, name: str, path: str) -> None:
        await self.keep(
            name, await self.page.goto(path if "://" in path else self.portal.url + path)
        )

    async def click(self, name: str, button: str) -> None:
        async with self.page.expect_navigation() as navigation:
            await self.page.click(button)
        await self.keep(name, await navigation.value)

    async def elevated(self, name: str, path: str) -> None:
        """Open a page that needs an elevated session, confirming the identity first if asked."""
        response = await self.page.goto(self.portal.url + path)
        if await self.page.locator("h1").inner_text() == "Confirm your identity":
            response = await elevate(self.page, self.portal)
        await self.keep(name, response)

    async def fetch(self, name: str, method: str, path: str) -> None:
        """Keep the page a request no form sends answers (as an error page for a browser)."""
        url = self.portal.url + path
        response = await self.page.request.fetch(
            url, method=method, headers={"Accept": "text/html"}
        )
        self.states.append(State(name, url, response.status, await response.text()))

    async def solve(self) -> None:
        await self.page.locator("altcha-widget").get_by_text("I'm not a robot").click()
        await expect(self.page.locator("altcha-widget input[name=captcha]")).to_have_attribute(
            "value", SOLUTION, timeout=30_000
        )


async def walk_every_state(page: Page, portal: RunningPortal) -> list[State]:
    """Reach every page state once; return them as served."""
    walk = Walk(page, portal)
    await walk.goto("sign-in", "/")
    await page.fill("#username", "john")
    await page.fill("#password", "wrong")
    await walk.click("sign-in: wrong password, CAPTCHA now shown", "#sign-in-button")
    await page.fill("#password", "password")
    await walk.click("sign-in: CAPTCHA not completed", "#sign-in-button")
    await page.fill("#password", "password")
    await walk.solve()
    async with page.expect_navigation():
        await page.click("#sign-in-button")
    await walk.goto("signed in", "/")
    await question_states(walk)
    await second_factor_states(walk)
    await walk.goto("signed out", "/logout")
    await partner_states(walk)
    await walk.goto("404", "/nowhere")
    await walk.fetch("405 (the generic error page)", "PUT", "/settings")
    assert walk.states[-1].status == 405

    await walk.goto("step 1", "/reset-password/step1")
    await walk.click("step 1: CAPTCHA not completed", "#send-link")
    await page.fill("#username", "john")
    await walk.solve()
    await walk.click("questions", "#send-link")
    labels = page.locator("label.question")
    for i in range(await labels.count()):
        question = (await labels.nth(i).inner_text()).strip()
        await page.get_by_label(question).fill(ANSWERS[DEFAULT_QUESTIONS.index(question)])
    before = len(portal.mails())
    await walk.click("step 1: sent", "#send-answers")
    mail = await new_mail(portal, before, 'id="reset-link"', 'id="revoke-link"')
    revoke = re.search(r'id="revoke-link" href="([^"]+)"', _html_of(mail))
    assert revoke is not None
    await walk.goto("revoke: confirm", revoke.group(1).replace("&amp;", "&"))
    await walk.goto("step 2", reset_link_from(mail))
    await page.fill("#password", "short")
    await page.fill("#password_confirm", "short")
    await walk.solve()
    await walk.click("step 2: password refused", "#set-password")
    await page.fill("#password", "x")
    await walk.click("step 2: CAPTCHA not completed", "#set-password")
    new = "Correct-Horse-Battery-Staple-42"
    await page.fill("#password", new)
    await page.fill("#password_confirm", new)
    await walk.solve()
    await walk.click("step 2: done", "#set-password")
    await walk.goto("link invalid", "/reset-password/step2")
    await walk.goto("reset: cancelled", "/reset-password/cancelled")
    for _ in range(10):
        await walk.goto("step 1", "/reset-password/step1")
        walk.states.pop()
        async with page.expect_navigation() as navigation:
            await page.click("#send-link")
        response = await navigation.value
        if response is not None and response.status == 429:
            await walk.keep("429", response)
            break
    names = [state.name for state in walk.states]
    assert "429" in names, names
    return walk.states


async def partner_states(walk: Walk) -> None:
    """Issue 17's sign-in link from a partner: the confirmation page for a good token (moved
    from the address into a cookie), and the refusal for a forged one."""
    now = int(time.time())
    claims = {"iss": PARTNER, "aud": walk.portal.url, "sub": "john", "jti": "order-1"}
    token = pyjwt.encode({**claims, "iat": now, "exp": now + 60}, PARTNER_SECRET, "HS256")
    await walk.goto("partner link: confirm", f"/sso/jwt?token={token}")
    assert walk.states[-1].status == 200, walk.states[-1].html
    await walk.goto("partner link: refused", f"/sso/jwt?token={token[:-4]}AAAA")
    assert walk.states[-1].status == 401


async def question_states(walk: Walk) -> None:
    """The security questions' settings: refused, saved, removed, and saved again (the reset
    walk answers them)."""
    page = walk.page
    await walk.goto("settings", "/settings/security-questions")
    await page.fill("#answer_0", "ab")
    await page.fill("#answer_1", "ab")
    await page.fill("#password", "wrong")
    await walk.click("settings: problems", "#save-questions")
    for i, answer in enumerate(ANSWERS):
        await page.fill(f"#answer_{i}", answer)
    await page.fill("#password", "password")
    await walk.click("settings: saved", "#save-questions")
    assert "Your security questions are saved." in walk.states[-1].html
    await page.fill("#remove-password", "password")
    await walk.click("questions: removed", "#remove-questions")
    assert 'id="questions-removed"' in walk.states[-1].html
    for i, answer in enumerate(ANSWERS):
        await page.fill(f"#answer_{i}", answer)
    await page.fill("#password", "password")
    async with page.expect_navigation():
        await page.click("#save-questions")
    await expect(page.locator("#questions-saved")).to_be_visible()


async def second_factor_states(walk: Walk) -> None:
    """Issues 15 and 16: the second step with no device, with a TOTP app and a passkey, with
    the passkey alone, and the password after a passkey sign-in; the elevation by mailed code
    and its revoke pages; the TOTP and passkey settings and the settings hub with both; the
    password change. Both second factors are removed from their pages again, so the reset walk
    after this one meets the form without a code field."""
    page, portal = walk.page, walk.portal
    await walk.goto("second factor needed", "/2fa/one-time-password")
    assert 'id="second-factor-missing"' in walk.states[-1].html
    elevate_path = "/settings/elevate?next=/settings/one-time-password"
    await walk.goto("elevate", elevate_path)
    before = len(portal.mails())
    await walk.click("elevate: code sent", "#send-code")
    # The mail's revoke page cancels this first code; a second one is sent.
    first = await new_mail(portal, before, CODE)
    await walk.goto("revoke code: confirm", revoke_path(first))
    await walk.click("revoke code: done", "#revoke")
    await page.goto(portal.url + elevate_path)
    before = len(portal.mails())
    async with page.expect_navigation():
        await page.click("#send-code")
    mail = await new_mail(portal, before, CODE)
    await page.fill("#otc", "WRONG234")
    await walk.click("elevate: code refused", "#check-code")
    await page.fill("#otc", code_in(mail))
    await walk.click("totp: not set up", "#check-code")
    await walk.click("totp: set up", "#start-totp")
    secret = await page.locator("#totp-secret").input_value()
    totp = pyotp.TOTP(secret)
    await page.fill("#token", "000000" if totp.now() != "000000" else "111111")
    await walk.click("totp: wrong code", "#confirm-totp")
    await page.fill("#token", totp.now())
    await walk.click("totp: registered", "#confirm-totp")
    await walk.goto("totp: set up already", "/settings/one-time-password")
    await walk.goto("security settings", "/settings")
    await password_change_states(walk)
    await passkey_states(walk)
    await walk.goto("security settings: a TOTP app and a passkey", "/settings")
    assert '<p id="totp-state">Set up on' in walk.states[-1].html
    assert "My laptop" in walk.states[-1].html

    await walk.goto("second step: code or passkey", "/2fa/one-time-password")
    assert 'id="passkey-button"' in walk.states[-1].html
    assert 'id="token"' in walk.states[-1].html
    await page.fill("#token", "000000" if totp.now() != "000000" else "111111")
    await walk.click("second step: wrong code", "#verify-button")
    await walk.elevated("totp: before removal", "/settings/one-time-password")
    walk.states.pop()
    await walk.click("totp: removed", "#remove-totp")
    assert 'id="totp-removed"' in walk.states[-1].html
    await walk.goto("second step: passkey", "/2fa/one-time-password")
    assert 'id="token"' not in walk.states[-1].html
    async with page.expect_navigation(url=f"{portal.url}/") as navigation:
        await page.click("#passkey-button")
    await walk.keep("signed in: two factors", await navigation.value)
    # Signed in with the passkey alone, the password is the second factor (/2fa/password).
    await page.goto(f"{portal.url}/logout")
    async with page.expect_navigation():
        await page.click("#passkey-login-button")
    await walk.goto("second step: password", "/2fa/password")
    assert urlsplit(walk.states[-1].url).path == "/2fa/password"
    await page.fill("#password", "wrong")
    await walk.click("second step: wrong password", "#verify-password-button")
    assert walk.states[-1].status == 401
    await page.fill("#password", CHANGED_PASSWORD)
    async with page.expect_navigation() as verified:
        await page.click("#verify-password-button")
    answer = await verified.value
    assert answer is not None and urlsplit(answer.url).path == "/", await page.content()
    await walk.elevated("passkeys: before removal", "/settings/passkeys")
    walk.states.pop()
    await walk.click("passkeys: removed", "form.remove-form button")
    assert 'id="passkeys-none"' in walk.states[-1].html

    await walk.goto("elevate: confirmed already", "/settings/elevate?next=/")
    assert 'id="elevation-status"' in walk.states[-1].html
    # The mail's revoke page for the code used above.
    await page.goto(portal.url + revoke_path(mail))
    await walk.click("revoke code: used already", "#revoke")
    assert walk.states[-1].status == 400


def revoke_path(mail: EmailMessage) -> str:
    """Return the path of the elevation mail's revoke link."""
    match = re.search(r'id="revoke-link" href="http://[^/]+([^"]+)"', _html_of(mail))
    assert match, "no revoke link in the mail"
    return match.group(1).replace("&amp;", "&")


async def passkey_states(walk: Walk) -> None:
    """Issue 16's passkey settings with the tab's virtual authenticator: none yet, added, a
    refused name, renamed."""
    page = walk.page
    await walk.elevated("passkeys: none", "/settings/passkeys")
    assert 'id="passkeys-none"' in walk.states[-1].html
    await page.fill("#passkey-description", "My laptop")
    async with page.expect_navigation(url=f"{walk.portal.url}/settings/passkeys/added") as added:
        await page.click("#add-passkey")
    await walk.keep("passkeys: added", await added.value)
    await walk.elevated("passkeys: one, its forms", "/settings/passkeys")
    await page.locator("form.rename-form input[name=description]").fill(" ")
    await walk.click("passkeys: name refused", "form.rename-form button")
    assert 'id="error-summary"' in walk.states[-1].html
    await page.locator("form.rename-form input[name=description]").fill("My laptop")
    await walk.click("passkeys: renamed", "form.rename-form button")


async def password_change_states(walk: Walk) -> None:
    """Issue 16's signed-in password change (the session is elevated already): the form with
    the policy's hints, a refused new password, a wrong current one, and the changed page. The
    new password differs from the one the reset walk sets later."""
    page = walk.page
    await walk.goto("password change", "/settings/password")
    await page.fill("#current_password", "password")
    await page.fill("#password", "short")
    await page.fill("#password_confirm", "short")
    await walk.click("password change: new password refused", "#change-password")
    await page.fill("#current_password", "wrong")
    await page.fill("#password", CHANGED_PASSWORD)
    await page.fill("#password_confirm", CHANGED_PASSWORD)
    await walk.click("password change: wrong current password", "#change-password")
    await page.fill("#current_password", "password")
    await page.fill("#password", CHANGED_PASSWORD)
    await page.fill("#password_confirm", CHANGED_PASSWORD)
    await walk.click("password change: changed", "#change-password")
    assert 'id="password-changed"' in walk.states[-1].html


async def new_mail(
    portal: RunningPortal, before: int, *marks: str, timeout: float = 10.0
) -> EmailMessage:
    """Wait for a mail, after the first `before`, whose HTML holds every mark (the outbox
    delivers in the background, and the second-factor mails link to the reset too); return
    the last such mail."""
    deadline = time.monotonic() + timeout
    while not (
        found := [m for m in portal.mails()[before:] if all(k in _html_of(m) for k in marks)]
    ):
        assert time.monotonic() < deadline, f"no mail with {marks} came"
        await asyncio.sleep(0.05)
    return found[-1]


def _html_of(mail: EmailMessage) -> str:
    body = mail.get_body(preferencelist=("html",))
    assert body is not None
    return str(body.get_content())


def replay(status: int, html: str) -> Callable[[Route], Awaitable[None]]:
    """Return a route handler that answers with this page as the portal served it."""

    async def served(route: Route) -> None:
        await route.fulfill(status=status, body=html, content_type="text/html; charset=utf-8")

    return served


async def check_states(
    browser: Browser,
    states: list[State],
    variants: tuple[tuple[str, ColorScheme], ...] = VARIANTS,
    devices: tuple[str, ...] = tuple(WIDTHS),
) -> list[str]:
    """Replay each state once at its address in one tab, then run axe-core under each variant
    (theme, browser colour scheme) and device width; return the violations, each naming its
    state, variant and width."""
    context = await browser.new_context(bypass_csp=True)  # axe-core is an inline script
    found: list[str] = []
    try:
        page = await context.new_page()
        for state in states:
            assert 'data-theme="light"' in state.html, state.name
            await page.route(state.url, replay(state.status, state.html))
            await page.goto(state.url)
            await page.unroute(state.url)
            await page.add_script_tag(path=AXE)
            for device in devices:
                width, height = WIDTHS[device]
                await page.set_viewport_size({"width": width, "height": height})
                for theme, scheme in variants:
                    await page.emulate_media(color_scheme=scheme)
                    await page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
                    results = await page.evaluate(
                        "axe.run(document, {resultTypes: ['violations']})"
                    )
                    if SCREENSHOTS:
                        name = re.sub(r"[^a-z0-9]+", "-", state.name.lower()).strip("-")
                        shot = Path(SCREENSHOTS) / f"{name}--{theme}-{scheme}-{device}.png"
                        await page.screenshot(path=shot, full_page=True)
                    found += [
                        f"{state.name} [{theme} theme, {scheme} browser, {device}]: {v['id']} "
                        f"({v['impact']}): {v['help']} at "
                        f"{json.dumps([n['target'] for n in v['nodes']])}"
                        for v in results["violations"]
                    ]
    finally:
        await context.close()
    return found


async def violations(
    browser: Browser, states: list[State], theme: str, scheme: ColorScheme, device: str
) -> list[str]:
    """Replay each state at its address under this theme, scheme and width; return axe's
    violations, each naming its state."""
    return await check_states(browser, states, ((theme, scheme),), (device,))


def page_routes(directory: Path) -> set[str]:
    """Return the path of every GET route the app registers with the walked portal's
    configuration (the same file and environment the process runs with). A page behind a
    feature this configuration leaves off is not registered: the portal fixture turns on
    every feature that adds a page."""
    config = load_config([directory / "configuration.yml"], portal_environment(directory))
    app = create_app(config)
    paths = set()
    for route in app.router.routes():
        if route.method == "GET" and route.name != NO_SUCH_ROUTE and route.resource is not None:
            paths.add(route.resource.canonical)
    return paths


async def not_pages_answer_no_html(
    page: Page, portal: RunningPortal, routes: set[str]
) -> list[str]:
    """Fetch every registered route the walk leaves out; return those that answer HTML."""
    wrong = []
    for path in sorted(routes):
        address = NOT_PAGES[path][0] if path in NOT_PAGES else path
        answer = await page.request.get(portal.url + address, max_redirects=0)
        kind = answer.headers.get("content-type", "")
        if kind.startswith("text/html"):
            wrong.append(f"{path} ({address}) answers {answer.status} {kind}")
    return wrong


async def test_no_page_state_has_an_axe_violation_in_any_theme_or_width(
    portal: RunningPortal, browser: Browser
) -> None:
    assert AXE.is_file(), f"axe-core is missing at {AXE}: `make test` installs it with npm"
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await add_virtual_authenticator(page)
        states = await walk_every_state(page, portal)
        routes = page_routes(portal.log_file.parent)
        walked = {urlsplit(state.url).path for state in states}
        left_out = {r for r in routes if r.startswith(API) or r in NOT_PAGES}
        assert routes - walked - left_out == set(), "pages the walk never met"
        assert await not_pages_answer_no_html(page, portal, left_out) == []
        assert any(state.status == 404 for state in states)  # the fallback route's page
    finally:
        await context.close()
    found = await check_states(browser, states)
    assert found == [], "\n".join(found)
