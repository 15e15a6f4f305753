"""Fixtures for browser stories: the real portal process, a webmail on another site, Chromium."""

from __future__ import annotations

import asyncio
import email.message
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import (
    Browser,
    CDPSession,
    ConsoleMessage,
    Page,
    Response,
    async_playwright,
    expect,
)
from ruamel.yaml import YAML

from portal.notify.filesystem import split_messages
from tests.conftest import ENCRYPTION_KEY, JWT_SECRET, deep_merge
from tests.integration.process import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Reports every Content-Security-Policy violation to the test (an init script is exempt from CSP).
CSP_REPORTER = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolation(`${event.violatedDirective} blocked ${event.blockedURI}`);
});
"""


@dataclass
class RunningPortal:
    """The portal process as an admin runs it, and the files it writes."""

    url: str
    process: subprocess.Popen[bytes]
    users_file: Path
    mail_file: Path
    log_file: Path

    def log(self) -> str:
        """Return what the process printed so far (for failure messages)."""
        return self.log_file.read_text(errors="replace")

    def mails(self) -> list[email.message.EmailMessage]:
        """Return every mail the filesystem notifier wrote so far."""
        if not self.mail_file.exists():
            return []
        return split_messages(self.mail_file.read_bytes())

    async def wait_for_mails(
        self, count: int, timeout: float = 10.0
    ) -> list[email.message.EmailMessage]:
        """Poll the notification file until it holds at least `count` mails."""
        deadline = time.monotonic() + timeout
        while len(mails := self.mails()) < count:
            assert time.monotonic() < deadline, f"only {len(mails)} mail(s) came\n{self.log()}"
            await asyncio.sleep(0.05)
        return mails


def write_portal_config(
    directory: Path,
    port: int,
    users_file: Path,
    extra: dict[str, Any] | None = None,
    host: str = "127.0.0.1",
) -> Path:
    """Write the configuration file an admin would (extra merged in), secrets left to the
    environment; the session cookie's domain and authelia_url name `host` (the portal listens
    on 127.0.0.1 either way)."""
    raw: dict[str, Any] = {
        "server": {"address": f"tcp://127.0.0.1:{port}"},
        "authentication_backend": {"file": {"path": str(users_file)}},
        "notifier": {"filesystem": {"filename": str(directory / "mail" / "notification.txt")}},
        "session": {"cookies": [{"domain": host, "authelia_url": f"http://{host}:{port}"}]},
        "storage": {"local": {"path": str(directory / "db.sqlite3")}},
    }
    raw = deep_merge(raw, extra or {})
    path = directory / "configuration.yml"
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    return path


def portal_environment(directory: Path) -> dict[str, str]:
    """Return the process environment: secrets as PORTAL_* variables, one of them from a file."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "AUTHELIA_"))}
    secret_file = directory / "jwt_secret"
    secret_file.write_text(JWT_SECRET + "\n")
    secret_file.chmod(0o600)
    environ["PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE"] = str(secret_file)
    environ["PORTAL_STORAGE_ENCRYPTION_KEY"] = ENCRYPTION_KEY
    return environ


def spawn_portal(directory: Path, config: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """Start `python -m portal serve` in directory, its output going to log_file."""
    with log_file.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "portal", "serve", "--config", str(config)],
            cwd=directory,
            env=portal_environment(directory),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll /api/health until the portal answers, failing early if the process exits."""
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            exited = process.poll()
            assert exited is None, f"the portal exited with {exited}\n{log.read_text()}"
            try:
                async with session.get(f"{url}/api/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"the portal did not start\n{log.read_text()}"
            await asyncio.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the process with SIGTERM, killing it if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def run_portal(
    directory: Path, users_file: Path, extra: dict[str, Any] | None = None, host: str = "127.0.0.1"
) -> Iterator[RunningPortal]:
    """Run `python -m portal serve` on a free loopback port (configuration plus extra sections)
    while the block runs, reached as http://{host}:{port} (host "localhost" for passkeys: a
    relying-party id must be a domain, never an IP address, WebAuthn Level 3 section 5.1.3)."""
    port = free_port()
    config = write_portal_config(directory, port, users_file, extra, host)
    log_file = directory / "portal.log"
    process = spawn_portal(directory, config, log_file)
    try:
        yield RunningPortal(
            url=f"http://{host}:{port}",
            process=process,
            users_file=users_file,
            mail_file=directory / "mail" / "notification.txt",
            log_file=log_file,
        )
    finally:
        stop(process)


@pytest.fixture
def portal_process(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    """Start `python -m portal serve` on a free loopback port; stop it afterwards."""
    with run_portal(tmp_path, users_file) as running:
        yield running


@pytest.fixture
async def portal(portal_process: RunningPortal) -> RunningPortal:
    """The running portal, once it answers its health check."""
    await wait_for_health(portal_process.url, portal_process.process, portal_process.log_file)
    return portal_process


ServeWebmail = Callable[[str], Awaitable[str]]


@pytest.fixture
async def webmail() -> AsyncIterator[ServeWebmail]:
    """Serve a page with one link on http://localhost:<port>/: another site than the portal."""
    runner: web.AppRunner | None = None

    async def serve(link: str) -> str:
        nonlocal runner

        async def inbox(request: web.Request) -> web.Response:
            return web.Response(
                text=(
                    "<!doctype html><html><head><meta charset='utf-8'><title>Webmail</title>"
                    "<link rel='icon' href='data:,'>"
                    "</head><body><h1>Inbox</h1><p>Reset your password</p>"
                    f"<p><a id='go' href='{escape(link)}'>Choose a new password</a></p>"
                    "</body></html>"
                ),
                content_type="text/html",
            )

        app = web.Application()
        app.router.add_get("/", inbox)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        # localhost and 127.0.0.1 are different sites: the click is a cross-site navigation.
        return f"http://localhost:{port}/"

    yield serve
    if runner is not None:
        await runner.cleanup()


