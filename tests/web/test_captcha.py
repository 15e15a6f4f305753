"""The CAPTCHA on the reset and sign-in forms and their JSON twins, with ALTCHA solved by the
Python solver and the vendors played by a real stand-in siteverify server."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import altcha
import pytest
from aiohttp import web

from tests.integration.smtp_server import closed_port
from tests.web.conftest import (
    Client,
    StartPortal,
    as_logged,
    choose_password,
    csrf_of,
    no_mail_sent,
    open_link,
    request_reset,
    reset_link_from,
    sign_in,
    submit,
)
from tests.web.test_reset_flow import NEW_PASSWORD, SENT, stored_hash

FAILED = "The anti-robot check failed. Please complete it and try again."
COMPLETE_IT = "Please complete the anti-robot check shown below, then sign in again."
UNAVAILABLE = "The anti-robot check cannot be completed right now."
WRONG = "Incorrect username or password."
# Cheap enough for the Python solver; the browser's default difficulty has its own story.
EASY = {"cost": 1, "max_number": 50}
STEP1 = "/reset-password/step1"
START_API = "/api/reset-password/identity/start"


def altcha_on(*endpoints: str, **extra: Any) -> dict[str, Any]:
    """Configuration overrides that put ALTCHA on the given forms."""
    return {"captcha": {"enabled_on": list(endpoints), "altcha": EASY, **extra}}


async def solved(client: Client) -> str:
    """Fetch a challenge from the portal and solve it as the widget would."""
    response = await client.get("/api/captcha/challenge")
    assert response.status == 200
    challenge = altcha.Challenge.from_dict(await response.json())
    solution = altcha.solve_challenge(challenge, timeout=30)
    assert solution is not None
    return altcha.Payload(challenge, solution).to_base64()


def without_csrf(html: str) -> str:
    """Drop the per-browser CSRF token so two pages can be compared."""
    return re.sub(r'name="csrf_token" value="[^"]+"', "", html)


# --- ALTCHA on step 1 ----------------------------------------------------------------------------


async def test_the_widget_is_drawn_only_where_enabled(start_portal: StartPortal) -> None:
    plain = await start_portal()
    assert "altcha-widget" not in await (await plain.client.get(STEP1)).text()
    assert (await plain.client.get("/api/captcha/challenge")).status == 404

    portal = await start_portal(**altcha_on("reset_password_start"))
    page = await (await portal.client.get(STEP1)).text()
    assert '<altcha-widget id="altcha" challenge="/api/captcha/challenge" name="captcha"' in page
    assert 'src="/static/vendor/altcha/altcha.js"' in page
    assert 'src="/static/captcha.js"' in page
    assert 'aria-labelledby="captcha-label"' in page
    assert "This form needs JavaScript for its anti-robot" in page
    assert "altcha-widget" not in await (await portal.client.get("/")).text()
    for asset in (
        "vendor/altcha/altcha.js",
        "vendor/altcha/altcha.css",
        "vendor/altcha/workers/pbkdf2.js",
        "captcha.js",
    ):
        assert (await portal.client.get(f"/static/{asset}")).status == 200, asset


@pytest.mark.parametrize("answer", [None, "", "bm90IGEgcGF5bG9hZA==", "x" * 9000])
async def test_without_a_good_solution_nothing_is_mailed_whoever_is_asked_for(
    start_portal: StartPortal, answer: str | None
) -> None:
    portal = await start_portal(**altcha_on("reset_password_start"))
    fields = {} if answer is None else {"captcha": answer}

    known = await request_reset(portal.client, "john", **fields)
    unknown = await request_reset(portal.client, "nobody", **fields)

    assert (known.status, unknown.status) == (400, 400)
    known_page, unknown_page = await known.text(), await unknown.text()
    assert FAILED in known_page
    assert "<altcha-widget" in known_page
    assert without_csrf(known_page).replace("john", "nobody") == without_csrf(unknown_page)
    assert await no_mail_sent(portal)


async def test_a_solved_challenge_sends_the_link(start_portal: StartPortal) -> None:
    portal = await start_portal(**altcha_on("reset_password_start"))

    response = await request_reset(portal.client, "john", captcha=await solved(portal.client))

    assert response.status == 200
    assert SENT in await response.text()
    assert (await portal.next_mail())["To"] == "john.doe@authelia.com"


async def test_a_solution_works_once(start_portal: StartPortal) -> None:
    portal = await start_portal(**altcha_on("reset_password_start"))
    solution = await solved(portal.client)

    assert (await request_reset(portal.client, "john", captcha=solution)).status == 200
    replayed = await request_reset(portal.client, "bob", captcha=solution)

    assert replayed.status == 400
    assert FAILED in await replayed.text()
    await portal.drain_outbox()
    assert [d.message["To"] for d in portal.smtp.deliveries] == ["john.doe@authelia.com"]


async def test_an_expired_solution_is_refused(start_portal: StartPortal) -> None:
    portal = await start_portal(
        **altcha_on("reset_password_start", altcha={**EASY, "expiration": "1 minute"})
    )
    solution = await solved(portal.client)
    portal.clock.advance(61)

    refused = await request_reset(portal.client, "john", captcha=solution)

    assert refused.status == 400
    assert await no_mail_sent(portal)


async def test_failed_captchas_count_toward_the_address_limit(start_portal: StartPortal) -> None:
    bucket = {"buckets": [{"period": "10 minutes", "requests": 3}]}
    portal = await start_portal(
        server={"endpoints": {"rate_limits": {"reset_password_start": bucket}}},
        **altcha_on("reset_password_start"),
    )
    for _ in range(3):
        assert (await request_reset(portal.client, "john", captcha="nope")).status == 400
    limited = await request_reset(portal.client, "john", captcha="nope")
    assert limited.status == 429
    # Even a good solution now waits like any other request from this address.
    solution = await solved(portal.client)
    assert (await request_reset(portal.client, "john", captcha=solution)).status == 429
    assert await no_mail_sent(portal)


async def test_the_json_api_needs_the_solution_too(start_portal: StartPortal) -> None:
    portal = await start_portal(**altcha_on("reset_password_start"))
    client = portal.client

    for body in ({"username": "john"}, {"username": "john", "captcha": "bad"}):
        refused = await client.post(START_API, json=body)
        assert refused.status == 400
        assert await refused.json() == {"status": "KO", "message": FAILED}
    assert await no_mail_sent(portal)

    accepted = await client.post(
        START_API, json={"username": "john", "captcha": await solved(client)}
    )
    assert accepted.status == 200
    assert (await portal.next_mail())["To"] == "john.doe@authelia.com"


async def test_the_challenge_endpoint_is_never_cached_and_is_rate_limited(
    start_portal: StartPortal,
) -> None:
    bucket = {"buckets": [{"period": "1 minute", "requests": 2}]}
    portal = await start_portal(
        server={"endpoints": {"rate_limits": {"captcha_challenge": bucket}}},
        **altcha_on("reset_password_start"),
    )
    first = await portal.client.get("/api/captcha/challenge")
    second = await portal.client.get("/api/captcha/challenge")

    assert first.headers["Cache-Control"] == "no-store"
    one, two = await first.json(), await second.json()
    assert one["parameters"]["algorithm"] == "PBKDF2/SHA-256"
    assert one["signature"] != two["signature"]
    limited = await portal.client.get("/api/captcha/challenge")
    assert limited.status == 429
    assert (await limited.json())["status"] == "KO"
    portal.clock.advance(61)
    assert (await portal.client.get("/api/captcha/challenge")).status == 200


async def test_with_altcha_the_policy_stays_self(start_portal: StartPortal) -> None:
    portal = await start_portal(**altcha_on("reset_password_start", "login"))

    for path in (STEP1, "/"):
        policy = (await portal.client.get(path)).headers["Content-Security-Policy"]
        assert policy.startswith("default-src 'self'; ")
        # Only form-action names other places (the sign-in redirects); nothing loads from them.
        directives = [part.split()[0] for part in policy.split("; ")]
        assert directives == [
            "default-src",
            "frame-ancestors",
            "base-uri",
            "form-action",
            "object-src",
        ], (path, policy)


# --- ALTCHA on step 2 ----------------------------------------------------------------------------


async def test_step2_and_its_json_twin_need_the_solution(start_portal: StartPortal) -> None:
    portal = await start_portal(**altcha_on("reset_password_finish"))
    client = portal.client
    assert (await request_reset(client, "john")).status == 200  # step 1 needs none here
    link = reset_link_from(await portal.next_mail())
    before = await stored_hash(portal.users_file, "john")
    await open_link(client, link)

    refused = await choose_password(client, NEW_PASSWORD)
    assert refused.status == 400
    page = await refused.text()
    assert FAILED in page and "<altcha-widget" in page and 'id="reset-username">john<' in page
    token = link.split("token=")[1]
    api = await client.post("/api/reset-password", json={"token": token, "password": NEW_PASSWORD})
    assert api.status == 400
    assert await api.json() == {"status": "KO", "message": FAILED}
    assert await stored_hash(portal.users_file, "john") == before

    done = await submit(
        client,
        "/reset-password/step2",
        "/reset-password/step2",
        password=NEW_PASSWORD,
        password_confirm=NEW_PASSWORD,
        captcha=await solved(client),
    )
    assert (done.status, done.headers["Location"]) == (303, "/reset-password/done")
    assert await stored_hash(portal.users_file, "john") != before


async def test_a_used_link_without_the_solution_shows_the_invalid_link_page(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(**altcha_on("reset_password_finish"))
    client = portal.client
    await request_reset(client, "john")
    link = reset_link_from(await portal.next_mail())
    await open_link(client, link)
    done = await submit(
        client,
        "/reset-password/step2",
        "/reset-password/step2",
        password=NEW_PASSWORD,
        password_confirm=NEW_PASSWORD,
        captcha=await solved(client),
    )
    assert (done.status, done.headers["Location"]) == (303, "/reset-password/done")
    # The old tab posts again with the (now used) link's cookie and no CAPTCHA.
    client.session.cookie_jar.update_cookies(
        {"portal_reset": link.split("token=")[1]}, client.make_url("/")
    )
    again = await submit(
        client,
        "/reset-password/step1",
        "/reset-password/step2",
        password=NEW_PASSWORD,
        password_confirm=NEW_PASSWORD,
    )
    assert again.status == 400
    page = await again.text()
    assert 'id="reset-invalid"' in page and 'id="ask-again"' in page
    assert again.cookies["portal_reset"].value == ""  # the dead link's cookie goes


# --- ALTCHA on sign-in ---------------------------------------------------------------------------


async def test_sign_in_needs_the_solution_when_enabled(start_portal: StartPortal) -> None:
    portal = await start_portal(**altcha_on("login"))
    client = portal.client
    assert "<altcha-widget" in await (await client.get("/")).text()

    refused = await sign_in(client, "john", "password")
    assert refused.status == 400
    assert COMPLETE_IT in await refused.text()
    assert "portal_session" not in refused.cookies
    api = await client.post("/api/firstfactor", json={"username": "john", "password": "password"})
    assert api.status == 400
    assert await api.json() == {"status": "KO", "message": FAILED}

    assert (await sign_in(client, "john", "password", captcha=await solved(client))).status == 302
    api = await client.post(
        "/api/firstfactor",
        json={"username": "john", "password": "password", "captcha": await solved(client)},
    )
    assert api.status == 200


async def test_sign_in_asks_only_after_the_configured_failures(start_portal: StartPortal) -> None:
    portal = await start_portal(**altcha_on("login", login_after_failures=2))
    client = portal.client

    assert "<altcha-widget" not in await (await client.get("/")).text()
    first = await sign_in(client, "john", "wrong")
    assert first.status == 401 and "<altcha-widget" not in await first.text()
    second = await sign_in(client, "nobody", "wrong")
    assert second.status == 401
    # Two failures from this address: from now on the form carries the widget, for anyone.
    assert WRONG in await second.text() and "<altcha-widget" in await second.text()
    assert "<altcha-widget" in await (await client.get("/")).text()

    right_but_no_captcha = await sign_in(client, "john", "password")
    assert right_but_no_captcha.status == 400
    assert COMPLETE_IT in await right_but_no_captcha.text()
    wrong_solution = await sign_in(client, "john", "password", captcha="not-a-solution")
    assert wrong_solution.status == 400 and FAILED in await wrong_solution.text()
    # Wrong password and unknown user still get one answer once the captcha is solved.
    wrong = await sign_in(client, "john", "nope", captcha=await solved(client))
    unknown = await sign_in(client, "nobody", "nope", captcha=await solved(client))
    assert (wrong.status, unknown.status) == (401, 401)
    assert WRONG in await wrong.text() and WRONG in await unknown.text()


async def test_failed_sign_in_captchas_ban_the_address_not_the_account(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(**altcha_on("login"))
    attacker = {"X-Forwarded-For": "198.51.100.66"}

    for _ in range(3):
        page = await (await portal.client.get("/", headers=attacker)).text()
        response = await portal.client.post(
            "/",
            headers=attacker,
            allow_redirects=False,
            data={"username": "john", "password": "x", "csrf_token": csrf_of(page)},
        )
        assert response.status == 400
    banned = await portal.client.post(
        "/api/firstfactor",
        headers=attacker,
        json={"username": "john", "password": "password", "captcha": await solved(portal.client)},
    )
    assert banned.status == 401
    # John, from his own address, is not locked out by someone else's failed checks.
    ok = await sign_in(portal.client, "john", "password", captcha=await solved(portal.client))
    assert ok.status == 302


# --- vendors, played by a real stand-in server ---------------------------------------------------


@dataclass
class Siteverify:
    """A stand-in for a vendor's siteverify endpoint that records what it is sent."""

    url: str = ""
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    mode: str = "answer"  # or one of TROUBLE's answers, or "hang"
    release: asyncio.Event = field(default_factory=asyncio.Event)


