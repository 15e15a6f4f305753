"""Passkeys in headless Chromium with the DevTools virtual authenticator (issue 16), against the
portal process on http://localhost (a secure context, and a domain a relying-party id may be).

John elevates his session with the mailed code and registers a passkey; he signs in with his
password and the passkey and reaches a two_factor site; a removed passkey is refused; an
authenticator whose counter went back (a clone) is refused; a reset for a user with only a
passkey asks for it. Pages are screenshot (PORTAL_SCREENSHOTS=dir keeps them) and no page shows
a console error or a CSP violation.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, CDPSession, Page, expect

from tests.e2e.conftest import (
    RunningPortal,
    Watched,
    add_virtual_authenticator,
    elevate,
    reset_link_from,
    run_portal,
    sign_in,
    wait_for_health,
    watched_page,
)
from tests.e2e.test_accessibility import AXE, VARIANTS, WIDTHS, State, violations

SETTINGS = "/settings/passkeys"
PROTECTED = "https://secure.localhost/"


def portal_on_localhost(directory: Path, users_file: Path, **extra: Any) -> Iterator[RunningPortal]:
    sections = {
        "access_control": {
            "default_policy": "one_factor",
            "rules": [{"domain": "secure.localhost", "policy": "two_factor"}],
        },
        **extra,
    }
    with run_portal(directory, users_file, sections, host="localhost") as running:
        yield running


@pytest.fixture
def portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    yield from portal_on_localhost(tmp_path, users_file)


@dataclass
class Tab:
    """A browser tab with a virtual authenticator attached."""

    watched: Watched
    cdp: CDPSession
    authenticator: str
    portal: RunningPortal
    shots: Path
    device: str = "desktop"
    # Every state shot; with `axe` set, axe-core checks them all at the end of the test.
    states: list[State] = field(default_factory=list)
    axe: bool = False

    @property
    def page(self) -> Page:
        return self.watched.page

    async def shot(self, name: str) -> None:
        html = await self.page.content()
        self.states.append(State(f"{name} ({self.device})", self.page.url, 200, html))
        for theme in ("light", "dark"):
            await self.page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
            await self.page.screenshot(path=self.shots / f"{name}--{theme}.png", full_page=True)

    async def credentials(self) -> list[dict[str, Any]]:
        found = await self.cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": self.authenticator}
        )
        result: list[dict[str, Any]] = found["credentials"]
        return result


@asynccontextmanager
async def open_tab(
    browser: Browser, portal: RunningPortal, shots: Path, device: str, **authenticator: Any
) -> AsyncIterator[Tab]:
    """A fresh browser context whose tab has a virtual authenticator (a platform passkey with
    user verification, `authenticator` options over it); no console error or CSP violation is
    allowed in it."""
    await wait_for_health(portal.url, portal.process, portal.log_file)
    width, height = WIDTHS[device]
    shots.mkdir(parents=True, exist_ok=True)
    async with watched_page(browser, viewport={"width": width, "height": height}) as watched:
        cdp, authenticator_id = await add_virtual_authenticator(watched.page, **authenticator)
        tab = Tab(watched, cdp, authenticator_id, portal, shots, device)
        yield tab
        assert watched.problems == []
    if tab.axe:
        assert AXE.is_file(), f"axe-core is missing at {AXE}: `make test` installs it with npm"
        found: list[str] = []
        for theme, scheme in VARIANTS:
            found += await violations(browser, tab.states, theme, scheme, device)
        assert found == []


@pytest.fixture(params=["desktop", "phone"])
async def tab(
    request: pytest.FixtureRequest, portal: RunningPortal, browser: Browser, tmp_path: Path
) -> AsyncIterator[Tab]:
    shots = Path(os.environ.get("PORTAL_SCREENSHOTS") or tmp_path) / f"passkeys-{request.param}"
    async with open_tab(browser, portal, shots, request.param) as opened:
        yield opened


async def register_passkey(tab: Tab, name: str = "My laptop") -> None:
    page, portal = tab.page, tab.portal
    await sign_in(page, portal)
    await page.goto(f"{portal.url}{SETTINGS}")
    await elevate(page, portal)
    assert page.url == f"{portal.url}{SETTINGS}"
    await expect(page.locator("#passkeys-none")).to_be_visible()
    await tab.shot("settings-empty")
    await page.fill("#passkey-description", name)
    async with page.expect_navigation(url=f"{portal.url}{SETTINGS}/added"):
        await page.click("#add-passkey")
    await expect(page.locator("#passkeys-status")).to_have_text("Your passkey is added.")
    await expect(page.locator("#passkeys .passkey-name")).to_have_text([name])
    await tab.shot("settings-added")


async def test_john_registers_a_passkey_and_is_mailed(tab: Tab) -> None:
    await register_passkey(tab)
    assert len(await tab.credentials()) == 1
    mails = tab.portal.mails()
    assert "A second factor was added" in str(mails[-1]["Subject"])
    text = mails[-1].get_body(("plain",))
    assert text is not None and "a passkey or security key" in text.get_content()


async def level(tab: Tab) -> int:
    answer = await tab.page.request.get(f"{tab.portal.url}/api/state")
    state: dict[str, Any] = (await answer.json())["data"]
    return int(state["authentication_level"])


async def sign_out(tab: Tab) -> None:
    await tab.page.goto(f"{tab.portal.url}/logout")


async def second_step_with_passkey(tab: Tab) -> None:
    """Sign in with the password for the two_factor site, then use the passkey."""
    page = tab.page
    await page.route(
        f"{PROTECTED}**", lambda route: route.fulfill(status=200, body="the protected app")
    )
    await sign_in(page, tab.portal, rd=PROTECTED)
    await page.wait_for_url(f"{tab.portal.url}/2fa/one-time-password?**")
    await expect(page.locator("h1")).to_have_text("Passkey")
    await expect(page.locator("#token")).to_have_count(0)  # no TOTP: no code field
    await tab.shot("second-step-passkey")
    async with page.expect_navigation(url=PROTECTED):
        await page.click("#passkey-button")


async def try_passkey(tab: Tab) -> dict[str, Any]:
    """Run the second step's ceremony from the page's own script; return the portal's answer."""
    answer: dict[str, Any] = await tab.page.evaluate(
        """async () => {
          const m = await import('/static/webauthn.js');
          return m.authenticate('/api/secondfactor/webauthn', async (assertion) => {
            const r = await fetch('/api/secondfactor/webauthn', {method: 'POST',
              headers: {'Content-Type': 'application/json'}, body: JSON.stringify(assertion)});
            return {status: r.status, body: await r.json()};
          });
        }"""
    )
    # The browser reports the refusal's 401 as a console error: expected here, and only here.
    problems = tab.watched.problems
    problems[:] = [p for p in problems if "status of 401" not in p]
    return answer


