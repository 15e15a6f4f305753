"""build_services: the services run on what the dependencies carry, the audit sink included."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from portal.deps import (
    Dependencies,
    captcha_from_config,
    notifier_from_config,
    storage_from_config,
    users_from_config,
)
from portal.errors import SignInFailedError
from portal.services import build_services
from tests.conftest import ConfigFactory, FakeClock

IP = "192.0.2.7"


async def test_every_service_audits_to_the_sink_the_dependencies_carry(
    make_config: ConfigFactory, users_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    config = make_config(authentication_backend={"file": {"path": str(users_file)}})
    events: list[tuple[str, dict[str, object]]] = []

    def sink(event: str, /, **fields: object) -> None:
        events.append((event, fields))

    deps = Dependencies(
        users=users_from_config(config),
        storage=storage_from_config(config),
        notifier=notifier_from_config(config),
        clock=FakeClock(),
        audit=sink,
    )
    await deps.storage.startup_check()
    await deps.users.startup_check()
    try:
        services = build_services(config, deps)
        await services.reset.request_link("john", IP)
        with pytest.raises(SignInFailedError):
            await services.signin.sign_in(
                "john", "wrong", IP, remember_me=False, host="app.example.com"
            )
    finally:
        await deps.users.close()
        await deps.storage.close()

    assert [event for event, _ in events] == ["reset_requested", "signin_failed"]
    failed = dict(events[1][1])
    # Issue 18: how long the attempt took, in seconds (authelia_authn_duration); never a secret.
    assert isinstance(failed.pop("duration"), float)
    assert failed == {"username": "john", "ip": IP}
    # Nothing went to the default sink, the portal.audit logger.
    assert not [r for r in caplog.records if r.name == "portal.audit"]


async def test_a_captcha_in_the_configuration_without_one_in_the_dependencies_is_refused(
    make_config: ConfigFactory, users_file: Path
) -> None:
    # Before build_services the app built the CAPTCHA from the configuration itself; a
    # Dependencies without one must not turn the configured check off without a word.
    config = make_config(
        authentication_backend={"file": {"path": str(users_file)}},
        captcha={"enabled_on": ["login", "reset_password_start"]},
    )
    deps = Dependencies(
        users=users_from_config(config),
        storage=storage_from_config(config),
        notifier=notifier_from_config(config),
        clock=FakeClock(),
    )
    try:
        with pytest.raises(ValueError, match="the Dependencies carry no CAPTCHA"):
            build_services(config, deps)
        with_captcha = dataclasses.replace(
            deps, captcha=captcha_from_config(config, deps.storage, deps.clock)
        )
        services = build_services(config, with_captcha)
        assert services.captcha.enabled("login")
        assert services.captcha.enabled("reset_password_start")
    finally:
        await deps.users.close()
        await deps.storage.close()
