"""TotpService on a running portal: real SQLite storage, the real outbox and SMTP server, the
fake clock. Registration, the code check (replay, skew, regulation), removal and their mails."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from portal.errors import DecryptionError, RateLimitedError, SecondFactorFailedError
from portal.keys import TOTP
from portal.second_factor import PendingTotp, TotpService
from portal.storage.encryption import SecretBox
from portal.totp import TotpParameters, code_at
from tests.conftest import ENCRYPTION_KEY
from tests.web.conftest import Portal, StartPortal, audit_events, no_mail_sent

IP = "192.0.2.10"


@pytest.fixture(autouse=True)
def audit_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")


def service(portal: Portal) -> TotpService:
    app = portal.client.app
    assert app is not None
    return app[TOTP]


def current_code(portal: Portal, pending: PendingTotp, offset_steps: int = 0) -> str:
    at = portal.clock.now() + offset_steps * pending.parameters.period
    return code_at(pending.secret, pending.parameters, at)


async def registered(portal: Portal, username: str = "john") -> PendingTotp:
    totp = service(portal)
    pending = totp.start_registration(username)
    await totp.complete_registration(username, pending, current_code(portal, pending), IP)
    await portal.drain_outbox()
    portal.smtp.deliveries.clear()
    return pending


async def refused(portal: Portal, code: str, username: str = "john", ip: str = IP) -> str:
    with pytest.raises(SecondFactorFailedError) as caught:
        await service(portal).verify(username, code, ip)
    return caught.value.public_message


async def test_registration_starts_with_the_configured_parameters_and_saves_nothing(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(
        organization_name="Example Corp", totp={"algorithm": "sha256", "digits": 8, "period": 60}
    )
    pending = service(portal).start_registration("john")
    assert pending.parameters == TotpParameters("SHA256", 8, 60)
    assert len(pending.secret) == 32
    assert pending.otpauth_url.startswith("otpauth://totp/Example%20Corp:john?secret=")
    assert f"secret={pending.secret_base32}" in pending.otpauth_url
    assert "algorithm=SHA256&digits=8&period=60" in pending.otpauth_url
    assert await service(portal).configuration("john") is None


async def test_completing_with_a_valid_code_saves_audits_and_mails_the_user(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    totp = service(portal)
    pending = totp.start_registration("john")
    await totp.complete_registration("john", pending, current_code(portal, pending), IP)

    saved = await totp.configuration("john")
    assert saved is not None and saved.secret == pending.secret
    assert (saved.algorithm, saved.digits, saved.period, saved.issuer) == ("SHA1", 6, 30, "Portal")
    assert audit_events(caplog, "totp_registered") == [
        {"event": "totp_registered", "username": "john", "ip": IP}
    ]
    mail = await portal.next_mail()
    assert mail["To"] == "john.doe@authelia.com"
    assert mail["Subject"] == "[Portal] A second factor was added"
    text = mail.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert "one-time password app (TOTP)" in body and IP in body
    assert pending.secret_base32 not in mail.as_string()


async def test_completing_with_a_wrong_code_saves_nothing(portal: Portal) -> None:
    totp = service(portal)
    pending = totp.start_registration("john")
    wrong = current_code(portal, pending, offset_steps=5)
    with pytest.raises(SecondFactorFailedError):
        await totp.complete_registration("john", pending, wrong, IP)
    with pytest.raises(SecondFactorFailedError):  # another user's pending registration
        await totp.complete_registration("harry", pending, current_code(portal, pending), IP)
    assert await totp.configuration("john") is None
    assert await totp.configuration("harry") is None
    assert await no_mail_sent(portal)


async def test_a_current_code_is_accepted_once_then_refused_as_a_replay(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    pending = await registered(portal)
    portal.clock.advance(30)
    code = current_code(portal, pending)
    await service(portal).verify("john", code, IP)
    assert await refused(portal, code) == "Incorrect code."
    reasons = [e["reason"] for e in audit_events(caplog, "second_factor_failed")]
    assert reasons == ["replayed"]
    assert all("code" not in e for e in audit_events(caplog, "second_factor_succeeded"))
    saved = await service(portal).configuration("john")
    assert saved is not None and saved.last_used_at == portal.clock.now()


async def test_a_code_older_than_the_last_one_used_is_refused(
    start_portal: StartPortal, caplog: pytest.LogCaptureFixture
) -> None:
    portal = await start_portal(totp={"skew": 1})
    pending = await registered(portal)
    portal.clock.advance(60)
    earlier = current_code(portal, pending, -1)  # still within the skew, but never used
    await service(portal).verify("john", current_code(portal, pending), IP)
    assert await refused(portal, earlier) == "Incorrect code."
    assert [e["reason"] for e in audit_events(caplog, "second_factor_failed")] == ["replayed"]
    # The next period's code is accepted as usual.
    portal.clock.advance(30)
    await service(portal).verify("john", current_code(portal, pending), IP)


async def test_the_registration_code_cannot_be_replayed_to_sign_in(portal: Portal) -> None:
    pending = await registered(portal)
    assert await refused(portal, current_code(portal, pending)) == "Incorrect code."


async def test_codes_within_skew_are_accepted_and_beyond_it_refused(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(totp={"skew": 1})
    pending = await registered(portal)
    portal.clock.advance(300)
    for offset in (-1, 1):
        await service(portal).verify("john", current_code(portal, pending, offset), IP)
    for offset in (-2, 2):
        code = current_code(portal, pending, offset)
        near = {current_code(portal, pending, o) for o in (-1, 0, 1)}
        if code not in near:  # a chance collision would be a correct match
            assert await refused(portal, code) == "Incorrect code."


async def test_with_the_reuse_policy_disabled_a_code_works_again(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(totp={"disable_reuse_security_policy": True})
    pending = await registered(portal)
    code = current_code(portal, pending)
    await service(portal).verify("john", code, IP)
    await service(portal).verify("john", code, IP)


async def test_every_failure_is_the_same_answer_and_wrong_codes_lead_to_a_ban(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    pending = await registered(portal)
    good = current_code(portal, pending)
    wrong = "000000" if good != "000000" else "111111"
    answers = [await refused(portal, "nobody-has-this", username="harry")]  # no device
    answers += [await refused(portal, wrong) for _ in range(2)]  # 3 failures: banned now
    answers.append(await refused(portal, good))  # the right code during the ban
    assert set(answers) == {"Incorrect code."}
    reasons = [e["reason"] for e in audit_events(caplog, "second_factor_failed")]
    assert reasons == ["no_device", "wrong", "wrong", "banned"]
    # The ban is regulation's own: it ends after ban_time, and the code works again then.
    portal.clock.advance(5 * 60 + 1)
    await service(portal).verify("john", current_code(portal, pending), IP)


async def test_wrong_codes_ban_the_user_from_another_address_too(portal: Portal) -> None:
    pending = await registered(portal)
    good = current_code(portal, pending)
    wrong = "000000" if good != "000000" else "111111"
    for index in range(3):
        await refused(portal, wrong, ip=f"198.51.100.{index}")
    assert await refused(portal, good, ip="203.0.113.9") == "Incorrect code."


async def test_deleting_removes_the_device_audits_the_actor_and_mails_the_user(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    pending = await registered(portal)
    assert await service(portal).delete("john", actor="admin") is True
    assert await service(portal).configuration("john") is None
    assert audit_events(caplog, "totp_removed") == [
        {"event": "totp_removed", "username": "john", "actor": "admin"}
    ]
    mail = await portal.next_mail()
    assert mail["Subject"] == "[Portal] A second factor was removed"
    text = mail.get_body(("plain",))
    assert text is not None and "by an administrator" in text.get_content()
    portal.clock.advance(60)
    assert await refused(portal, current_code(portal, pending)) == "Incorrect code."
    assert await service(portal).delete("john", actor="admin") is False


async def test_code_submissions_are_limited_per_address(start_portal: StartPortal) -> None:
    few = {"buckets": [{"period": "1 minute", "requests": 2}]}
    portal = await start_portal(server={"endpoints": {"rate_limits": {"second_factor_totp": few}}})
    pending = await registered(portal)
    wrong = "000000" if current_code(portal, pending) != "000000" else "111111"
    await refused(portal, wrong, ip="198.51.100.1")
    await refused(portal, wrong, ip="198.51.100.1")
    with pytest.raises(RateLimitedError) as caught:
        await service(portal).verify("john", current_code(portal, pending), "198.51.100.1")
    assert caught.value.status == 429
    # Another address is not limited (it is the same user: 2 failures, no ban yet).
    await service(portal).verify("john", current_code(portal, pending, 1), "198.51.100.2")


async def test_a_disabled_totp_accepts_no_code(start_portal: StartPortal) -> None:
    portal = await start_portal()
    pending = await registered(portal)
    disabled = await start_portal(totp={"disable": True})
    portal.clock.advance(30)
    with pytest.raises(SecondFactorFailedError):
        await service(disabled).verify("john", current_code(portal, pending), IP)


def test_a_pending_registration_is_sealed_for_the_session_record() -> None:
    box = SecretBox(ENCRYPTION_KEY)
    pending = PendingTotp("john", "Portal", TotpParameters(), secret=b"s" * 32)
    sealed: dict[str, Any] = pending.sealed(box)
    assert pending.secret_base32 not in str(sealed) and "s" * 32 not in str(sealed)
    assert PendingTotp.unsealed(sealed, box) == pending
    with pytest.raises(DecryptionError):  # moved to another user's session
        PendingTotp.unsealed({**sealed, "username": "harry"}, box)
    assert "secret" not in repr(pending).split("parameters")[1]
