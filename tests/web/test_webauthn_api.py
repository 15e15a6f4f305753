"""The passkey API's refusals over HTTP (issue 16): a real portal and SQLite storage. What a
client that is not signed in, not elevated, or sends bad JSON hears: a 4xx with a message, never
a 500. The ceremonies themselves run in Chromium (tests/e2e/test_passkeys_browser.py)."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from portal.keys import STORAGE
from portal.storage.base import WebAuthnCredential
from tests.web.conftest import (
    Portal,
    StartPortal,
    audit_events,
    csrf_of,
    open_link,
    request_reset,
    reset_link_from,
    sign_in,
    token_of,
)
from tests.web.test_elevation import HOME
from tests.web.test_reset_second_factor import NEW_PASSWORD, john_changed_password
from tests.web.test_totp_registration import elevate

REGISTER = "/api/secondfactor/webauthn/credential/register"
CREDENTIALS = "/api/secondfactor/webauthn/credentials"
CREDENTIAL = "/api/secondfactor/webauthn/credential/{}"
NOT_ACCEPTED = {"status": "KO", "message": "The passkey was not accepted."}


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    portal = await start_portal()
    assert (await sign_in(portal.client)).status == 302
    return portal


@pytest.fixture
async def elevated(portal: Portal) -> Portal:
    await elevate(portal)
    return portal


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_response(challenge: str) -> dict[str, Any]:
    """A RegistrationResponseJSON that signs `challenge` but whose attestation is junk."""
    client_data = {
        "type": "webauthn.create",
        "challenge": challenge,
        "origin": "https://auth.example.com",
    }
    return {
        "id": b64url(b"cred"),
        "rawId": b64url(b"cred"),
        "type": "public-key",
        "response": {
            "clientDataJSON": b64url(json.dumps(client_data).encode()),
            "attestationObject": b64url(b"\xa0"),
        },
        "clientExtensionResults": {},
    }


async def test_without_a_session_every_route_answers_401(start_portal: StartPortal) -> None:
    client = (await start_portal()).client
    listed = await client.get(CREDENTIALS, headers=HOME, allow_redirects=False)
    assert listed.status == 401
    for method, path in [
        ("PUT", REGISTER),
        ("POST", REGISTER),
        ("PUT", CREDENTIAL.format(1)),
        ("DELETE", CREDENTIAL.format(1)),
    ]:
        response = await client.request(method, path, json={"description": "x"}, headers=HOME)
        assert response.status == 401, (method, path)
        assert (await response.json())["status"] == "KO"


async def test_a_session_not_elevated_may_list_but_not_change(portal: Portal) -> None:
    client = portal.client
    listed = await client.get(CREDENTIALS, headers=HOME)
    assert listed.status == 200
    assert await listed.json() == {"status": "OK", "data": []}
    for method, path in [
        ("PUT", REGISTER),
        ("POST", REGISTER),
        ("PUT", CREDENTIAL.format(1)),
        ("DELETE", CREDENTIAL.format(1)),
    ]:
        response = await client.request(method, path, json={"description": "x"}, headers=HOME)
        assert response.status == 403, (method, path, await response.text())
    page = await client.get("/settings/passkeys", headers=HOME, allow_redirects=False)
    assert page.status == 303
    assert page.headers["Location"].startswith("/settings/elevate?next=")


async def test_registration_options_name_the_configured_relying_party(elevated: Portal) -> None:
    # Never from request headers: the cookie domain, whatever Host and Origin say.
    forged = {**HOME, "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    response = await elevated.client.put(REGISTER, json={"description": "Laptop"}, headers=forged)
    assert response.status == 200, await response.text()
    body = await response.json()
    options = body["data"]
    assert options["rp"]["id"] == elevated.config.session.cookies[0].domain
    assert options["rp"]["name"] == elevated.config.webauthn_display_name
    assert options["user"]["name"] == "john"
    assert "john" not in base64.urlsafe_b64decode(options["user"]["id"] + "==").decode("latin-1")
    assert options["attestation"] == "indirect"
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["timeout"] == 60000
    assert options["excludeCredentials"] == []
    assert len(base64.urlsafe_b64decode(options["challenge"] + "==")) == 32


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("not json", 400),
        ("[1, 2]", 400),
        ('{"description": ""}', 400),
        ('{"description": "' + "x" * 65 + '"}', 400),
        ("{}", 400),
    ],
)
async def test_bad_registration_starts_are_400(elevated: Portal, body: str, status: int) -> None:
    response = await elevated.client.put(
        REGISTER, data=body, headers={**HOME, "Content-Type": "application/json"}
    )
    assert response.status == status, await response.text()
    assert (await response.json())["status"] == "KO"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"rawId": "!!", "response": "x"},
        {"id": "a", "rawId": "a", "response": {"clientDataJSON": "e30"}},
        {"id": "a", "rawId": "a", "response": {"clientDataJSON": 5, "attestationObject": []}},
    ],
)
async def test_malformed_registration_answers_are_refused_not_500(
    elevated: Portal, body: dict[str, Any]
) -> None:
    await elevated.client.put(REGISTER, json={"description": "Laptop"}, headers=HOME)
    response = await elevated.client.post(REGISTER, json=body, headers=HOME)
    assert response.status == 401, await response.text()
    assert await response.json() == NOT_ACCEPTED


async def test_a_challenge_is_answered_once(
    elevated: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    client = elevated.client
    started = await client.put(REGISTER, json={"description": "Laptop"}, headers=HOME)
    challenge = (await started.json())["data"]["challenge"]
    # Junk attestation for the right challenge: refused, and the challenge is spent.
    first = await client.post(REGISTER, json=fake_response(challenge), headers=HOME)
    assert first.status == 401
    again = await client.post(REGISTER, json=fake_response(challenge), headers=HOME)
    assert await again.json() == NOT_ACCEPTED
    audit = audit_events(caplog, "webauthn_registration_failed")
    assert len(audit) == 1  # the second never reached the verification: no challenge left


async def test_unknown_credentials_are_404(elevated: Portal) -> None:
    for path in (CREDENTIAL.format(99), CREDENTIAL.format("abc"), CREDENTIAL.format(-1)):
        response = await elevated.client.delete(path, json={}, headers=HOME)
        assert response.status == 404, path
        renamed = await elevated.client.put(path, json={"description": "x"}, headers=HOME)
        assert renamed.status == 404, path


# Past SQLite's and PostgreSQL's 64-bit INTEGER: the storage cannot even be asked (a 500 before).
HUGE_IDS = (str(2**63), "1" + "0" * 40)


async def test_credential_numbers_too_big_for_the_storage_are_404_not_500(
    elevated: Portal,
) -> None:
    await give_john_a_passkey(elevated)
    client = elevated.client
    for number in HUGE_IDS:
        path = CREDENTIAL.format(number)
        removed = await client.delete(path, headers=HOME)
        assert removed.status == 404, (path, await removed.text())
        renamed = await client.put(path, json={"description": "x"}, headers=HOME)
        assert renamed.status == 404, (path, await renamed.text())
    page = await client.get("/settings/passkeys", headers=HOME)
    token = csrf_of(await page.text())
    for number in HUGE_IDS:
        for action in ("remove", "rename"):
            form = {"csrf_token": token, "action": action, "id": number, "description": "x"}
            answer = await client.post("/settings/passkeys", data=form, headers=HOME)
            assert answer.status == 404, (action, number)
            assert "You have no such passkey." in await answer.text()
    listed = await (await client.get(CREDENTIALS, headers=HOME)).json()
    assert [c["description"] for c in listed["data"]] == ["Laptop"]


@pytest.mark.parametrize("name", ["Lap\x00top", "Lap\x1b[31mtop", "Lap\x7ftop", "Lap\x9btop"])
async def test_a_passkey_name_with_control_characters_is_refused(
    elevated: Portal, name: str
) -> None:
    # PostgreSQL's text cannot hold NUL (a 500 there); the others would reach the pages and the
    # list as they are.
    await give_john_a_passkey(elevated)
    client = elevated.client
    started = await client.put(REGISTER, json={"description": name}, headers=HOME)
    assert started.status == 400, await started.text()
    assert "name is not valid" in (await started.json())["message"]
    renamed = await client.put(CREDENTIAL.format(1), json={"description": name}, headers=HOME)
    assert renamed.status == 400, await renamed.text()
    listed = await (await client.get(CREDENTIALS, headers=HOME)).json()
    assert [c["description"] for c in listed["data"]] == ["Laptop"]


SECOND_FACTOR = "/api/secondfactor/webauthn"


async def test_the_second_factor_routes_refuse_without_a_session(start_portal: StartPortal) -> None:
    client = (await start_portal()).client
    assert (await client.get(SECOND_FACTOR, headers=HOME)).status == 401
    posted = await client.post(SECOND_FACTOR, json={}, headers=HOME)
    assert posted.status == 401


async def test_a_second_factor_answer_without_its_challenge_is_refused(portal: Portal) -> None:
    client = portal.client
    options = await client.get(SECOND_FACTOR, headers=HOME)
    assert options.status == 200
    data = (await options.json())["data"]
    assert data["rpId"] == portal.config.session.cookies[0].domain
    assert data["allowCredentials"] == []  # john has no passkey
    for body in ({}, {"rawId": "AAAA", "response": {"clientDataJSON": "e30"}}):
        refused = await client.post(SECOND_FACTOR, json=body, headers=HOME)
        assert refused.status == 401
        assert await refused.json() == NOT_ACCEPTED
    bad = await client.post(
        SECOND_FACTOR, data="[]", headers={**HOME, "Content-Type": "application/json"}
    )
    assert bad.status == 400
    state = await (await client.get("/api/state", headers=HOME)).json()
    assert state["data"]["authentication_level"] == 1


async def test_the_reset_passkey_options_need_a_good_link(start_portal: StartPortal) -> None:
    client = (await start_portal()).client
    url = "/api/reset-password/webauthn"
    missing = await client.get(url, json={}, headers=HOME)
    assert missing.status == 400
    bad = await client.get(url, json={"token": "a.b.c"}, headers=HOME)
    assert bad.status == 400
    assert (await bad.json())["message"] == "This link is invalid or has expired."
    assert "portal_reset_webauthn" not in bad.cookies
    page = await client.get("/reset-password/step2/webauthn", headers=HOME)
    assert page.status == 400
    # The step-2 script reads the refusal: JSON, like the API's, not an error page.
    assert await page.json() == {"status": "KO", "message": "This link is invalid or has expired."}


async def give_john_a_passkey(portal: Portal) -> None:
    """Store a credential for john as a registration would (its key is junk: no assertion
    for it ever verifies)."""
    app = portal.client.app
    assert app is not None
    await app[STORAGE].add_webauthn_credential(
        WebAuthnCredential(
            id=0,
            username="john",
            description="Laptop",
            credential_id=b"cred",
            public_key=b"\xa0",
            sign_count=0,
            aaguid="00000000-0000-0000-0000-000000000000",
            transports=(),
            backup_eligible=False,
            backup_state=False,
            created_at=portal.clock.now(),
        )
    )


def fake_assertion(challenge: str) -> dict[str, Any]:
    """An AuthenticationResponseJSON for john's stored credential, signing `challenge`, whose
    signature is junk."""
    client_data = {
        "type": "webauthn.get",
        "challenge": challenge,
        "origin": "https://auth.example.com",
    }
    return {
        "id": b64url(b"cred"),
        "rawId": b64url(b"cred"),
        "type": "public-key",
        "response": {
            "clientDataJSON": b64url(json.dumps(client_data).encode()),
            "authenticatorData": b64url(b"\x00" * 37),
            "signature": b64url(b"junk"),
        },
        "clientExtensionResults": {},
    }


async def test_refused_passkeys_count_under_regulation_like_wrong_codes(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    await give_john_a_passkey(portal)
    retries = portal.config.regulation.max_retries
    for _ in range(retries):
        options = await portal.client.get(SECOND_FACTOR, headers=HOME)
        challenge = (await options.json())["data"]["challenge"]
        refused = await portal.client.post(
            SECOND_FACTOR, json=fake_assertion(challenge), headers=HOME
        )
        assert await refused.json() == NOT_ACCEPTED
    failed = audit_events(caplog, "second_factor_failed")
    assert [e["method"] for e in failed] == ["webauthn"] * retries
    assert all(e["reason"] == "assertion" for e in failed)
    # John is banned now: his right password opens nothing, as after wrong codes.
    await portal.client.get("/logout", headers=HOME)
    again = await sign_in(portal.client)
    assert again.status == 401


async def test_a_reset_for_a_user_with_a_passkey_needs_its_answer(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal()
    await give_john_a_passkey(portal)
    await request_reset(portal.client, "john")
    token = token_of(reset_link_from(await portal.next_mail()))
    reset = {"token": token, "password": NEW_PASSWORD}
    missing = await portal.client.post("/api/reset-password", json=reset, headers=HOME)
    assert missing.status == 400
    assert (await missing.json())["message"] == "Confirm with your passkey."
    # Options for the link's user: his credential allowed, the challenge sealed in a cookie.
    options = await portal.client.get("/api/reset-password/webauthn", json={"token": token})
    assert options.status == 200, await options.text()
    data = (await options.json())["data"]
    assert [c["id"] for c in data["allowCredentials"]] == [b64url(b"cred")]
    assert options.cookies["portal_reset_webauthn"]["httponly"]
    # A junk answer for that challenge: refused, the link kept, the password unchanged.
    junk = fake_response(data["challenge"])
    refused = await portal.client.post(
        "/api/reset-password", json={**reset, "webauthn": junk}, headers=HOME
    )
    assert refused.status == 400
    assert (await refused.json())["message"] == "The passkey was not accepted."
    assert not await john_changed_password(portal)
    finish = await portal.client.post("/api/reset-password/identity/finish", json={"token": token})
    assert finish.status == 200


async def test_a_deeply_nested_passkey_answer_in_the_reset_form_is_a_wrong_answer_not_500(
    start_portal: StartPortal,
) -> None:
    # The form's hidden `webauthn` field is parsed as JSON: nesting past the parser's recursion
    # limit raised RecursionError (a 500 for anyone holding any value in the reset cookie).
    portal = await start_portal()
    await give_john_a_passkey(portal)
    await request_reset(portal.client, "john")
    link = reset_link_from(await portal.next_mail())
    page = await open_link(portal.client, link)
    assert page.status == 200
    form = {
        "csrf_token": csrf_of(await page.text()),
        "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD,
        "webauthn": "[" * 20000,
    }
    refused = await portal.client.post("/reset-password/step2", data=form, headers=HOME)
    assert refused.status == 400
    assert "The passkey was not accepted." in await refused.text()
    assert not await john_changed_password(portal)
    finish = await portal.client.post(
        "/api/reset-password/identity/finish", json={"token": token_of(link)}
    )
    assert finish.status == 200


# A clientDataJSON nesting past the JSON parser's recursion limit (it fits the 64 KiB body).
DEEP_CLIENT_DATA = {"rawId": b64url(b"cred"), "response": {"clientDataJSON": b64url(b"[" * 30000)}}


async def test_a_client_data_nested_too_deep_is_refused_not_500_on_every_ceremony(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(webauthn={"enable_passkey_login": True})
    await give_john_a_passkey(portal)
    client = portal.client
    # Before any sign-in: the passkey sign-in is open to anyone.
    await client.get("/api/firstfactor/passkey", headers=HOME)
    login = await client.post("/api/firstfactor/passkey", json=DEEP_CLIENT_DATA, headers=HOME)
    assert login.status == 401, await login.text()
    assert await login.json() == NOT_ACCEPTED
    # The reset's passkey answer.
    await request_reset(client, "john")
    token = token_of(reset_link_from(await portal.next_mail()))
    await client.get("/api/reset-password/webauthn", json={"token": token})
    reset = await client.post(
        "/api/reset-password",
        json={"token": token, "password": NEW_PASSWORD, "webauthn": DEEP_CLIENT_DATA},
        headers=HOME,
    )
    assert reset.status == 400, await reset.text()
    assert (await reset.json())["message"] == "The passkey was not accepted."
    # The second factor, then a registration.
    assert (await sign_in(client)).status == 302
    await client.get(SECOND_FACTOR, headers=HOME)
    second = await client.post(SECOND_FACTOR, json=DEEP_CLIENT_DATA, headers=HOME)
    assert second.status == 401, await second.text()
    assert await second.json() == NOT_ACCEPTED
    await elevate(portal)
    await client.put(REGISTER, json={"description": "Phone"}, headers=HOME)
    registered = await client.post(REGISTER, json=DEEP_CLIENT_DATA, headers=HOME)
    assert registered.status == 401, await registered.text()
    assert await registered.json() == NOT_ACCEPTED