@asynccontextmanager
async def launched_chromium(*extra_args: str) -> AsyncIterator[Browser]:
    """Launch the system's headless Chromium (never a downloaded one) for the block."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args], headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Launch the system's headless Chromium (never a downloaded one)."""
    async with launched_chromium() as launched:
        yield launched


@dataclass
class Watched:
    """A page with the console errors, page errors and CSP violations seen on it."""

    page: Page
    problems: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)


@asynccontextmanager
async def watched_page(browser: Browser, **context_options: Any) -> AsyncIterator[Watched]:
    """Open a fresh context (with context_options) and a page that records every error shown."""
    context = await browser.new_context(**context_options)
    page = await context.new_page()
    watched = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            source = message.location.get("url", "")
            watched.problems.append(f"console error on {page.url}: {message.text} ({source})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: watched.problems.append(f"page error on {page.url}: {exc}"))
    await page.expose_function(
        "__cspViolation", lambda text: watched.problems.append(f"CSP on {page.url}: {text}")
    )
    await page.add_init_script(CSP_REPORTER)
    try:
        yield watched
    finally:
        await context.close()


@pytest.fixture
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    """Open a fresh browser context and page that records every error it shows."""
    async with watched_page(browser) as opened:
        yield opened


_LINK = re.compile(r'id="reset-link" href="([^"]+)"')


def reset_link_from(mail: email.message.EmailMessage) -> str:
    """Return the href of the HTML part's element with id="reset-link"."""
    html = mail.get_body(preferencelist=("html",))
    assert html is not None, "the mail has no HTML part"
    match = _LINK.search(str(html.get_content()))
    assert match, "no reset link in the HTML part"
    return match.group(1).replace("&amp;", "&")


def code_in(mail: email.message.EmailMessage) -> str:
    """Return the one-time code of an elevation mail (its element with id="one-time-code")."""
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    match = re.search(r'id="one-time-code"[^>]*>([^<]+)<', str(html.get_content()))
    assert match, "no one-time code in the mail"
    return match.group(1).strip()


def _has_code(mail: email.message.EmailMessage) -> bool:
    html = mail.get_body(preferencelist=("html",))
    return html is not None and 'id="one-time-code"' in str(html.get_content())


async def sign_in(
    page: Page,
    portal: RunningPortal,
    password: str = "password",  # noqa: S107 - tests/fixtures/users.yml's password
    rd: str = "",
) -> None:
    """Sign john in with the sign-in page's form (rd: the target site, if any); return once
    the form's answer has loaded."""
    await page.goto(f"{portal.url}/" + (f"?rd={rd}" if rd else ""))
    await page.fill("#username", "john")
    await page.fill("#password", password)
    async with page.expect_navigation():
        await page.click("#sign-in-button")


async def elevate(page: Page, portal: RunningPortal) -> Response | None:
    """On the "Confirm your identity" page: have the code mailed, type it from the newest mail;
    return the answer of the page it leads back to, once loaded."""
    await expect(page.locator("h1")).to_have_text("Confirm your identity")
    before = len(portal.mails())
    await page.click("#send-code")
    deadline = time.monotonic() + 10
    # Other mails (a second factor added or removed) may be delivered meanwhile.
    while not (codes := [m for m in portal.mails()[before:] if _has_code(m)]):
        assert time.monotonic() < deadline, f"no code was mailed\n{portal.log()}"
        await asyncio.sleep(0.05)
    await page.get_by_label("One-time code").fill(code_in(codes[-1]))
    async with page.expect_navigation() as back:
        await page.click("#check-code")
    return await back.value


# A platform passkey with user verification (Chrome DevTools Protocol, WebAuthn domain's
# VirtualAuthenticatorOptions).
VIRTUAL_AUTHENTICATOR: dict[str, Any] = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}


async def add_virtual_authenticator(page: Page, **options: Any) -> tuple[CDPSession, str]:
    """Attach a DevTools virtual authenticator (VIRTUAL_AUTHENTICATOR with options over it) to
    the page's tab; return the CDP session and the authenticator's id."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    added = await cdp.send(
        "WebAuthn.addVirtualAuthenticator", {"options": {**VIRTUAL_AUTHENTICATOR, **options}}
    )
    return cdp, str(added["authenticatorId"])
