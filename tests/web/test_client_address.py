"""The client's address as every route sees it: the visitor's, never the trusted proxy's.

Issue 10.2: `X-Forwarded-For: 203.0.113.9:4711` from a trusted proxy was unreadable, and the
proxy's own address stood in for the visitor's, so a `networks` bypass for the proxy's network let
the visitor through, and the visitor shared the proxy's buckets.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import Portal, StartPortal

RULES: dict[str, Any] = {
    "default_policy": "deny",
    "rules": [
        {"domain": "local.example.com", "networks": ["127.0.0.0/8"], "policy": "bypass"},
        {"domain": "*.example.com", "policy": "one_factor"},
    ],
}
UNREADABLE = ["not-an-address", "203.0.113.9:99999", "203.0.113.9, garbage", "unknown", ""]


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await start_portal(
        server={"trusted_proxies": ["127.0.0.0/8"]},
        access_control=RULES,
        session={
            "cookies": [{"domain": "example.com", "authelia_url": "https://auth.example.com"}]
        },
    )


async def auth_request(portal: Portal, forwarded: str | None) -> int:
    headers = {"X-Original-URL": "https://local.example.com/", "X-Original-Method": "GET"}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    response = await portal.client.get(
        "/api/authz/auth-request", headers=headers, allow_redirects=False
    )
    return response.status


async def test_the_proxy_itself_gets_its_network_rule(portal: Portal) -> None:
    assert await auth_request(portal, None) == 200
    assert await auth_request(portal, "127.0.0.5") == 200


@pytest.mark.parametrize(
    "forwarded", ["203.0.113.9", "203.0.113.9:4711", "[2001:db8::1]:4711", "::ffff:203.0.113.9"]
)
async def test_a_visitor_behind_the_proxy_never_gets_the_proxys_network_rule(
    portal: Portal, forwarded: str
) -> None:
    assert await auth_request(portal, forwarded) == 401


@pytest.mark.parametrize("forwarded", UNREADABLE)
async def test_an_unreadable_forwarded_address_is_a_malformed_request(
    portal: Portal, forwarded: str
) -> None:
    assert await auth_request(portal, forwarded) == 401
    api = await portal.client.post(
        "/api/reset-password/identity/start",
        json={"username": "john"},
        headers={"X-Forwarded-For": forwarded},
    )
    assert api.status == 400
    assert (await api.json())["status"] == "KO"
    signin = await portal.client.post(
        "/api/firstfactor",
        json={"username": "john", "password": "password"},
        headers={"X-Forwarded-For": forwarded},
    )
    assert signin.status == 400
    assert "portal_session" not in signin.cookies
    assert await portal.storage.outbox_pending() == 0


async def test_an_address_with_a_port_shares_the_bucket_of_the_same_address(
    start_portal: StartPortal,
) -> None:
    bucket = {"buckets": [{"period": "10 minutes", "requests": 1}]}
    portal = await start_portal(
        server={"endpoints": {"rate_limits": {"reset_password_start": bucket}}}
    )
    api = "/api/reset-password/identity/start"
    first = await portal.client.post(
        api, json={"username": "x"}, headers={"X-Forwarded-For": "203.0.113.9:4711"}
    )
    again = await portal.client.post(
        api, json={"username": "x"}, headers={"X-Forwarded-For": "203.0.113.9:5000"}
    )
    other = await portal.client.post(
        api, json={"username": "x"}, headers={"X-Forwarded-For": "[2001:db8::1]:4711"}
    )
    assert (first.status, again.status, other.status) == (200, 429, 200)
