"""build_services: the services run on what the dependencies carry, the audit sink included."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from portal.deps import Dependencies, notifier_from_config, storage_from_config, users_from_config
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
    assert events[1][1] == {"username": "john", "ip": IP}
    # Nothing went to the default sink, the portal.audit logger.
    assert not [r for r in caplog.records if r.name == "portal.audit"]
