"""Every answer names its request (X-Request-Id): a new id per request, or the one a trusted
proxy sent (nginx's $request_id), never one a visitor made up."""

from __future__ import annotations

import re

import pytest

from tests.web.conftest import Portal, StartPortal

HEX32 = re.compile(r"[0-9a-f]{32}")


async def test_every_answer_names_a_new_request_id(portal: Portal) -> None:
    answers = [
        await portal.client.get("/"),
        await portal.client.get("/api/state"),
        await portal.client.get("/nowhere"),
        await portal.client.get("/logout", allow_redirects=False),
        await portal.client.get(
            "/api/authz/auth-request",
            headers={"X-Original-URL": "http://127.0.0.1/private", "X-Original-Method": "GET"},
        ),
        await portal.client.post("/api/firstfactor", data="{", headers={"Content-Type": "x/y"}),
    ]
    ids = [answer.headers.get("X-Request-Id", "") for answer in answers]
    assert [answer.status for answer in answers] == [200, 200, 404, 302, 403, 400]
    assert all(HEX32.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


async def test_a_visitors_own_request_id_is_not_believed(start_portal: StartPortal) -> None:
    # The test client (127.0.0.1) is no trusted proxy here.
    portal = await start_portal(server={"trusted_proxies": ["192.0.2.0/24"]})
    answer = await portal.client.get("/api/state", headers={"X-Request-Id": "chosen-by-me"})
    assert HEX32.fullmatch(answer.headers["X-Request-Id"])


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("two words", False),
        ("forged\\nline", False),
        ("", False),
    ],
)
async def test_a_trusted_proxys_request_id_is_kept_when_it_looks_like_one(
    start_portal: StartPortal, sent: str, kept: bool
) -> None:
    portal = await start_portal(server={"trusted_proxies": ["127.0.0.1/32"]})  # the default
    answer = await portal.client.get("/api/state", headers={"X-Request-Id": sent})
    got = answer.headers["X-Request-Id"]
    assert (got == sent) is kept
    if not kept:
        assert HEX32.fullmatch(got)
