"""Checks against Authelia's own files: its reference configuration, the configurations and users
file of two of its integration suites, and its LDAP test directory, read as shipped.

Only `make compat` runs this directory (the default run never collects it). It reads the files
from the directory named by AUTHELIA_CORPUS (the Makefile defaults it to ../shared/compat/authelia,
beside the repository); without them the run stops at once with one line saying so. Nothing here
writes to those files: a test that writes works on a copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.conftest import REPO
from tests.integration.conftest import make_slapd, slapd, slapd_ca  # noqa: F401
from tests.integration.slapd import BACKEND, BASE_DN, Slapd, SlapdTemplate, build_template

DEFAULT_CORPUS = REPO.parent / "shared" / "compat" / "authelia"

# Authelia's LDAP image creates the base entry before its files go in; they assume it.
BASE_ENTRY = f"""\
dn: {BASE_DN}
objectClass: dcObject
objectClass: organization
dc: example
o: Example
"""


def corpus() -> Path:
    """Return the directory holding Authelia's files (AUTHELIA_CORPUS, else the default)."""
    return Path(os.environ.get("AUTHELIA_CORPUS") or DEFAULT_CORPUS)


def pytest_configure(config: pytest.Config) -> None:
    """Stop before collecting anything when Authelia's files are not there."""
    where = corpus()
    if not (where / "config.template.yml").is_file():
        raise pytest.UsageError(
            "the Authelia corpus is missing: set AUTHELIA_CORPUS to a copy of authelia's files"
            f" (looked in {where})"
        )


@pytest.fixture(scope="session")
def authelia() -> Path:
    """The directory holding Authelia's files, read-only."""
    return corpus()


def authelias_directory(ldif: Path) -> Callable[[Slapd], None]:
    """Return a loader for Authelia's LDAP files, filled in as its suite fills them."""

    def read(name: str) -> str:
        text = (ldif / name).read_text(encoding="utf-8")
        return text.replace("{{ LDAP_BACKEND }}", BACKEND).replace("{{ LDAP_BASE_DN }}", BASE_DN)

    def load(server: Slapd) -> None:
        server.modify_config(read("01-pp.ldif"))
        server.add(BASE_ENTRY)
        server.add(read("02-ppcfg.ldif"))
        server.add(read("03-base.ldif"))
        server.modify_config(read("04-access.ldif"))

    return load


@pytest.fixture(scope="session")
def slapd_template(
    tmp_path_factory: pytest.TempPathFactory,
    slapd_ca: trustme.CA,  # noqa: F811
    authelia: Path,
) -> SlapdTemplate:
    """The `slapd` fixture here serves Authelia's own directory instead of the project's."""
    path = tmp_path_factory.mktemp("authelia-slapd-template")
    return build_template(path, slapd_ca, load=authelias_directory(authelia / "ldap"))
