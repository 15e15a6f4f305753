"""Bad input gets a 4xx with the portal's usual page or JSON error, never a 500 (issue 11).

One plain regression test per example of the issue, and the other members of each kind found;
tests/fuzz drives every route with generated requests on top of these.
"""

from __future__ import annotations

import jwt
import pytest

from tests.web.conftest import Portal, StartPortal, csrf_of
from tests.web.test_reset_questions import ANSWERS, questions_on


async def test_a_signed_token_with_an_impossible_time_is_an_invalid_link(portal: Portal) -> None:
    secret = portal.config.identity_validation.reset_password.jwt_secret.get_secret_value()
    claims = {"iss": "http://127.0.0.1", "aud": "portal:reset-password", "sub": "john",
              "iat": 10**400, "nbf": 0, "exp": 2**40, "jti": "A" * 22,
              "action": "ResetPassword", "pwd": "x"}  # fmt: skip
    token = jwt.encode(claims, secret, algorithm="HS256")
    for call in (
        portal.client.post("/api/reset-password/identity/finish", json={"token": token}),
        portal.client.post("/api/reset-password", json={"token": token, "password": "x" * 20}),
        portal.client.delete("/api/reset-password", json={"token": token}),
    ):
        response = await call
        assert response.status == 400
        assert await response.json() == {
            "status": "KO", "message": "This link is invalid or has expired."
        }
    page = await portal.client.get(f"/reset-password/step2?token={token}")
    assert page.status == 400 and "This link is invalid or has expired" in await page.text()


@pytest.mark.parametrize(
    "ticket", ["\u00b2\u00b2\u00b2.0123456789abcdef.x", "9" * 5000 + ".0123456789abcdef.x"]
)
async def test_a_questions_ticket_with_odd_digits_is_refused(
    start_portal: StartPortal, ticket: str
) -> None:
    # str.isdigit() takes "²", which int() refuses: the ticket's time is ASCII digits only.
    portal = await start_portal(**questions_on())
    page = await portal.client.get("/reset-password/step1")
    response = await portal.client.post(
        ANSWERS,
        data={"username": "john", "ticket": ticket, "answer_0": "a", "answer_1": "b",
              "csrf_token": csrf_of(await page.text())},  # fmt: skip
    )
    assert response.status == 400
