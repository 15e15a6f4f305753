"""Password hashes: every format Authelia reads verifies; what the portal writes, others read.

Vectors come from independent tools (argon2-cffi, the bcrypt package, hashlib, OpenSSL, libpass,
the SHA-crypt specification) rather than from the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import subprocess
from typing import Any, Protocol

import argon2
import bcrypt
import pytest
from argon2.low_level import Type, hash_secret
from passlib.hash import (
    bcrypt_sha256,
    pbkdf2_sha1,
    pbkdf2_sha256,
    pbkdf2_sha512,
    scrypt,
    sha256_crypt,
    sha512_crypt,
)
from ruamel.yaml import YAML

from portal.config import (
    Argon2Config,
    BcryptConfig,
    PasswordConfig,
    Pbkdf2Config,
    ScryptConfig,
    Sha2CryptConfig,
)
from portal.errors import UnsupportedHashError
from portal.users.hashing import hash_password, is_supported, verify_password
from tests.conftest import FIXTURES

PASSWORD = "correct horse battery stäple"
WRONG = "correct horse battery staple"


class PasslibHandler(Protocol):
    """What these tests use of a passlib hash class (pbkdf2_sha256, sha512_crypt, ...)."""

    def using(self, **settings: Any) -> PasslibHandler:
        """Return the handler with these settings (rounds=..., ...)."""
        ...

    def hash(self, secret: str) -> str:
        """Return a new hash of the secret in the handler's own format."""
        ...

    def verify(self, secret: str, hash: str) -> bool:
        """Tell whether the secret matches the hash."""
        ...


def ab64(data: bytes) -> str:
    """Encode as passlib's adapted base64 ('.' for '+', no padding)."""
    return base64.b64encode(data).decode().rstrip("=").replace("+", ".")


def b64(data: bytes) -> str:
    """Encode as standard base64 without padding (PHC and go-crypt)."""
    return base64.b64encode(data).decode().rstrip("=")


def b64decode(text: str) -> bytes:
    text = text.replace(".", "+")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def openssl_sha_crypt(flag: str, salt: str, password: str) -> str:
    result = subprocess.run(
        ["openssl", "passwd", flag, "-salt", salt, "-stdin"],
        input=password.encode(),
        capture_output=True,
        check=True,
    )
    return result.stdout.decode().strip()


def assert_verifies(digest: str, password: str = PASSWORD, wrong: str = WRONG) -> None:
    assert verify_password(password, digest) is True
    assert verify_password(wrong, digest) is False
    assert is_supported(digest)


# --- reading what others wrote --------------------------------------------------------------


@pytest.mark.parametrize("kind", [Type.ID, Type.I, Type.D], ids=["argon2id", "argon2i", "argon2d"])
def test_argon2_hashes_from_argon2_cffi_verify(kind: Type) -> None:
    hasher = argon2.PasswordHasher(memory_cost=1024, time_cost=1, parallelism=2, type=kind)
    assert_verifies(hasher.hash(PASSWORD))


def test_argon2_version_16_hash_without_version_field_verifies() -> None:
    raw = hash_secret(PASSWORD.encode(), b"saltsaltsalt", 1, 1024, 1, 32, Type.ID, version=16)
    digest = raw.decode().replace("$v=16", "")
    assert "$v=" not in digest
    assert_verifies(digest)


def test_the_test_users_sha512_crypt_hash_with_rounds_verifies_password() -> None:
    users = YAML(typ="safe", pure=True).load((FIXTURES / "users.yml").read_text())
    digest = users["users"]["john"]["password"]
    assert digest.startswith("$6$rounds=500000$")
    assert_verifies(digest, "password", "Password")


@pytest.mark.parametrize(
    ("digest", "password"),
    [
        # The SHA-crypt specification's own test vectors (with rounds=).
        (
            "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
            "Hello world!",
        ),
        (
            "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/"
            "UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
            "Hello world!",
        ),
    ],
    ids=["sha256", "sha512"],
)
def test_sha_crypt_specification_vectors_with_rounds_verify(digest: str, password: str) -> None:
    assert_verifies(digest, password, "Hello world")


@pytest.mark.parametrize("flag", ["-5", "-6"])
def test_sha_crypt_hashes_from_openssl_without_rounds_verify(flag: str) -> None:
    digest = openssl_sha_crypt(flag, "Zq9sWl3kAb", PASSWORD)
    assert digest.startswith(f"${flag[1]}$Zq9sWl3kAb$")
    assert_verifies(digest)


