"""Authelia's Standalone users file, as shipped: the portal reads it, checks its SHA-512 crypt
hashes, and writes a new password into it changing nothing but that user's hash."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from portal.config import Argon2Config, FileBackendConfig, PasswordConfig
from portal.users.file import FileUserBackend
from portal.users.hashing import verify_password
from tests.integration.test_cli import portal as run_portal

CHEAP = PasswordConfig(argon2=Argon2Config(memory=1024, iterations=1, parallelism=1))


@pytest.fixture
def users_yml(authelia: Path) -> Path:
    return authelia / "suites" / "Standalone" / "users.yml"


@pytest.fixture
def writable(users_yml: Path, tmp_path: Path) -> Path:
    """A copy of Authelia's users file the portal may write."""
    target = tmp_path / "users.yml"
    shutil.copy(users_yml, target)
    return target


def johns_hash(users_yml: Path) -> str:
    users = YAML(typ="safe", pure=True).load(users_yml.read_text(encoding="utf-8"))
    digest: str = users["users"]["john"]["password"]
    return digest


async def test_authelia_standalone_users_file_loads_and_john_signs_in(writable: Path) -> None:
    backend = FileUserBackend(FileBackendConfig(path=writable, password=PasswordConfig()))
    await backend.startup_check()
    john = await backend.get_user("john")
    assert john is not None
    assert (john.display_name, john.email, john.groups) == (
        "John Doe",
        "john.doe@authelia.com",
        ("admins", "dev"),
    )
    assert await backend.check_password("john", "password") is True
    assert await backend.check_password("john", "Password") is False
    await backend.close()


def test_authelia_standalone_sha512_crypt_hash_verifies_password(users_yml: Path) -> None:
    digest = johns_hash(users_yml)
    assert digest.startswith("$6$rounds=500000$")
    assert verify_password("password", digest) is True
    assert verify_password("Password", digest) is False


def test_hash_validate_checks_authelias_own_hash(users_yml: Path) -> None:
    digest = johns_hash(users_yml)
    good = run_portal("crypto", "hash", "validate", "--password", "password", "--", digest)
    bad = run_portal("crypto", "hash", "validate", "--password", "Password", "--", digest)
    assert good.returncode == 0
    assert good.stdout.strip() == "The password matches the digest."
    assert bad.returncode == 1


async def test_a_new_password_changes_only_that_users_hash_in_authelias_file(
    writable: Path,
) -> None:
    before = writable.read_text(encoding="utf-8")
    backend = FileUserBackend(
        FileBackendConfig(path=writable, password=CHEAP), logger=logging.getLogger("test")
    )
    await backend.startup_check()
    old_state = await backend.password_state("harry")
    await backend.set_password("harry", "a new password")
    new_state = await backend.password_state("harry")
    await backend.close()

    assert old_state and new_state and new_state != old_state
    before_lines = before.splitlines()
    after_lines = writable.read_text(encoding="utf-8").splitlines()
    changed = [i for i, (a, b) in enumerate(zip(before_lines, after_lines, strict=True)) if a != b]
    assert len(changed) == 1
    assert after_lines[changed[0]] == before_lines[changed[0]].replace(old_state, new_state)
    assert before_lines[changed[0] - 2] == "  harry:"
