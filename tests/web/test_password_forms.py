"""The same password in another Unicode form, told over HTTP on the users file.

John types `Corr3ct-Horse-Battery-ÄÖÜ` composed (NFC) on one device and decomposed (NFD: "A"
followed by U+0308, and so on) on another; the portal normalizes both (NFKC, NIST SP 800-63B),
and a hash made from a password exactly as typed, before the portal normalized, still works.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from portal.config import PasswordConfig
from portal.users.hashing import hash_password
from tests.web.conftest import (
    CHEAP_ARGON2,
    Portal,
    StartPortal,
    choose_password,
    open_link,
    sign_in,
)
from tests.web.test_reset_flow import link_for, stored_hash
from tests.web.test_reset_questions import JOHN, questions_on, set_up

NFC = "Corr3ct-Horse-Battery-\u00c4\u00d6\u00dc"
NFD = unicodedata.normalize("NFD", NFC)
# NFKC makes it "fish-and-chips-Tuesday-42": a ligature and full-width letters.
LIGATURE = "\ufb01sh-and-chips-\uff34\uff55\uff45\uff53\uff44\uff41\uff59-42"
NOT_NEW = "Choose a password different from your current one."


async def reset_to(portal: Portal, password: str, confirm: str | None = None) -> int:
    """Go through the reset with a mailed link and choose this password; return the status."""
    await open_link(portal.client, await link_for(portal))
    return (await choose_password(portal.client, password, confirm)).status


async def give_john_a_hash_of(users_file: Path, password: str) -> None:
    """Put a hash of exactly this string in the file, as tools that do not normalize made them."""
    legacy = hash_password(password, PasswordConfig(argon2=CHEAP_ARGON2))
    text = users_file.read_text(encoding="utf-8")
    users_file.write_text(text.replace(await stored_hash(users_file, "john"), legacy, 1))


def test_the_two_forms_are_different_strings() -> None:
    assert NFD != NFC and "A\u0308" in NFD


async def test_a_password_reset_composed_signs_in_decomposed(portal: Portal) -> None:
    assert await reset_to(portal, NFC) == 200
    assert (await sign_in(portal.client, "john", NFD)).status == 302


async def test_a_password_reset_decomposed_signs_in_composed(portal: Portal) -> None:
    assert await reset_to(portal, NFD) == 200
    assert (await sign_in(portal.client, "john", NFC + "!")).status == 401
    assert (await sign_in(portal.client, "john", NFC)).status == 302


async def test_the_confirmation_may_be_typed_in_the_other_form(portal: Portal) -> None:
    assert await reset_to(portal, NFC, confirm=NFD) == 200
    assert (await sign_in(portal.client, "john", NFC)).status == 302


async def test_the_current_password_in_the_other_form_is_not_a_new_one(portal: Portal) -> None:
    assert await reset_to(portal, NFC) == 200
    await open_link(portal.client, await link_for(portal))
    refused = await choose_password(portal.client, NFD)
    assert refused.status == 400
    assert NOT_NEW in await refused.text()


async def test_a_hash_of_a_decomposed_password_made_before_still_signs_in_as_typed(
    start_portal: StartPortal, users_file: Path
) -> None:
    await give_john_a_hash_of(users_file, NFD)
    portal = await start_portal()
    assert (await sign_in(portal.client, "john", NFD + "!")).status == 401
    assert (await sign_in(portal.client, "john", NFD)).status == 302


async def test_a_hash_of_compatibility_characters_made_before_still_signs_in_as_typed(
    start_portal: StartPortal, users_file: Path
) -> None:
    await give_john_a_hash_of(users_file, LIGATURE)
    portal = await start_portal()
    assert (await sign_in(portal.client, "john", "wrong password")).status == 401
    assert (await sign_in(portal.client, "john", LIGATURE)).status == 302


async def test_the_questions_settings_take_the_current_password_in_the_other_form(
    start_portal: StartPortal, users_file: Path
) -> None:
    await give_john_a_hash_of(users_file, NFC)  # what a reset to either form writes
    portal = await start_portal(**questions_on())
    assert (await sign_in(portal.client, "john", NFC)).status == 302
    assert (await set_up(portal.client, JOHN, password=NFD)).status == 303
