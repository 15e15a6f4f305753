"""Failed sign-ins count per account however it is typed, for regulation and for the sign-in
CAPTCHA, so spreading the tries over addresses and spellings gains nothing."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse

from tests.web.conftest import Client, Portal, StartPortal
from tests.web.test_captcha import altcha_on, solved

FIRSTFACTOR = "/api/firstfactor"
# The same account, typed four ways (the stories' file backend searches emails too).
SPELLINGS = ("john", " john", "JOHN ", "john.doe@authelia.com")


async def sign_in_from(
    client: Client, address: str, username: str, password: str, **extra: Any
) -> ClientResponse:
    """Sign in through the API as a client at address would (the test client is a proxy)."""
    return await client.post(
        FIRSTFACTOR,
        json={"username": username, "password": password, **extra},
        headers={"X-Forwarded-For": address},
    )


async def test_three_failures_spread_over_spellings_and_addresses_ban_the_account(
    start_portal: StartPortal,
) -> None:
    portal: Portal = await start_portal()
    for n, spelling in enumerate(SPELLINGS[1:]):
        wrong = await sign_in_from(portal.client, f"198.51.100.{n}", spelling, "guess")
        assert wrong.status == 401
    # The right password, from yet another address and typed plainly: refused, banned.
    assert (await sign_in_from(portal.client, "198.51.100.9", "john", "password")).status == 401
    portal.clock.advance(5 * 60 + 1)  # ban_time
    assert (await sign_in_from(portal.client, "198.51.100.9", "john", "password")).status == 200


async def test_the_sign_in_captcha_follows_the_account_not_the_spelling(
    start_portal: StartPortal,
) -> None:
    portal: Portal = await start_portal(**altcha_on("login", login_after_failures=2))
    client = portal.client
    for n in range(2):
        wrong = await sign_in_from(client, f"198.51.100.{n}", "john", "guess")
        assert wrong.status == 401
    for n, spelling in enumerate(SPELLINGS):
        # A fresh address each time: only the account's count can ask for the CAPTCHA.
        refused = await sign_in_from(client, f"203.0.113.{n}", spelling, "password")
        assert refused.status == 400, spelling
    # Another account is not affected.
    harry = await sign_in_from(client, "203.0.113.50", "harry", "password")
    assert harry.status == 200
    ok = await sign_in_from(
        client, "203.0.113.60", "john.doe@authelia.com", "password", captcha=await solved(client)
    )
    assert ok.status == 200
