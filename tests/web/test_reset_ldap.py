"""The reset flow on a real OpenLDAP, configured with an Authelia-shaped LDAP block
(tests/fixtures/configuration-ldap.yml, as Authelia's LDAP suite writes it)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.conftest import FIXTURES
from tests.integration.conftest import make_slapd, slapd, slapd_ca, slapd_template  # noqa: F401
from tests.integration.slapd import USER_DNS, Slapd
from tests.web.conftest import (
    Portal,
    StartPortal,
    choose_password,
    open_link,
    request_reset,
    reset_link_from,
    submit,
    token_of,
)

NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"


def authelia_ldap_block(server: Slapd, **changes: Any) -> dict[str, Any]:
    """The fixture's Authelia-shaped LDAP block as written, pointed at the test server."""
    with (FIXTURES / "configuration-ldap.yml").open() as handle:
        block: dict[str, Any] = YAML(typ="safe", pure=True).load(handle)["authentication_backend"]
    ldap = block["ldap"]
    ldap["address"] = server.url("ldaps")
    ldap.update(changes)
    return {"file": None, "ldap": ldap}


@pytest.fixture
async def ldap_portal(start_portal: StartPortal, slapd: Slapd) -> Portal:  # noqa: F811
    return await start_portal(authentication_backend=authelia_ldap_block(slapd))


async def link_for(portal: Portal, identifier: str = "john") -> str:
    await request_reset(portal.client, identifier)
    return reset_link_from(await portal.next_mail())


async def test_john_resets_his_directory_password(ldap_portal: Portal, slapd: Slapd) -> None:  # noqa: F811
    mail_link = await link_for(ldap_portal, "john.doe@authelia.com")
    assert (await open_link(ldap_portal.client, mail_link)).status == 200
    done = await choose_password(ldap_portal.client, NEW_PASSWORD)
    assert done.status == 200
    assert "Your password has been changed" in await done.text()

    assert slapd.whoami(USER_DNS["john"], NEW_PASSWORD)
    assert not slapd.whoami(USER_DNS["john"], "password")
    changed = await ldap_portal.next_mail()
    assert changed["Subject"] == "[Portal] Your password was changed"


async def test_starttls_with_the_test_ca_works_too(
    start_portal: StartPortal,
    slapd: Slapd,  # noqa: F811
) -> None:
    block = authelia_ldap_block(
        slapd,
        address=slapd.url("ldap"),
        start_tls=True,
        tls={"skip_verify": False},
    )
    portal = await start_portal(
        authentication_backend=block, certificates_directory=str(slapd.ca_directory)
    )
    token = token_of(await link_for(portal))
    response = await portal.client.post(
        "/api/reset-password", json={"token": token, "password": NEW_PASSWORD}
    )
    assert response.status == 200
    assert slapd.whoami(USER_DNS["john"], NEW_PASSWORD)


async def test_the_directory_policy_speaks_on_the_form_and_the_link_stays_usable(
    ldap_portal: Portal,
    slapd: Slapd,  # noqa: F811
) -> None:
    slapd.set_policy(pwdMinLength=40)
    await open_link(ldap_portal.client, await link_for(ldap_portal))
    refused = await choose_password(ldap_portal.client, NEW_PASSWORD)
    assert refused.status == 400
    assert "The directory requires a longer password." in await refused.text()
    assert slapd.whoami(USER_DNS["john"], "password")

    long_enough = NEW_PASSWORD + "-and-then-some-more-words"
    assert (await choose_password(ldap_portal.client, long_enough)).status == 200
    assert slapd.whoami(USER_DNS["john"], long_enough)


async def test_the_current_password_is_refused_by_a_bind(ldap_portal: Portal) -> None:
    token = token_of(await link_for(ldap_portal))
    response = await ldap_portal.client.post(
        "/api/reset-password", json={"token": token, "password": "password"}
    )
    assert response.status == 400
    assert (await response.json())["reasons"] == [
        "Choose a password different from your current one."
    ]


async def test_a_password_changed_in_the_directory_kills_the_link(
    ldap_portal: Portal,
    slapd: Slapd,  # noqa: F811
) -> None:
    link = await link_for(ldap_portal)
    slapd.modify(
        f"dn: {USER_DNS['john']}\nchangetype: modify\nreplace: userPassword\n"
        "userPassword: changed-by-the-helpdesk\n"
    )
    response = await open_link(ldap_portal.client, link)
    assert response.status == 400
    assert "This link is invalid or has expired" in await response.text()


async def test_with_the_directory_down_step1_looks_the_same_and_step2_waits(
    ldap_portal: Portal,
    slapd: Slapd,  # noqa: F811
) -> None:
    link = await link_for(ldap_portal)
    up_page = await (await request_reset(ldap_portal.client, "harry")).text()
    await ldap_portal.drain_outbox()
    slapd.stop()

    down = await request_reset(ldap_portal.client, "bob")
    assert down.status == 200
    assert "If an account matches" in await down.text()
    health = await ldap_portal.client.get("/api/health")
    assert health.status == 503
    assert (await health.json())["backends"]["users"] == "failing"

    opened = await open_link(ldap_portal.client, link)
    assert opened.status == 503
    assert "temporarily unavailable" in await opened.text()
    assert up_page.count("If an account matches") == 1

    slapd.start()
    assert (await ldap_portal.client.get("/api/health")).status == 200
    assert (await open_link(ldap_portal.client, link)).status == 200
    assert (await choose_password(ldap_portal.client, NEW_PASSWORD)).status == 200
    assert slapd.whoami(USER_DNS["john"], NEW_PASSWORD)

    # bob's request, queued while the directory was down, is delivered after it came back
    ldap_portal.clock.advance(3600)
    from portal.keys import OUTBOX

    ldap_portal.client.app[OUTBOX].wake()
    for _ in range(300):
        if any(d.rcpt_tos == ["bob.dylan@authelia.com"] for d in ldap_portal.smtp.deliveries):
            break
        await asyncio.sleep(0.02)
    assert any(d.rcpt_tos == ["bob.dylan@authelia.com"] for d in ldap_portal.smtp.deliveries)


async def test_an_injected_filter_finds_nobody(ldap_portal: Portal) -> None:
    for sneaky in ("*", "*)(uid=*", "john*", "*)(|(objectClass=*"):
        response = await submit(
            ldap_portal.client, "/reset-password/step1", "/reset-password/step1", username=sneaky
        )
        assert response.status == 303
    await ldap_portal.drain_outbox()
    assert ldap_portal.smtp.deliveries == []
