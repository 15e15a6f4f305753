"""John signs in to a protected app through nginx, signs out, resets his password and signs in
again with the new one, in headless Chromium: the shipped deploy/nginx files on a real nginx, in
front of the real portal process (`python -m portal serve`) and a protected app.

Chromium resolves *.example.com to 127.0.0.1 itself (--host-resolver-rules) and ignores the
certificate errors of the test CA; every page it shows is saved as a screenshot in tmp_path.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
from playwright.async_api import Browser, Page, expect
from playwright.async_api import Error as PlaywrightError
from ruamel.yaml import YAML

from tests.e2e.conftest import (
    RunningPortal,
    Watched,
    launched_chromium,
    reset_link_from,
    spawn_portal,
    stop,
    wait_for_health,
    watched_page,
)
from tests.integration.nginx import APP_HOST, DOMAIN, PORTAL_HOST, Nginx, running_nginx
from tests.integration.process import HOST, free_port
from tests.integration.protected_app import ProtectedApp, run_protected_app

OLD_PASSWORD = "password"
NEW_PASSWORD = "Tr0ub4dor&3-horse-battery"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STORY_BUDGET = 30.0  # seconds, from the first page to the last
# Chromium reaches the example names on loopback, and nothing else by name.
RESOLVER_ARG = f"--host-resolver-rules=MAP *.{DOMAIN} {HOST}"
FAILED_LOAD = "Failed to load resource: the server responded with a status of"


@dataclass
class Site:
    """nginx in front of the portal process and the protected app."""

    nginx: Nginx
    portal: RunningPortal
    app: ProtectedApp

    def app_url(self, path: str = "/") -> str:
        """Return https://app.example.com:<port><path>."""
        return self.nginx.url(APP_HOST, path)

    def portal_url(self, path: str = "/") -> str:
        """Return https://portal.example.com:<port><path>."""
        return self.nginx.url(PORTAL_HOST, path)

    def diagnostics(self) -> str:
        """Return what the portal and nginx wrote, for failure messages."""
        return f"--- portal ---\n{self.portal.log()}\n--- nginx ---\n{self.nginx.log_tail()}"


def write_config(directory: Path, port: int, nginx: Nginx, users_file: Path) -> Path:
    """Write the configuration an admin behind nginx would, secrets left to the environment."""
    raw = {
        "server": {"address": f"tcp://{HOST}:{port}", "trusted_proxies": [f"{HOST}/32"]},
        "authentication_backend": {"file": {"path": str(users_file)}},
        "notifier": {"filesystem": {"filename": str(directory / "mail" / "notification.txt")}},
        "session": {
            "cookies": [
                {
                    "domain": DOMAIN,
                    "authelia_url": nginx.url(PORTAL_HOST).rstrip("/"),
                    "default_redirection_url": nginx.url(APP_HOST, "/"),
                }
            ]
        },
        "storage": {"local": {"path": str(directory / "db.sqlite3")}},
        "access_control": {
            "default_policy": "deny",
            "rules": [{"domain": APP_HOST, "policy": "one_factor"}],
        },
    }
    path = directory / "configuration.yml"
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    return path


@pytest.fixture
async def site(tmp_path: Path, users_file: Path) -> AsyncIterator[Site]:
    """Start the protected app, nginx with the shipped files, and `python -m portal serve`."""
    async with run_protected_app() as app:
        with ExitStack() as stack:
            port = free_port()
            upstream = f"{HOST}:{port}"
            nginx = stack.enter_context(
                running_nginx(tmp_path / "nginx", trustme.CA(), portal=upstream, app=app.address)
            )
            config = write_config(tmp_path, port, nginx, users_file)
            log_file = tmp_path / "portal.log"
            process = spawn_portal(tmp_path, config, log_file)
            stack.callback(stop, process)
            portal = RunningPortal(
                url=f"http://{HOST}:{port}",
                process=process,
                users_file=users_file,
                mail_file=tmp_path / "mail" / "notification.txt",
                log_file=log_file,
            )
            await wait_for_health(portal.url, process, log_file)
            yield Site(nginx, portal, app)


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Launch the system's headless Chromium, resolving the example names to loopback."""
    async with launched_chromium(RESOLVER_ARG) as launched:
        yield launched


