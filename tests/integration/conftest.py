"""Fixtures for the integration tests: a real slapd with the project's directory, fresh per test;
a real Samba AD domain controller, one for the session (every test makes its own users)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import trustme

from tests.integration.redis_server import RedisServer, running_redis
from tests.integration.samba_ad import AdUser, SambaDc, strong_password
from tests.integration.slapd import Slapd, SlapdTemplate, build_template


@pytest.fixture(scope="session")
def slapd_ca() -> trustme.CA:
    """The private CA that signs slapd's certificate (SAN 127.0.0.1 and localhost)."""
    return trustme.CA()


@pytest.fixture(scope="session")
def slapd_template(tmp_path_factory: pytest.TempPathFactory, slapd_ca: trustme.CA) -> SlapdTemplate:
    """Build the loaded server directory once; every test starts from a copy of it."""
    return build_template(tmp_path_factory.mktemp("slapd-template"), slapd_ca)


@pytest.fixture
def make_slapd(slapd_template: SlapdTemplate, tmp_path: Path) -> Iterator[Callable[[], Slapd]]:
    """Start as many pristine servers as a test asks for; all are stopped afterwards."""
    with ExitStack() as stops:
        count = 0

        def make() -> Slapd:
            nonlocal count
            server = slapd_template.spawn(tmp_path / f"slapd{count}")
            count += 1
            stops.callback(server.stop)
            return server

        yield make


@pytest.fixture
def slapd(make_slapd: Callable[[], Slapd]) -> Slapd:
    """A running slapd with the test users, groups, password policy and ACLs, fresh data."""
    return make_slapd()


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaDc]:
    """A provisioned, running Samba AD DC for the whole session; stopped at the end."""
    dc = SambaDc.provisioned(tmp_path_factory.mktemp("samba-ad"))
    try:
        dc.start()
        yield dc
    finally:
        dc.stop()


@pytest.fixture
def make_user(samba_dc: SambaDc) -> Callable[..., AdUser]:
    """Create users with unique names (options go to `samba-tool user create`)."""

    def make(*options: str) -> AdUser:
        name = f"u{secrets.token_hex(6)}"  # sAMAccountName: at most 20 characters
        password = strong_password()
        return AdUser(name, password, samba_dc.create_user(name, password, *options))

    return make


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running Redis server of the test's own (password and ACL user), stopped afterwards."""
    with running_redis(tmp_path / "redis") as server:
        yield server