async def test_john_signs_in_with_password_and_passkey(tab: Tab) -> None:
    tab.axe = True
    await register_passkey(tab)
    await sign_out(tab)
    await second_step_with_passkey(tab)
    assert tab.page.url == PROTECTED
    assert await level(tab) == 2
    await tab.page.goto(f"{tab.portal.url}{SETTINGS}")
    # Last used is told now; the settings page asks for elevation again after sign-out.
    await expect(tab.page.locator("h1")).to_have_text("Confirm your identity")


async def test_a_removed_passkey_is_refused(tab: Tab) -> None:
    page = tab.page
    await register_passkey(tab)
    await page.goto(f"{tab.portal.url}{SETTINGS}")
    # Renaming and removing are plain forms (no script involved).
    await page.locator("form.rename-form input[name=description]").fill("Old laptop")
    async with page.expect_navigation(url=f"{tab.portal.url}{SETTINGS}/renamed"):
        await page.locator("form.rename-form button").click()
    await expect(page.locator("#passkeys .passkey-name")).to_have_text(["Old laptop"])
    await page.goto(f"{tab.portal.url}{SETTINGS}")
    await tab.shot("settings-with-a-passkey")
    remove = page.locator("form.remove-form button")
    async with page.expect_navigation(url=f"{tab.portal.url}{SETTINGS}/removed"):
        await remove.click()
    await expect(page.locator("#passkeys-none")).to_be_visible()
    await sign_out(tab)
    await sign_in(tab.page, tab.portal)
    assert await level(tab) == 1
    # The authenticator still holds the (discoverable) credential and answers with it.
    assert len(await tab.credentials()) == 1
    answer = await try_passkey(tab)
    assert answer["status"] == 401
    assert answer["body"] == {"status": "KO", "message": "The passkey was not accepted."}
    assert await level(tab) == 1