@pytest.mark.parametrize("prefix", [b"2b", b"2a"])
def test_bcrypt_hashes_from_the_bcrypt_package_verify(prefix: bytes) -> None:
    digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4, prefix=prefix)).decode()
    assert digest.startswith(f"${prefix.decode()}$04$")
    assert_verifies(digest)


def test_bcrypt_2y_hash_as_written_by_php_verifies() -> None:
    digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert_verifies("$2y$" + digest[4:])


def test_bcrypt_never_matches_a_longer_password_on_its_first_72_bytes() -> None:
    long_password = "a" * 72
    digest = bcrypt.hashpw(long_password.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert verify_password(long_password, digest) is True
    assert verify_password(long_password + "b", digest) is False


def test_bcrypt_sha256_hashes_from_passlib_verify_in_both_versions() -> None:
    assert_verifies(bcrypt_sha256.using(rounds=4).hash(PASSWORD))
    version_1 = bcrypt_sha256.using(rounds=4, version=1).hash(PASSWORD)
    assert version_1.startswith("$bcrypt-sha256$2b,4$")
    assert_verifies(version_1)


def test_bcrypt_sha256_built_by_hand_as_go_crypt_does_verifies() -> None:
    salt = bcrypt.gensalt(rounds=4).decode()[7:]
    key = base64.b64encode(hmac.new(salt.encode(), PASSWORD.encode(), hashlib.sha256).digest())
    inner = bcrypt.hashpw(key, f"$2b$04${salt}".encode()).decode()
    assert_verifies(f"$bcrypt-sha256$v=2,t=2b,r=4${salt}${inner[29:]}")


def test_bcrypt_sha256_accepts_passwords_longer_than_72_bytes() -> None:
    long_password = "x" * 100
    digest = bcrypt_sha256.using(rounds=4).hash(long_password)
    assert verify_password(long_password, digest) is True
    assert verify_password("x" * 72, digest) is False


@pytest.mark.parametrize("variant", ["sha1", "sha224", "sha256", "sha384", "sha512"])
def test_pbkdf2_hashes_computed_with_hashlib_verify(variant: str) -> None:
    salt = b"0123456789abcdef"
    key = hashlib.pbkdf2_hmac(variant, PASSWORD.encode(), salt, 1000)
    prefix = "$pbkdf2$" if variant == "sha1" else f"$pbkdf2-{variant}$"
    assert_verifies(f"{prefix}1000${ab64(salt)}${ab64(key)}")


@pytest.mark.parametrize("handler", [pbkdf2_sha1, pbkdf2_sha256, pbkdf2_sha512])
def test_pbkdf2_hashes_from_passlib_verify(handler: PasslibHandler) -> None:
    assert_verifies(handler.using(rounds=1000).hash(PASSWORD))


def test_scrypt_hash_in_go_crypt_encoding_computed_with_hashlib_verifies() -> None:
    salt = b"\xfb\xff" + b"s" * 14  # encodes with '+' and '/' in standard base64
    key = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=1024, r=8, p=1, dklen=32)
    digest = f"$scrypt$ln=10,r=8,p=1${b64(salt)}${b64(key)}"
    assert "+" in digest or "/" in digest
    assert_verifies(digest)


def test_scrypt_hash_in_adapted_base64_verifies() -> None:
    salt = b"\xfb\xef" + b"s" * 14
    key = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=1024, r=8, p=1, dklen=32)
    digest = f"$scrypt$ln=10,r=8,p=1${ab64(salt)}${ab64(key)}"
    assert "." in digest
    assert_verifies(digest)


def test_scrypt_hash_from_passlib_verifies() -> None:
    assert_verifies(scrypt.using(rounds=10).hash(PASSWORD))


@pytest.mark.parametrize("prefix", ["{CRYPT}", "{crypt}", "{Crypt}"])
def test_crypt_prefix_in_any_case_is_ignored(prefix: str) -> None:
    digest = openssl_sha_crypt("-6", "prefixsalt", PASSWORD)
    assert_verifies(prefix + digest)


