"""A reset never bypasses the second factor (ASVS 5.0 6.4.3), told as stories: a real portal, the
real SMTP server and SQLite file, the fake clock; codes computed with pyotp from john's known
secret; the admin's way out run as a real `portal users second-factor delete` process."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from aiohttp import ClientResponse

from portal.keys import TOTP
from portal.second_factor import PendingTotp, TotpService
from portal.totp import TotpParameters, code_at
from portal.users.hashing import verify_password
from tests.integration.test_cli import portal as run_portal
from tests.web.conftest import (
    Portal,
    StartPortal,
    audit_events,
    follow_result,
    has_session,
    open_link,
    request_reset,
    reset_link_from,
    submit,
    token_of,
)
from tests.web.test_reset_flow import stored_hash

NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"
IP = "192.0.2.10"
STEP2 = "/reset-password/step2"
MISSING = "Enter the code from your authenticator app."
REFUSED = "Incorrect code."


@pytest.fixture(autouse=True)
def audit_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")


def totp_of(portal: Portal) -> TotpService:
    app = portal.client.app
    assert app is not None
    return app[TOTP]


async def register_john(portal: Portal, parameters: TotpParameters | None = None) -> PendingTotp:
    """Register a TOTP device for john through the service, as the settings page would."""
    totp = totp_of(portal)
    pending = totp.start_registration("john")
    if parameters is not None:
        pending = PendingTotp("john", pending.issuer, parameters, pending.secret)
    code = code_at(pending.secret, pending.parameters, portal.clock.now())
    await totp.complete_registration("john", pending, code, IP)
    await portal.drain_outbox()
    portal.smtp.deliveries.clear()
    # The next step's code: the registration's own is used up.
    portal.clock.advance(pending.parameters.period)
    return pending


def code_now(portal: Portal, device: PendingTotp) -> str:
    return code_at(device.secret, device.parameters, portal.clock.now())


def wrong_code(portal: Portal, device: PendingTotp) -> str:
    period = device.parameters.period
    now = portal.clock.now()
    near = {code_at(device.secret, device.parameters, now + s * period) for s in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222") if c not in near)


async def new_link(portal: Portal) -> str:
    await request_reset(portal.client, "john")
    return reset_link_from(await portal.next_mail())


async def post_step2(portal: Portal, **fields: str) -> ClientResponse:
    """Post the step-2 form (the link's cookie already set) with the new password and fields."""
    return await follow_result(
        portal.client,
        await submit(
            portal.client,
            STEP2,
            STEP2,
            password=NEW_PASSWORD,
            password_confirm=NEW_PASSWORD,
            **fields,
        ),
    )


async def form_is_shown(portal: Portal) -> str:
    """Load step 2 again: the link is still usable when the form shows."""
    form = await portal.client.get(STEP2)
    assert form.status == 200
    return await form.text()


def tag_of(page: str, element_id: str) -> str:
    match = re.search(rf'<[^>]*\bid="{element_id}"[^>]*>', page)
    assert match, f"no element with id {element_id}"
    return match.group(0)


async def john_changed_password(portal: Portal) -> bool:
    return verify_password(NEW_PASSWORD, await stored_hash(portal.users_file, "john"))


async def admin_deletes_johns_device(portal: Portal) -> None:
    """Run the admin command as an admin does, on the running portal's configuration."""
    config = portal.users_file.parent / "configuration.yml"
    result = await asyncio.to_thread(
        run_portal, "users", "second-factor", "delete", "john", "-c", str(config)
    )
    assert result.returncode == 0, result.stderr
    assert 'totp_removed username="john" actor="admin"' in result.stderr
    # The command queued its mail at the real time; the portal's clock catches up to send it.
    portal.clock.time = max(portal.clock.now(), time.time()) + 1
    mail = await portal.next_mail()
    assert mail["Subject"] == "[Portal] A second factor was removed"
    portal.smtp.deliveries.clear()


async def test_step2_asks_for_the_code_and_the_link_alone_changes_nothing(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    device = await register_john(portal)
    await open_link(portal.client, await new_link(portal))

    page = await form_is_shown(portal)
    field = tag_of(page, "totp_code")
    assert '<label for="totp_code">Code from your authenticator app</label>' in page
    assert 'name="totp_code"' in field and 'autocomplete="one-time-code"' in field
    assert 'inputmode="numeric"' in field and 'pattern="[0-9]{6}"' in field
    assert "aria-invalid" not in field

    # No code: the form again, the message by the field and at the top; nothing consumed.
    missing = await post_step2(portal)
    assert missing.status == 400
    page = await missing.text()
    summary = page.split('id="step2-errors"', 1)[1].split("</div>", 1)[0]
    assert 'role="alert"' in tag_of(page, "step2-errors")
    assert f'<a href="#totp_code">{MISSING}</a>' in summary
    field = tag_of(page, "totp_code")
    assert 'aria-invalid="true"' in field and 'aria-describedby="totp-code-error"' in field
    assert MISSING in page.split('id="totp-code-error"', 1)[1][:200]
    assert not has_session(missing)
    await form_is_shown(portal)

    wrong = await post_step2(portal, totp_code=wrong_code(portal, device))
    assert wrong.status == 400
    assert REFUSED in await wrong.text()
    await form_is_shown(portal)
    assert not await john_changed_password(portal)

    rejected = audit_events(caplog, "reset_rejected")
    assert [e["reason"] for e in rejected] == ["second_factor", "second_factor"]
    assert all(e["username"] == "john" for e in rejected)
    logged = "\n".join(r.getMessage() + str(r.__dict__.get("fields")) for r in caplog.records)
    assert wrong_code(portal, device) not in logged

    done = await post_step2(portal, totp_code=code_now(portal, device))
    assert done.status == 200
    assert "Your password has been changed" in await done.text()
    assert not has_session(done), "a reset never signs anyone in"
    assert not any(has_session(r) for r in done.history)
    assert await john_changed_password(portal)
    still = await totp_of(portal).configuration("john")
    assert still is not None and still.secret == device.secret, "the device stays"
    assert (await portal.client.get(STEP2)).status == 400  # the link is used up now


async def test_a_code_is_not_asked_of_a_user_without_a_device(portal: Portal) -> None:
    await open_link(portal.client, await new_link(portal))
    assert "totp_code" not in await form_is_shown(portal)
    done = await post_step2(portal)
    assert done.status == 200
    assert await john_changed_password(portal)


async def test_the_field_takes_the_registered_length(portal: Portal) -> None:
    device = await register_john(portal, TotpParameters("SHA256", 8, 30))
    await open_link(portal.client, await new_link(portal))
    field = tag_of(await form_is_shown(portal), "totp_code")
    assert 'pattern="[0-9]{8}"' in field and 'maxlength="8"' in field
    done = await post_step2(portal, totp_code=code_now(portal, device))
    assert done.status == 200


async def test_a_replayed_code_and_a_policy_failure_leave_the_link_usable(
    portal: Portal,
) -> None:
    device = await register_john(portal)
    code = code_now(portal, device)
    await totp_of(portal).verify("john", code, IP)  # the code was used to sign in
    await open_link(portal.client, await new_link(portal))

    replayed = await post_step2(portal, totp_code=code)
    assert replayed.status == 400
    assert REFUSED in await replayed.text()

    # A refused password is said before the code is looked at: the code is not spent.
    portal.clock.advance(30)
    code = code_now(portal, device)
    short = await follow_result(
        portal.client,
        await submit(
            portal.client, STEP2, STEP2, password=NEW_PASSWORD, password_confirm="x", totp_code=code
        ),
    )
    assert short.status == 400
    assert "password-errors" in await short.text()
    done = await post_step2(portal, totp_code=code)
    assert done.status == 200


async def test_wrong_codes_lead_to_a_ban_with_the_same_message(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    device = await register_john(portal)
    await open_link(portal.client, await new_link(portal))
    wrong = wrong_code(portal, device)
    answers = []
    for _ in range(3):  # regulation's max_retries: banned now
        response = await post_step2(portal, totp_code=wrong)
        assert response.status == 400
        answers.append(await response.text())
    banned = await post_step2(portal, totp_code=code_now(portal, device))
    assert banned.status == 400
    answers.append(await banned.text())
    for page in answers:
        assert REFUSED in page.split('id="totp-code-error"', 1)[1][:100]
    reasons = [e["reason"] for e in audit_events(caplog, "second_factor_failed")]
    assert reasons == ["wrong", "wrong", "wrong", "banned"]
    assert not await john_changed_password(portal)
    await form_is_shown(portal)  # the link is still usable until its normal limits


async def test_lost_device_the_admin_deletes_it_and_the_link_alone_works(
    portal: Portal,
) -> None:
    await register_john(portal)
    await open_link(portal.client, await new_link(portal))
    assert (await post_step2(portal)).status == 400

    await admin_deletes_johns_device(portal)
    assert await totp_of(portal).configuration("john") is None

    await open_link(portal.client, await new_link(portal))
    assert "totp_code" not in await form_is_shown(portal)
    done = await post_step2(portal)
    assert done.status == 200
    assert not has_session(done)
    assert await john_changed_password(portal)


async def api_reset(
    portal: Portal, token: str, password: str = NEW_PASSWORD, **extra: str
) -> ClientResponse:
    return await portal.client.post(
        "/api/reset-password", json={"token": token, "password": password, **extra}
    )


async def link_usable(portal: Portal, token: str) -> bool:
    finish = "/api/reset-password/identity/finish"
    response = await portal.client.post(finish, json={"token": token})
    return response.status == 200


async def test_the_json_twin(portal: Portal) -> None:
    device = await register_john(portal)
    token = token_of(await new_link(portal))

    missing = await api_reset(portal, token)
    assert missing.status == 400
    assert (await missing.json())["status"] == "KO"
    assert (await missing.json())["message"] == MISSING
    assert await link_usable(portal, token)

    wrong = await api_reset(portal, token, totp=wrong_code(portal, device))
    assert wrong.status == 400
    assert await wrong.json() == {"status": "KO", "message": REFUSED, "reasons": []}
    assert await link_usable(portal, token)
    assert not await john_changed_password(portal)

    done = await api_reset(portal, token, totp=code_now(portal, device))
    assert done.status == 200 and await done.json() == {"status": "OK"}
    assert not has_session(done)
    assert await john_changed_password(portal)
    assert await totp_of(portal).configuration("john") is not None
    assert not await link_usable(portal, token)

    await admin_deletes_johns_device(portal)
    portal.clock.advance(60)
    token = token_of(await new_link(portal))
    again = await api_reset(portal, token, "Another-Correct-Horse-Battery-43")
    assert again.status == 200, await again.text()
    digest = await stored_hash(portal.users_file, "john")
    assert verify_password("Another-Correct-Horse-Battery-43", digest)


async def test_codes_count_against_the_second_factor_limit_too(start_portal: StartPortal) -> None:
    few = {"buckets": [{"period": "1 minute", "requests": 2}]}
    portal = await start_portal(server={"endpoints": {"rate_limits": {"second_factor_totp": few}}})
    device = await register_john(portal)
    await open_link(portal.client, await new_link(portal))
    for _ in range(2):
        assert (await post_step2(portal, totp_code=wrong_code(portal, device))).status == 400
    limited = await post_step2(portal, totp_code=code_now(portal, device))
    assert limited.status == 429
    assert "Retry-After" in limited.headers
    assert not await john_changed_password(portal)
    await form_is_shown(portal)
