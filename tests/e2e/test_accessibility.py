"""axe-core finds no violation on any page state, in every theme, at desktop and phone widths
(issue 12).

The states are reached once in headless Chromium against the portal process, with the CAPTCHA
(ALTCHA), the security questions and the organisation's logo and name on; each page as served
is kept, then replayed at its own address (so its stylesheet, scripts and widget load from the
portal as they did) under each theme (the `data-theme` the portal writes for it; `auto` in a
light and in a dark browser) and width, and axe-core (installed by `make test` with npm, never
fetched here) checks it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pyotp
import pytest
from playwright.async_api import Browser, Page, Response, Route, expect

from portal.config import DEFAULT_QUESTIONS
from tests.conftest import REPO
from tests.e2e.conftest import (
    RunningPortal,
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
    """Run the portal with ALTCHA on every form (sign-in after one failure), the questions, and
    a logo and name."""
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
        # The walk fails three times on purpose before it saves the questions.
        "regulation": {"max_retries": 6},
        "server": {
            "asset_path": str(assets),
            "endpoints": {
                "rate_limits": {
                    "reset_password_start": {"buckets": [{"period": "10 minutes", "requests": 6}]}
                }
            },
        },
    }
    with run_portal(tmp_path, users_file, extra) as running:
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
    await second_factor_states(walk)
    await walk.goto("signed out", "/logout")
    await walk.goto("404", "/nowhere")

    await walk.goto("step 1", "/reset-password/step1")
    await walk.click("step 1: CAPTCHA not completed", "#send-link")
    await page.fill("#username", "john")
    await walk.solve()
    await walk.click("questions", "#send-link")
    labels = page.locator("label.question")
    for i in range(await labels.count()):
        question = (await labels.nth(i).inner_text()).strip()
        await page.get_by_label(question).fill(ANSWERS[DEFAULT_QUESTIONS.index(question)])
    await walk.click("step 1: sent", "#send-answers")
    mail = await reset_mail(portal)
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


async def second_factor_states(walk: Walk) -> None:
    """Issue 15's pages: the second step with no device and with one, the elevation by mailed
    code, the one-time password settings; the device is removed again by the admin command, so
    the reset walk after this one meets the form without a code field."""
    page, portal = walk.page, walk.portal
    await walk.goto("second factor needed", "/2fa/one-time-password")
    assert 'id="second-factor-missing"' in walk.states[-1].html
    await walk.goto("elevate", "/settings/elevate?next=/settings/one-time-password")
    await walk.click("elevate: code sent", "#send-code")
    await page.fill("#otc", "WRONG234")
    await walk.click("elevate: code refused", "#check-code")
    [mail] = await portal.wait_for_mails(1)
    code = re.search(r'id="one-time-code"[^>]*>([^<]+)<', _html_of(mail))
    assert code is not None
    await page.fill("#otc", code.group(1).strip())
    await walk.click("totp: not set up", "#check-code")
    await walk.click("totp: set up", "#start-totp")
    secret = await page.locator("#totp-secret").input_value()
    await page.fill("#token", "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    await walk.click("totp: wrong code", "#confirm-totp")
    await page.fill("#token", pyotp.TOTP(secret).now())
    await walk.click("totp: registered", "#confirm-totp")
    await walk.goto("totp: set up already", "/settings/one-time-password")
    await walk.goto("security settings", "/settings")
    await password_change_states(walk)
    await walk.goto("second step: code", "/2fa/one-time-password")
    await page.fill("#token", "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    await walk.click("second step: wrong code", "#verify-button")
    directory = portal.log_file.parent
    removed = subprocess.run(
        [sys.executable, "-m", "portal", "users", "second-factor", "delete", "john"]
        + ["--config", str(directory / "configuration.yml")],
        cwd=directory,
        env=portal_environment(directory),
        capture_output=True,
        text=True,
        check=False,
    )
    assert removed.returncode == 0, removed.stderr


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
    await page.fill("#password", "Another-Long-Passphrase-77")
    await page.fill("#password_confirm", "Another-Long-Passphrase-77")
    await walk.click("password change: wrong current password", "#change-password")
    await page.fill("#current_password", "password")
    await page.fill("#password", "Another-Long-Passphrase-77")
    await page.fill("#password_confirm", "Another-Long-Passphrase-77")
    await walk.click("password change: changed", "#change-password")
    assert 'id="password-changed"' in walk.states[-1].html


async def reset_mail(portal: RunningPortal, timeout: float = 10.0) -> EmailMessage:
    """Wait for the mail with a reset link (the walk's other mails come before it)."""
    deadline = time.monotonic() + timeout
    while not (found := [m for m in portal.mails() if 'id="reset-link"' in _html_of(m)]):
        assert time.monotonic() < deadline, "no reset mail came"
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


async def violations(
    browser: Browser, states: list[State], theme: str, scheme: ColorScheme, device: str
) -> list[str]:
    """Replay each state at its address under this theme, scheme and width; return axe's
    violations, each naming its state."""
    width, height = WIDTHS[device]
    context = await browser.new_context(
        viewport={"width": width, "height": height},
        color_scheme=scheme,
        bypass_csp=True,  # axe-core is injected as an inline script
    )
    found: list[str] = []
    try:
        page = await context.new_page()
        for state in states:
            assert 'data-theme="light"' in state.html, state.name
            html = state.html.replace('data-theme="light"', f'data-theme="{theme}"', 1)

            await page.route(state.url, replay(state.status, html))
            await page.goto(state.url)
            await page.unroute(state.url)
            await page.add_script_tag(path=AXE)
            results = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
            if SCREENSHOTS:
                name = re.sub(r"[^a-z0-9]+", "-", state.name.lower()).strip("-")
                shot = Path(SCREENSHOTS) / f"{name}--{theme}-{scheme}-{device}.png"
                await page.screenshot(path=shot, full_page=True)
            found += [
                f"{state.name} [{theme} theme, {scheme} browser, {device}]: {v['id']} "
                f"({v['impact']}): {v['help']} at {json.dumps([n['target'] for n in v['nodes']])}"
                for v in results["violations"]
            ]
    finally:
        await context.close()
    return found


async def test_no_page_state_has_an_axe_violation_in_any_theme_or_width(
    portal: RunningPortal, browser: Browser
) -> None:
    assert AXE.is_file(), f"axe-core is missing at {AXE}: `make test` installs it with npm"
    context = await browser.new_context()
    try:
        states = await walk_every_state(await context.new_page(), portal)
    finally:
        await context.close()
    found: list[str] = []
    for theme, scheme in VARIANTS:
        for device in WIDTHS:
            found += await violations(browser, states, theme, scheme, device)
    assert found == [], "\n".join(found)