UNSUPPORTED = [
    "",
    "hunter2-in-plain-text",
    "{CRYPT}",
    "$1$saltsalt$kP6BXnDbVDqOZ.YRjHbh0/",  # md5-crypt: not something Authelia accepts
    "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ",  # no key
    "$argon2id$v=99$m=1024,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5",
    "$argon2id$v=19$m=1024,t=1,p=1$c2Fsd!NhbHQ$a2V5a2V5a2V5a2V5",
    "$6$rounds=500000$saltsalt$tooshort",
    "$6$rounds=10$saltsalt$" + "a" * 86,
    "$2b$04$tooshort",
    "$2b$99$" + "a" * 53,
    "$bcrypt-sha256$v=3,t=2b,r=12$" + "a" * 22 + "$" + "b" * 31,
    "$pbkdf2-sha512$many$c2FsdA$a2V5",
    "$pbkdf2-md5$1000$c2FsdA$a2V5",
    "$scrypt$ln=99,r=8,p=1$c2FsdHNhbHQ$a2V5",
    "$scrypt$ln=10,r=8,p=1,x=2$c2FsdHNhbHQ$a2V5",
    "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHQ$a",
]


@pytest.mark.parametrize("digest", UNSUPPORTED)
def test_unknown_or_malformed_hash_raises_without_echoing_it(digest: str) -> None:
    with pytest.raises(UnsupportedHashError, match="unsupported") as caught:
        verify_password(PASSWORD, digest)
    if digest:
        assert digest not in str(caught.value)
        for part in (p for p in digest.split("$")[2:] if len(p) >= 8):
            assert part not in str(caught.value)
    assert is_supported(digest) is False


# --- writing what others can read -----------------------------------------------------------


def parts(digest: str) -> list[str]:
    return digest.split("$")


def test_default_configuration_writes_argon2id_with_authelia_defaults() -> None:
    digest = hash_password(PASSWORD, PasswordConfig())
    _, name, version, params, salt, key = parts(digest)
    assert (name, version, params) == ("argon2id", "v=19", "m=65536,t=3,p=4")
    assert (len(b64decode(salt)), len(b64decode(key))) == (16, 32)
    assert argon2.PasswordHasher().verify(digest, PASSWORD)


@pytest.mark.parametrize("variant", ["argon2id", "argon2i", "argon2d"])
def test_argon2_hash_carries_configured_parameters_and_verifies_with_argon2_cffi(
    variant: str,
) -> None:
    config = PasswordConfig(
        argon2=Argon2Config(
            variant=variant,
            memory=1024,
            iterations=2,
            parallelism=2,
            key_length=48,
            salt_length=24,
        )
    )
    digest = hash_password(PASSWORD, config)
    _, name, _, params, salt, key = parts(digest)
    assert (name, params) == (variant, "m=1024,t=2,p=2")
    assert (len(b64decode(salt)), len(b64decode(key))) == (24, 48)
    assert argon2.PasswordHasher().verify(digest, PASSWORD)
    with pytest.raises(argon2.exceptions.VerifyMismatchError):
        argon2.PasswordHasher().verify(digest, WRONG)


@pytest.mark.parametrize(
    ("variant", "handler"), [("sha512", sha512_crypt), ("sha256", sha256_crypt)]
)
def test_sha2crypt_hash_carries_rounds_and_verifies_with_passlib(
    variant: str, handler: PasslibHandler
) -> None:
    config = PasswordConfig(
        algorithm="sha2crypt",
        sha2crypt=Sha2CryptConfig(variant=variant, iterations=1000, salt_length=12),
    )
    digest = hash_password(PASSWORD, config)
    _, ident, rounds, salt, _ = parts(digest)
    assert (ident, rounds, len(salt)) == ("6" if variant == "sha512" else "5", "rounds=1000", 12)
    assert handler.verify(PASSWORD, digest)
    assert not handler.verify(WRONG, digest)


@pytest.mark.parametrize("variant", ["sha1", "sha224", "sha256", "sha384", "sha512"])
def test_pbkdf2_hash_recomputes_with_hashlib(variant: str) -> None:
    config = PasswordConfig(
        algorithm="pbkdf2",
        pbkdf2=Pbkdf2Config(variant=variant, iterations=100_000, salt_length=20),
    )
    digest = hash_password(PASSWORD, config)
    _, ident, iterations, salt, key = parts(digest)
    assert ident == ("pbkdf2" if variant == "sha1" else f"pbkdf2-{variant}")
    assert iterations == "100000"
    assert re.fullmatch(r"[./A-Za-z0-9]+", salt + key)
    raw_salt = b64decode(salt)
    assert len(raw_salt) == 20
    expected = hashlib.pbkdf2_hmac(variant, PASSWORD.encode(), raw_salt, 100_000)
    assert b64decode(key) == expected


