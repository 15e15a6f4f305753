"""Session levels over HTTP: what /api/state and auth_request say at zero, one and two factors,
and the sign-in's second step (/2fa/one-time-password and POST /api/secondfactor/totp)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientResponse

from tests.web.conftest import Client, Portal, StartPortal, sign_in

SECURE = "http://127.0.0.1/secure/board?x=1"
PRIVATE = "http://127.0.0.1/private"
RULES: dict[str, Any] = {
    "default_policy": "deny",
    "rules": [
        {"domain": "127.0.0.1", "resources": ["^/secure"], "policy": "two_factor"},
        {"domain": "127.0.0.1", "policy": "one_factor"},
    ],
}


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await start_portal(access_control=RULES)


async def ask(client: Client, url: str) -> ClientResponse:
    """Ask what nginx asks: may this request through?"""
    return await client.get(
        "/api/authz/auth-request",
        headers={"X-Original-URL": url, "X-Original-Method": "GET"},
        allow_redirects=False,
    )


async def state(client: Client) -> Any:
    response = await client.get("/api/state")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    return await response.json()


async def test_state_of_an_anonymous_visitor_is_level_zero_with_no_name(portal: Portal) -> None:
    assert await state(portal.client) == {
        "status": "OK",
        "data": {"username": "", "authentication_level": 0, "factor_knowledge": False},
    }


async def test_after_the_password_the_state_is_level_one_and_two_factor_urls_stay_shut(
    portal: Portal,
) -> None:
    assert (await sign_in(portal.client, "john", rd=PRIVATE)).status == 302

    assert await state(portal.client) == {
        "status": "OK",
        "data": {"username": "john", "authentication_level": 1, "factor_knowledge": True},
    }
    private, secure = await ask(portal.client, PRIVATE), await ask(portal.client, SECURE)
    assert private.status == 200
    assert secure.status == 401
    assert secure.headers["Location"] == "http://127.0.0.1/?rd=" + quote(SECURE, safe="")
    assert "Remote-User" not in secure.headers


async def test_the_state_names_the_default_redirection_url_when_there_is_one(
    start_portal: StartPortal,
) -> None:
    cookie = {
        "domain": "127.0.0.1",
        "authelia_url": "http://127.0.0.1",
        "default_redirection_url": "http://127.0.0.1/home",
    }
    portal = await start_portal(access_control=RULES, session={"cookies": [cookie]})

    data = (await state(portal.client))["data"]

    assert data["default_redirection_url"] == "http://127.0.0.1/home"