async def test_a_cloned_authenticator_is_refused(tab: Tab) -> None:
    await register_passkey(tab)
    (registered,) = await tab.credentials()
    await sign_out(tab)
    await second_step_with_passkey(tab)
    assert await level(tab) == 2
    (used,) = await tab.credentials()
    assert used["signCount"] > registered["signCount"]
    # A copy of the key made before that use: its counter is behind the portal's.
    await tab.cdp.send(
        "WebAuthn.removeCredential",
        {"authenticatorId": tab.authenticator, "credentialId": used["credentialId"]},
    )
    await tab.cdp.send(
        "WebAuthn.addCredential",
        {"authenticatorId": tab.authenticator, "credential": {**registered, "signCount": 0}},
    )
    await sign_out(tab)
    await sign_in(tab.page, tab.portal)
    answer = await try_passkey(tab)
    assert (answer["status"], answer["body"]["status"]) == (401, "KO")
    assert await level(tab) == 1
    assert "counter" in tab.portal.log()


NEW_PASSWORD = "a-much-longer-passphrase-7"


async def test_a_reset_for_a_user_with_only_a_passkey_asks_for_it(tab: Tab) -> None:
    tab.axe = True
    page, portal = tab.page, tab.portal
    await register_passkey(tab)
    await sign_out(tab)
    before = len(portal.mails())
    await page.goto(f"{portal.url}/reset-password/step1")
    await page.fill("#username", "john")
    await page.click("#send-link")
    mail = (await portal.wait_for_mails(before + 1))[-1]
    await page.goto(reset_link_from(mail))
    await expect(page.locator("#passkey-hint")).to_have_text(
        "Sending the form asks for your passkey or security key."
    )
    await expect(page.locator("#totp_code")).to_have_count(0)
    await tab.shot("reset-step2-passkey")
    # Without the passkey's answer (as without JavaScript), the form is refused, the link kept.
    await page.fill("#password", NEW_PASSWORD)
    await page.fill("#password_confirm", NEW_PASSWORD)
    async with page.expect_navigation():
        await page.evaluate("document.querySelector('form').submit()")  # no script's help
    await expect(page.locator("#step2-errors")).to_contain_text("Confirm with your passkey.")
    problems = tab.watched.problems  # the refused form's 400 is expected here
    problems[:] = [p for p in problems if "status of 400" not in p]
    await tab.shot("reset-step2-passkey-refused")
    # With it: the password is set.
    await page.fill("#password", NEW_PASSWORD)
    await page.fill("#password_confirm", NEW_PASSWORD)
    async with page.expect_navigation(url=f"{portal.url}/reset-password/done"):
        await page.click("#set-password")
    await page.goto(f"{portal.url}/")
    await page.fill("#username", "john")
    await page.fill("#password", NEW_PASSWORD)
    await page.click("#sign-in-button")
    await page.wait_for_load_state()
    assert await level(tab) == 1


@pytest.fixture
def passkey_login_portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    yield from portal_on_localhost(tmp_path, users_file, webauthn={"enable_passkey_login": True})


async def test_john_signs_in_with_the_passkey_alone(
    passkey_login_portal: RunningPortal, browser: Browser, tmp_path: Path
) -> None:
    portal = passkey_login_portal
    async with open_tab(browser, portal, tmp_path, "desktop") as tab:
        await register_passkey(tab)
        await sign_out(tab)
        page = tab.page
        await page.goto(f"{portal.url}/")
        await tab.shot("signin-with-passkey")
        async with page.expect_navigation(url=f"{portal.url}/"):
            await page.click("#passkey-login-button")
        await page.wait_for_load_state()
        assert await level(tab) == 1  # one factor, as Authelia counts a passkey sign-in
        state = await (await page.request.get(f"{portal.url}/api/state")).json()
        assert state["data"]["username"] == "john"
        # The same passkey cannot be the second factor too.
        answer = await try_passkey(tab)
        assert answer["status"] == 401
        assert await level(tab) == 1


@pytest.fixture
def filtering_portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    # Only some other authenticator model may register.
    filtering = {"permitted_aaguids": ["08987058-cadc-4b81-b6e1-30de50dcbe96"]}
    yield from portal_on_localhost(tmp_path, users_file, webauthn={"filtering": filtering})


async def test_an_authenticator_not_permitted_is_refused_at_registration(
    filtering_portal: RunningPortal, browser: Browser, tmp_path: Path
) -> None:
    async with open_tab(browser, filtering_portal, tmp_path, "desktop") as tab:
        page = tab.page
        await sign_in(page, filtering_portal)
        await page.goto(f"{filtering_portal.url}{SETTINGS}")
        await elevate(page, filtering_portal)
        await page.click("#add-passkey")
        await expect(page.locator("#passkey-error")).to_have_text(
            "This kind of passkey or security key is not allowed here."
        )
        await tab.shot("settings-refused")
        problems = tab.watched.problems  # the refusal's 403 is expected here
        problems[:] = [p for p in problems if "status of 403" not in p]
        await page.reload()
        await expect(page.locator("#passkeys-none")).to_be_visible()
        assert "aaguid_not_permitted" in filtering_portal.log()