@pytest.fixture
async def watched(chromium: Browser) -> AsyncIterator[Watched]:
    """Open a context that accepts the test CA's certificate, recording every error shown."""
    async with watched_page(chromium, ignore_https_errors=True) as opened:
        yield opened


# --- actions and checks ---------------------------------------------------------------------


async def screenshot(watched: Watched, directory: Path, name: str) -> None:
    """Save a full-page screenshot of the page as it is now."""
    path = directory / f"{len(watched.screenshots) + 1:02d}-{name}.png"
    await watched.page.screenshot(path=path, full_page=True)
    watched.screenshots.append(path)


async def on_sign_in_page(page: Page, site: Site, rd: str | None) -> None:
    """Check the page is the portal's sign-in form, asked to come back to rd (if any)."""
    await expect(page.locator("#sign-in-button")).to_be_visible()
    parts = urlsplit(page.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == site.portal_url("/"), page.url
    assert parse_qs(parts.query).get("rd") == ([rd] if rd else None), page.url
    assert await page.locator("input[name=rd]").input_value() == (rd or "")


async def sign_in(watched: Watched, site: Site, username: str, password: str) -> None:
    """Fill the sign-in form and send it; the browser must follow where the portal sends it."""
    page = watched.page
    await page.fill("#username", username)
    await page.fill("#password", password)
    try:
        async with page.expect_navigation():
            await page.click("#sign-in-button")
    except PlaywrightError as exc:
        # The console message and CSP report that explain an aborted navigation come just after.
        for _ in range(20):
            if watched.problems:
                break
            await page.wait_for_timeout(100)
        raise AssertionError(
            f"the sign-in form's navigation failed: {exc.message}\n"
            f"what the page reported: {watched.problems}\n{site.diagnostics()}"
        ) from None


async def sent_to_app_as(page: Page, site: Site, path: str, user: dict[str, list[str]]) -> None:
    """Check the page is the app's answer for path, told the visitor is user (Remote-*)."""
    assert page.url == site.app_url(path), page.url
    # Chromium shows a JSON answer as text in a <pre>.
    seen: dict[str, Any] = json.loads(await page.locator("pre").first.inner_text())
    assert (seen["path"], seen["remote"]) == (path, user), seen


async def submit(watched: Watched, site: Site, button: str) -> None:
    """Click a form's submit button; the POST it sends must redirect to its result page."""
    async with watched.page.expect_response(lambda r: r.request.method == "POST") as answer:
        await watched.page.click(button)
    response = await answer.value
    assert response.status == 303, f"POST {response.url}: {response.status}\n{site.diagnostics()}"
    await watched.page.wait_for_url(site.portal_url(response.headers["location"]))


def unexpected(problems: list[str], site: Site) -> list[str]:
    """Drop the one failed load the story provokes (the 401 of the old password); keep the rest."""
    refused = f"console error on {site.portal_url('/')}: {FAILED_LOAD} 401 "
    return [problem for problem in problems if not problem.startswith(refused)]


JOHN = {
    "Remote-User": ["john"],
    "Remote-Groups": ["admins,dev"],
    "Remote-Name": ["John Doe"],
    "Remote-Email": ["john.doe@authelia.com"],
}


async def test_john_signs_in_out_resets_his_password_and_signs_in_with_the_new_one(
    site: Site, watched: Watched, tmp_path: Path
) -> None:
    page = watched.page
    started = time.monotonic()
    hello = site.app_url("/hello")

    # Not signed in: nginx sends him from the app to the portal's sign-in page.
    await page.goto(hello)
    await on_sign_in_page(page, site, rd=hello)
    await screenshot(watched, tmp_path, "sign-in")

    # He signs in and is back where he was going; the app is told who he is.
    await sign_in(watched, site, "john", OLD_PASSWORD)
    await sent_to_app_as(page, site, "/hello", JOHN)
    [cookie] = [c for c in await page.context.cookies() if c["name"] == "portal_session"]
    assert (cookie["domain"], cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (
        f".{DOMAIN}",
        True,
        True,
        "Lax",
    )
    await screenshot(watched, tmp_path, "app-signed-in")

    # He signs out; the app sends him to sign in again.
    await page.goto(site.portal_url("/logout"))
    await on_sign_in_page(page, site, rd=None)
    await expect(page.locator("#signed-out")).to_have_text("You are signed out.")
    assert "portal_session" not in {c["name"] for c in await page.context.cookies()}
    await screenshot(watched, tmp_path, "signed-out")
    await page.goto(hello)
    await on_sign_in_page(page, site, rd=hello)
    await screenshot(watched, tmp_path, "sign-in-again")

    # He forgot his password: step 1.
    async with page.expect_navigation():
        await page.click("#forgot-password")
    assert page.url == site.portal_url("/reset-password/step1")
    await screenshot(watched, tmp_path, "step1")
    await page.fill("#username", "john")
    await submit(watched, site, "#send-link")
    await expect(page.locator("#reset-sent")).to_be_visible()
    await screenshot(watched, tmp_path, "check-your-email")

    # The mail's link is on the portal's public address; he opens it.
    [mail] = await site.portal.wait_for_mails(1)
    assert mail["To"] == "john.doe@authelia.com"
    link = reset_link_from(mail)
    assert link.startswith(site.portal_url("/reset-password/step2?token=")), link
    await page.goto(link)
    assert page.url == site.portal_url("/reset-password/step2")
    await expect(page.locator("#reset-username")).to_have_text("john")
    await screenshot(watched, tmp_path, "choose-password")

    # He types the new password twice.
    await page.fill("#password", NEW_PASSWORD)
    await page.fill("#password_confirm", NEW_PASSWORD)
    await submit(watched, site, "#set-password")
    await expect(page.locator("#reset-done")).to_be_visible()
    await screenshot(watched, tmp_path, "done")

    # The old password no longer opens anything.
    async with page.expect_navigation():
        await page.click("#sign-in")
    await on_sign_in_page(page, site, rd=None)
    await sign_in(watched, site, "john", OLD_PASSWORD)
    await expect(page.locator("#signin-error")).to_have_text("Incorrect username or password.")
    await screenshot(watched, tmp_path, "old-password-refused")

    # The new one does: with no rd, he lands on the default redirection URL, the app.
    await sign_in(watched, site, "john", NEW_PASSWORD)
    await sent_to_app_as(page, site, "/", JOHN)
    await screenshot(watched, tmp_path, "app-with-new-password")
    await page.goto(hello)
    await sent_to_app_as(page, site, "/hello", JOHN)

    elapsed = time.monotonic() - started
    assert elapsed < STORY_BUDGET, f"the story took {elapsed:.1f}s"
    assert [p.name for p in watched.screenshots] == [
        "01-sign-in.png",
        "02-app-signed-in.png",
        "03-signed-out.png",
        "04-sign-in-again.png",
        "05-step1.png",
        "06-check-your-email.png",
        "07-choose-password.png",
        "08-done.png",
        "09-old-password-refused.png",
        "10-app-with-new-password.png",
    ]
    for path in watched.screenshots:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), path
        assert len(data) > 1024, path
    assert unexpected(watched.problems, site) == []
    # Every request the app saw came through nginx after the portal said yes, as john.
    assert site.app.seen and all(seen["remote"] == JOHN for seen in site.app.seen), site.app.seen
