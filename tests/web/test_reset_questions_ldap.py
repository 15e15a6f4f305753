"""Security questions end to end on a real OpenLDAP (the test directory, tests/fixtures/ldap)."""

from __future__ import annotations

import pytest

from portal.keys import QUESTIONS
from tests.integration.conftest import make_slapd, slapd, slapd_ca, slapd_template  # noqa: F401
from tests.integration.slapd import USER_DNS, Slapd
from tests.web.conftest import (
    Portal,
    StartPortal,
    choose_password,
    no_mail_sent,
    open_link,
    request_reset,
    reset_link_from,
)
from tests.web.test_reset_ldap import authelia_ldap_block
from tests.web.test_reset_questions import (
    JOHN,
    SENT,
    answer,
    ask,
    john_has_questions,
    questions_on,
    questions_on_page,
    reset_with_answers,
)

NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"


@pytest.fixture
async def ldap_portal(start_portal: StartPortal, slapd: Slapd) -> Portal:  # noqa: F811
    return await start_portal(authentication_backend=authelia_ldap_block(slapd), **questions_on())


async def test_john_answers_his_questions_and_resets_his_directory_password(
    ldap_portal: Portal,
    slapd: Slapd,  # noqa: F811
) -> None:
    await john_has_questions(ldap_portal)
    stored = await ldap_portal.storage.get_security_answers("john")
    assert [row.question for row in stored] == list(JOHN)

    wrong = await reset_with_answers(ldap_portal, "john.doe@authelia.com", ["no", "no"])
    assert await no_mail_sent(ldap_portal)
    right = await reset_with_answers(ldap_portal, "john.doe@authelia.com", None)
    assert SENT in wrong and SENT in right

    mail = await ldap_portal.next_mail()
    assert mail["To"] == "john.doe@authelia.com"
    assert (await open_link(ldap_portal.client, reset_link_from(mail))).status == 200
    assert (await choose_password(ldap_portal.client, NEW_PASSWORD)).status == 200
    assert slapd.whoami(USER_DNS["john"], NEW_PASSWORD)


async def test_an_unknown_directory_user_gets_decoys_and_no_mail(ldap_portal: Portal) -> None:
    client = ldap_portal.client
    settings = ldap_portal.config.identity_validation.reset_password.security_questions
    decoys = list(client.app[QUESTIONS].decoy_questions("nobody@authelia.com"))
    assert len(decoys) == 2 and set(decoys) <= set(settings.questions)

    first = await ask(client, "nobody@authelia.com")
    second = await ask(client, "nobody@authelia.com")
    assert questions_on_page(first) == questions_on_page(second) == decoys

    page = await answer(client, second, ["", ""])
    assert page.status == 200
    assert SENT in await page.text()
    assert await no_mail_sent(ldap_portal)


async def test_with_the_directory_down_the_questions_page_is_503_for_everyone(
    ldap_portal: Portal,
    slapd: Slapd,  # noqa: F811
) -> None:
    slapd.stop()
    try:
        for who in ("john", "nobody@authelia.com"):
            response = await request_reset(ldap_portal.client, who)
            assert response.status == 503
            assert "temporarily unavailable" in await response.text()
    finally:
        slapd.start()
    assert (await request_reset(ldap_portal.client, "john")).status == 200
