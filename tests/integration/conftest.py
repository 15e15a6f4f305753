"""Fixtures for the integration tests: a real slapd with the project's directory, fresh per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import trustme

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