@pytest.mark.parametrize(
    ("variant", "handler"),
    [("sha1", pbkdf2_sha1), ("sha256", pbkdf2_sha256), ("sha512", pbkdf2_sha512)],
)
def test_pbkdf2_hash_verifies_with_passlib(variant: str, handler: PasslibHandler) -> None:
    config = PasswordConfig(
        algorithm="pbkdf2",
        pbkdf2=Pbkdf2Config(variant=variant, iterations=100_000),
    )
    digest = hash_password(PASSWORD, config)
    assert handler.verify(PASSWORD, digest)
    assert not handler.verify(WRONG, digest)


def test_bcrypt_hash_carries_cost_and_verifies_with_the_bcrypt_package() -> None:
    config = PasswordConfig(algorithm="bcrypt", bcrypt=BcryptConfig(cost=10))
    digest = hash_password(PASSWORD, config)
    assert digest.startswith("$2b$10$")
    assert bcrypt.checkpw(PASSWORD.encode(), digest.encode())
    assert not bcrypt.checkpw(WRONG.encode(), digest.encode())


def test_bcrypt_refuses_to_hash_a_password_longer_than_72_bytes() -> None:
    config = PasswordConfig(algorithm="bcrypt", bcrypt=BcryptConfig(cost=10))
    hash_password("é" * 36, config)  # 72 bytes exactly is fine
    with pytest.raises(ValueError, match="72 bytes"):
        hash_password("é" * 36 + "x", config)


def test_bcrypt_sha256_hash_verifies_with_passlib_even_beyond_72_bytes() -> None:
    config = PasswordConfig(algorithm="bcrypt", bcrypt=BcryptConfig(variant="sha256", cost=10))
    long_password = PASSWORD * 4
    digest = hash_password(long_password, config)
    assert digest.startswith("$bcrypt-sha256$v=2,t=2b,r=10$")
    assert bcrypt_sha256.verify(long_password, digest)
    assert not bcrypt_sha256.verify(long_password[:72], digest)


def test_scrypt_hash_carries_parameters_and_recomputes_with_hashlib() -> None:
    config = PasswordConfig(
        algorithm="scrypt",
        scrypt=ScryptConfig(
            iterations=10, block_size=4, parallelism=2, key_length=40, salt_length=24
        ),
    )
    digest = hash_password(PASSWORD, config)
    _, ident, params, salt, key = parts(digest)
    assert (ident, params) == ("scrypt", "ln=10,r=4,p=2")
    raw_salt = b64decode(salt)
    assert len(raw_salt) == 24
    expected = hashlib.scrypt(PASSWORD.encode(), salt=raw_salt, n=1024, r=4, p=2, dklen=40)
    assert b64decode(key) == expected


def test_scrypt_hash_with_authelia_defaults_verifies_with_passlib() -> None:
    digest = hash_password(PASSWORD, PasswordConfig(algorithm="scrypt"))
    assert parts(digest)[2] == "ln=16,r=8,p=1"
    assert scrypt.verify(PASSWORD, digest)
    assert not scrypt.verify(WRONG, digest)


@pytest.mark.parametrize(
    "config",
    [
        PasswordConfig(argon2=Argon2Config(memory=1024, iterations=1, parallelism=1)),
        PasswordConfig(algorithm="sha2crypt", sha2crypt=Sha2CryptConfig(iterations=1000)),
        PasswordConfig(algorithm="pbkdf2", pbkdf2=Pbkdf2Config(iterations=100_000)),
        PasswordConfig(algorithm="bcrypt", bcrypt=BcryptConfig(cost=10)),
        PasswordConfig(algorithm="bcrypt", bcrypt=BcryptConfig(variant="sha256", cost=10)),
        PasswordConfig(algorithm="scrypt", scrypt=ScryptConfig(iterations=10)),
    ],
    ids=["argon2", "sha2crypt", "pbkdf2", "bcrypt", "bcrypt-sha256", "scrypt"],
)
def test_every_written_hash_reads_back_and_has_a_fresh_salt(config: PasswordConfig) -> None:
    first, second = hash_password(PASSWORD, config), hash_password(PASSWORD, config)
    assert first != second
    assert_verifies(first)
    assert_verifies("{CRYPT}" + second)