# What the stand-in answers in each troubled mode (besides "hang", which never answers).
TROUBLE: dict[str, Callable[[], web.Response]] = {
    "garbage": lambda: web.Response(text="<html>gateway</html>", content_type="text/html"),
    "error": lambda: web.json_response({"success": True}, status=502),
    "string-flag": lambda: web.json_response({"success": "true"}),
    "empty-object": lambda: web.json_response({}),
    "list": lambda: web.json_response([]),
}


@pytest.fixture
async def siteverify() -> AsyncIterator[Siteverify]:
    stand_in = Siteverify()

    async def verify(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        stand_in.seen.append((request.method, request.content_type, form))
        if stand_in.mode == "hang":
            await stand_in.release.wait()
        if stand_in.mode in TROUBLE:
            return TROUBLE[stand_in.mode]()
        good = form.get("response") == "good-token"
        codes = [] if good else ["invalid-input-response"]
        return web.json_response({"success": good, "error-codes": codes})

    app = web.Application()
    app.router.add_post("/siteverify", verify)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Port 0: the system picks a free port as it binds, so nothing can take it in between.
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    stand_in.url = f"http://{host}:{port}/siteverify"
    yield stand_in
    stand_in.release.set()
    await runner.cleanup()


VENDOR_FIELDS = {
    "turnstile": "cf-turnstile-response",
    "hcaptcha": "h-captcha-response",
    "recaptcha": "g-recaptcha-response",
}


def vendor_on(provider: str, url: str, *endpoints: str, timeout: str = "5s") -> dict[str, Any]:
    """Configuration overrides for a vendor whose siteverify is at url."""
    return {
        "captcha": {
            "provider": provider,
            "enabled_on": list(endpoints),
            "site_key": "site-key-1",
            "secret_key": "secret-key-1",
            "verify_url": url,
            "timeout": timeout,
        }
    }


@pytest.mark.parametrize("provider", ["turnstile", "hcaptcha", "recaptcha"])
async def test_a_vendor_is_asked_exactly_as_it_documents(
    start_portal: StartPortal,
    siteverify: Siteverify,
    provider: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    portal = await start_portal(**vendor_on(provider, siteverify.url, "reset_password_start"))
    token_field = VENDOR_FIELDS[provider]
    client_ip = {"X-Forwarded-For": "203.0.113.9"}  # the test client is a trusted proxy

    page = await (await portal.client.get(STEP1, headers=client_ip)).text()
    assert 'data-sitekey="site-key-1"' in page
    data = {"username": "john", "csrf_token": csrf_of(page), token_field: "good-token"}
    accepted = await portal.client.post(STEP1, data=data, headers=client_ip)
    assert accepted.status == 200
    assert SENT in await accepted.text()
    assert (await portal.next_mail())["To"] == "john.doe@authelia.com"

    expected = {"secret": "secret-key-1", "response": "good-token", "remoteip": "203.0.113.9"}
    if provider == "hcaptcha":
        expected["sitekey"] = "site-key-1"
    assert siteverify.seen == [("POST", "application/x-www-form-urlencoded", expected)]

    refused = await request_reset(portal.client, "bob", **{token_field: "bad-token"})
    assert refused.status == 400
    assert FAILED in await refused.text()
    assert len(portal.smtp.deliveries) == 1
    logged = as_logged(caplog.records)
    assert f"captcha refused by {provider}: ['invalid-input-response']" in logged
    assert "secret-key-1" not in logged and "bad-token" not in logged


async def test_the_vendor_widget_opens_the_policy_to_that_vendor_only_on_its_pages(
    start_portal: StartPortal, siteverify: Siteverify
) -> None:
    portal = await start_portal(**vendor_on("turnstile", siteverify.url, "reset_password_start"))

    step1 = await portal.client.get(STEP1)
    policy = step1.headers["Content-Security-Policy"]
    assert "script-src 'self' https://challenges.cloudflare.com" in policy
    assert "frame-src 'self' https://challenges.cloudflare.com" in policy
    assert "hcaptcha" not in policy and "google" not in policy
    page = await step1.text()
    assert 'src="https://challenges.cloudflare.com/turnstile/v0/api.js"' in page
    assert 'class="cf-turnstile"' in page
    for path in ("/", "/api/health", "/reset-password/step2"):
        other = (await portal.client.get(path)).headers["Content-Security-Policy"]
        assert "cloudflare" not in other, path
    assert (await portal.client.get("/api/captcha/challenge")).status == 404


@pytest.mark.parametrize(
    ("trouble", "reason"),
    [
        ("closed", "unusable: ClientConnectorError"),
        ("hang", "unusable: TimeoutError"),
        ("garbage", "unusable: JSONDecodeError"),
        ("error", "unusable: ValueError"),  # a 502, even with a success flag
        ("string-flag", "answered without a success flag"),  # "true" is not true
        ("empty-object", "answered without a success flag"),
        ("list", "answered without a success flag"),
    ],
)
async def test_an_unusable_vendor_refuses_the_form_with_a_clear_message(
    start_portal: StartPortal,
    siteverify: Siteverify,
    trouble: str,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{closed_port()}/siteverify" if trouble == "closed" else siteverify.url
    siteverify.mode = trouble
    portal = await start_portal(
        **vendor_on("hcaptcha", url, "reset_password_start", "login", timeout="1s")
    )

    form = await request_reset(portal.client, "john", **{"h-captcha-response": "good-token"})
    assert form.status == 400
    assert UNAVAILABLE in await form.text()
    signin = await sign_in(portal.client, "john", "password", **{"h-captcha-response": "t"})
    assert signin.status == 400
    assert UNAVAILABLE in await signin.text()
    api = await portal.client.post(
        "/api/firstfactor", json={"username": "john", "password": "password", "captcha": "x"}
    )
    assert api.status == 503
    assert UNAVAILABLE in (await api.json())["message"]
    assert await no_mail_sent(portal)
    # One warning per check (step 1, the sign-in form, the JSON sign-in), each naming the reason.
    warned = [r.getMessage() for r in caplog.records if r.name == "portal.captcha"]
    assert warned == [f"captcha vendor hcaptcha {reason}"] * 3
    logged = as_logged(caplog.records)
    assert "secret-key-1" not in logged and "good-token" not in logged
