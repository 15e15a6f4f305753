"""The metrics' own rules: which audit event moves which counter, bounded labels, the text
Authelia's dashboard reads, and the counting wrappers around the user backend and notifier."""

from __future__ import annotations

import email.message
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portal.errors import DeliveryError, UserBackendError
from portal.metrics import MeteredNotifier, MeteredUsers, Metrics
from portal.storage.sqlite import SqliteStorage
from portal.users.base import User
from tests.conftest import FakeClock

KEY = "an encryption key of at least twenty characters"


@pytest.fixture
async def metrics(tmp_path: Path) -> AsyncIterator[Metrics]:
    storage = SqliteStorage(tmp_path / "db.sqlite3", encryption_key=KEY)
    await storage.startup_check()
    yield Metrics(outbox=storage, clock=FakeClock())
    await storage.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """Return one sample's value from the app's registry."""
    return metrics.registry.get_sample_value(name, labels)


def test_authelias_counters_are_written_without_total_as_its_go_client_writes_them(
    metrics: Metrics,
) -> None:
    metrics.record_event("signin_failed", {"username": "john", "ip": "192.0.2.1"})

    text = metrics.exposition().decode()

    assert "# HELP authelia_authn The number of 1FA authentications processed.\n" in text
    assert "# TYPE authelia_authn counter\n" in text
    assert 'authelia_authn{banned="false",success="false"} 1.0\n' in text
    assert "authelia_authn_total" not in text
    # The portal's own keep the usual suffix.
    assert "# TYPE portal_reset_requested_total counter\n" in text
    assert "john" not in text and "192.0.2.1" not in text


def test_a_label_value_outside_its_set_is_other(metrics: Metrics) -> None:
    metrics.record_event("reset_rejected", {"reason": "john@example.com"})
    metrics.record_event("reset_rejected", {"reason": "expired"})
    metrics.record_event("second_factor_failed", {"method": "sms", "reason": "wrong"})

    assert sample(metrics, "portal_reset_rejected_total", reason="other") == 1
    assert sample(metrics, "portal_reset_rejected_total", reason="expired") == 1
    assert "john@example.com" not in metrics.exposition().decode()
    text = metrics.exposition().decode()
    assert 'authelia_authn_second_factor{banned="false",success="false",type="other"} 1.0' in text


def test_a_passkey_sign_in_counts_as_authelia_counts_passkeys(metrics: Metrics) -> None:
    # As WebAuthnService.verify and SignInService.sign_in_with_passkey audit them.
    login = {"method": "webauthn", "purpose": "passkey_login"}
    metrics.record_event("second_factor_succeeded", login)
    metrics.record_event("signin_succeeded", {"method": "passkey"})
    metrics.record_event("second_factor_failed", {**login, "reason": "assertion"})

    text = metrics.exposition().decode()

    assert 'authelia_authn_passkey{success="true"} 1.0' in text
    assert 'authelia_authn_passkey{success="false"} 1.0' in text
    assert "authelia_authn{" not in text
    assert "authelia_authn_second_factor{" not in text


def test_an_unknown_identifier_and_a_known_one_are_one_series(metrics: Metrics) -> None:
    metrics.record_event("reset_requested", {"identifier_hash": "a"})
    metrics.record_event("reset_decoy_requested", {"identifier_hash": "b"})

    assert sample(metrics, "portal_reset_requested_total") == 2


def test_the_audit_sink_logs_first_and_a_broken_event_never_breaks_the_flow(
    metrics: Metrics,
) -> None:
    logged: list[str] = []
    sink = metrics.audit_sink(lambda event, /, **fields: logged.append(event))

    sink("signin_failed", duration="not a number")
    sink("signin_succeeded", duration=0.25)

    assert logged == ["signin_failed", "signin_succeeded"]
    assert sample(metrics, "authelia_authn_duration_count", success="true") == 1
    assert sample(metrics, "authelia_authn_duration_sum", success="true") == 0.25


class Backend:
    """A user backend whose password writes fail (a fake: the seam is the protocol)."""

    async def startup_check(self) -> None: ...

    async def close(self) -> None: ...

    async def get_user(self, identifier: str) -> User | None:
        return None

    async def check_password(self, username: str, password: str) -> bool:
        return False

    async def set_password(self, username: str, password: str) -> None:
        raise UserBackendError("the directory refused the write")

    async def healthy(self) -> bool:
        return True

    async def password_state(self, username: str) -> str | None:
        return None

    async def clear_lockout(self, username: str) -> bool:
        return False


async def test_user_backend_calls_and_errors_are_counted_by_operation(metrics: Metrics) -> None:
    users = MeteredUsers(Backend(), metrics)
    await users.get_user("john")
    await users.check_password("john", "secret")
    with pytest.raises(UserBackendError):
        await users.set_password("john", "secret")

    assert sample(metrics, "portal_user_backend_calls_total", operation="get_user") == 1
    assert sample(metrics, "portal_user_backend_calls_total", operation="set_password") == 1
    assert sample(metrics, "portal_user_backend_errors_total", operation="set_password") == 1
    assert sample(metrics, "portal_user_backend_errors_total", operation="get_user") == 0


class Notifier:
    """A notifier that refuses every other mail and drops rehearsals."""

    def __init__(self) -> None:
        self.sent = 0

    async def startup_check(self) -> None: ...

    async def send(self, message: email.message.EmailMessage) -> None:
        self.sent += 1
        if self.sent % 2 == 0:
            raise DeliveryError("mailbox full", permanent=True)

    async def rehearse(self, message: email.message.EmailMessage) -> None: ...

    async def close(self) -> None: ...


async def test_mail_deliveries_are_counted_by_result_and_rehearsals_not(metrics: Metrics) -> None:
    notifier = MeteredNotifier(Notifier(), metrics)
    message = email.message.EmailMessage()
    await notifier.send(message)
    with pytest.raises(DeliveryError):
        await notifier.send(message)
    await notifier.rehearse(message)

    assert sample(metrics, "portal_mail_deliveries_total", result="sent") == 1
    assert sample(metrics, "portal_mail_deliveries_total", result="failed") == 1


class Pool:
    """What LdapPool tells of its waits."""

    waits = 3
    wait_seconds = 1.5


async def test_the_pool_and_the_outbox_are_read_at_scrape_time(metrics: Metrics) -> None:
    assert "portal_outbox_pending" not in metrics.exposition().decode()  # never read yet
    metrics.watch_pool(Pool())
    await metrics.refresh()

    assert sample(metrics, "portal_ldap_pool_waits_total") == 3
    assert sample(metrics, "portal_ldap_pool_wait_seconds_total") == 1.5
    assert sample(metrics, "portal_outbox_pending") == 0
    assert sample(metrics, "portal_outbox_oldest_age_seconds") == 0
