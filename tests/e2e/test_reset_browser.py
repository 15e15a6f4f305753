"""A user resets a forgotten password in headless Chromium, against the portal process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from playwright.async_api import expect
from ruamel.yaml import YAML

from tests.e2e.conftest import RunningPortal, ServeWebmail, Watched, reset_link_from

NEW_PASSWORD = "Tr0ub4dor&3-horse-battery"
OLD_PASSWORD = "password"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def stored_hash(users_file: Path, username: str) -> str:
    """Read a user's password hash from the users file, as the portal left it."""
    users = YAML(typ="safe", pure=True).load(users_file.read_text())
    return str(users["users"][username]["password"])


def hash_matches(password: str, digest: str) -> bool:
    """Ask `portal crypto hash validate` whether the password matches the digest."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "portal",
            "crypto",
            "hash",
            "validate",
            "--password",
            password,
            "--",
            digest,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def unexpected(problems: list[str], used_link: str) -> list[str]:
    """Drop the failed loads a browser reports for a healthy story; keep everything else.

    Chromium logs "Failed to load resource" for the deliberate 400 of a used link, at the
    token-free address the link redirects to. Any other console error, page error or CSP
    violation means a page is broken.
    """
    used_link = used_link.split("?", 1)[0]
    failed = "Failed to load resource: the server responded with a status of"
    return [
        problem
        for problem in problems
        if not problem.startswith(f"console error on {used_link}: {failed} 400 ")
    ]


async def submit(watched: Watched, portal: RunningPortal, button: str) -> None:
    """Click a form's submit button; the POST it sends must redirect to its result page."""
    async with watched.page.expect_response(lambda r: r.request.method == "POST") as answer:
        await watched.page.click(button)
    response = await answer.value
    assert response.status == 303, (
        f"POST {response.url} answered {response.status}; sent headers "
        f"{await response.request.all_headers()}\n{portal.log()}"
    )
    await watched.page.wait_for_url(f"{portal.url}{response.headers['location']}")


async def screenshot(watched: Watched, directory: Path, name: str) -> None:
    """Save a full-page screenshot of the page as it is now."""
    path = directory / f"{len(watched.screenshots) + 1:02d}-{name}.png"
    await watched.page.screenshot(path=path, full_page=True)
    watched.screenshots.append(path)


async def test_john_resets_his_password_from_a_link_clicked_in_webmail(
    portal: RunningPortal, webmail: ServeWebmail, watched: Watched, tmp_path: Path
) -> None:
    page = watched.page

    # He asks for a link.
    await page.goto(f"{portal.url}/reset-password/step1")
    await screenshot(watched, tmp_path, "step1")
    await page.fill("#username", "john")
    await submit(watched, portal, "#send-link")
    await expect(page.locator("#reset-sent")).to_be_visible()
    await screenshot(watched, tmp_path, "check-your-email")

    # The mail goes to his stored address.
    [mail] = await portal.wait_for_mails(1)
    assert mail["To"] == "john.doe@authelia.com"
    link = reset_link_from(mail)
    assert link.startswith(f"{portal.url}/reset-password/step2?token=")

    # He clicks it in his webmail, on another site: the Lax cookie survives the redirect.
    await page.goto(await webmail(link))
    await screenshot(watched, tmp_path, "webmail")
    await page.click("#go")
    await page.wait_for_url(f"{portal.url}/reset-password/step2")
    assert "token=" not in page.url
    await expect(page.locator("#reset-username")).to_have_text("john")
    [cookie] = [c for c in await page.context.cookies() if c["name"] == "portal_reset"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        True,
        "Lax",
        "/reset-password/step2",
    )
    await screenshot(watched, tmp_path, "choose-password")

    # He chooses a new password.
    await page.fill("#password", NEW_PASSWORD)
    await page.fill("#password_confirm", NEW_PASSWORD)
    await submit(watched, portal, "#set-password")
    await expect(page.locator("#reset-done")).to_be_visible()
    await screenshot(watched, tmp_path, "done")
    assert "portal_reset" not in {c["name"] for c in await page.context.cookies()}

    digest = stored_hash(portal.users_file, "john")
    assert hash_matches(NEW_PASSWORD, digest)
    assert not hash_matches(OLD_PASSWORD, digest)
    changed = (await portal.wait_for_mails(2))[1]
    assert changed["To"] == "john.doe@authelia.com"
    assert "Your password was changed" in str(changed["Subject"])
    assert unexpected(watched.problems, link) == []

    # The link is used up.
    response = await page.goto(link)
    assert response is not None and response.status == 400
    await expect(page.locator("#reset-invalid")).to_be_visible()
    # whatever the outcome, the token left the address bar first (issue 10.4)
    assert page.url == link.split("?", 1)[0]
    await screenshot(watched, tmp_path, "link-used")

    assert [p.name for p in watched.screenshots] == [
        "01-step1.png",
        "02-check-your-email.png",
        "03-webmail.png",
        "04-choose-password.png",
        "05-done.png",
        "06-link-used.png",
    ]
    for path in watched.screenshots:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), path
        assert len(data) > 1024, path
    assert unexpected(watched.problems, link) == []