@pytest.fixture
def no_backup_portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    # webauthn.filtering.prohibit_backup_eligibility: only keys bound to one device may register.
    filtering = {"prohibit_backup_eligibility": True}
    yield from portal_on_localhost(tmp_path, users_file, webauthn={"filtering": filtering})


async def test_a_backup_eligible_passkey_is_refused_and_a_device_bound_one_is_not(
    no_backup_portal: RunningPortal, browser: Browser, tmp_path: Path
) -> None:
    portal = no_backup_portal
    # A synced passkey (the BE flag set, WebAuthn Level 3 section 6.1): refused, nothing stored.
    async with open_tab(
        browser, portal, tmp_path / "synced", "desktop", defaultBackupEligibility=True
    ) as tab:
        tab.axe = True
        page = tab.page
        await sign_in(page, portal)
        await page.goto(f"{portal.url}{SETTINGS}")
        await elevate(page, portal)
        await page.click("#add-passkey")
        await expect(page.locator("#passkey-error")).to_have_text(
            "This kind of passkey or security key is not allowed here."
        )
        await expect(page.locator("#passkey-error")).to_be_visible()
        await tab.shot("settings-backup-eligible-refused")
        problems = tab.watched.problems  # the refusal's 403 is expected here
        problems[:] = [p for p in problems if "status of 403" not in p]
        await page.reload()
        await expect(page.locator("#passkeys-none")).to_be_visible()
        listed = await page.request.get(f"{portal.url}/api/secondfactor/webauthn/credentials")
        assert (await listed.json())["data"] == []
        assert 'reason="backup_eligible"' in portal.log()

    # A key bound to its device (no BE flag): registered as usual.
    async with open_tab(browser, portal, tmp_path / "bound", "desktop") as tab:
        await register_passkey(tab, "My security key")
        assert len(await tab.credentials()) == 1
        listed = await tab.page.request.get(f"{portal.url}/api/secondfactor/webauthn/credentials")
        [credential] = (await listed.json())["data"]
        assert credential["description"] == "My security key"
        assert credential["backup_eligible"] is False


async def test_a_german_page_says_the_passkeys_refusal_in_german(
    filtering_portal: RunningPortal, browser: Browser, tmp_path: Path
) -> None:
    # The JSON API answers in English, as Authelia's; the page hands its script the translation.
    portal = filtering_portal
    async with open_tab(browser, portal, tmp_path, "desktop") as tab:
        page = tab.page
        await sign_in(page, portal)
        await page.goto(f"{portal.url}{SETTINGS}")
        await elevate(page, portal)
        await page.context.add_cookies(
            [{"name": "portal_language", "value": "de", "url": portal.url}]
        )
        await page.reload()
        await expect(page.locator("html")).to_have_attribute("lang", "de")
        await page.click("#add-passkey")
        await expect(page.locator("#passkey-error")).to_have_text(
            "Diese Art von Passkey oder Sicherheitsschlüssel ist hier nicht erlaubt."
        )
        await tab.shot("settings-refused-de")
        problems = tab.watched.problems  # the refusal's 403 is expected here
        problems[:] = [p for p in problems if "status of 403" not in p]


async def test_a_passkey_prompt_that_fails_is_told_in_the_pages_language(
    passkey_login_portal: RunningPortal, browser: Browser, tmp_path: Path
) -> None:
    # The authenticator holds no passkey for the portal: the browser's prompt ends in a
    # NotAllowedError, which the French sign-in page says in French.
    portal = passkey_login_portal
    async with open_tab(browser, portal, tmp_path, "desktop") as tab:
        page = tab.page
        await page.context.add_cookies(
            [{"name": "portal_language", "value": "fr", "url": portal.url}]
        )
        await page.goto(f"{portal.url}/")
        await page.click("#passkey-login-button")
        await expect(page.locator("#passkey-error")).to_have_text(
            "La demande de clé d’accès a été annulée ou a expiré. Réessayez.", timeout=30_000
        )
        await expect(page.locator("#passkey-login-button")).to_be_enabled()
