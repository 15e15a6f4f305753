"""argon2 computed with all its lanes in one thread (issue 19, goal 3): the same hashes as
argon2-cffi both ways, the reference implementation's known answers, and one thread per hash.

argon2-cffi's PasswordHasher runs a hash with p lanes as p OS threads; the portal computes the
same lanes in the calling thread (RFC 9106 section 3.1: lanes are a parameter of the hash, threads
are not), so that a sign-in's hash leaves the other cores to the event loop.
"""

from __future__ import annotations

import base64
import os
import sys
import threading
import time
from collections.abc import Callable

import argon2
import pytest
from argon2.exceptions import VerificationError, VerifyMismatchError
from argon2.low_level import Type, hash_secret

from portal.config import Argon2Config, PasswordConfig
from portal.errors import UnsupportedHashError
from portal.users.hashing import hash_password, is_supported, verify_password

PASSWORD = "correct horse battery stäple"
WRONG = "correct horse battery staple"
KINDS = {"argon2id": Type.ID, "argon2i": Type.I, "argon2d": Type.D}

# Known answers from the argon2 reference implementation's own tests (P-H-C/phc-winner-argon2,
# src/test.c: password "password", salt "somesalt", no secret, no associated data), and the
# argon2d example of argon2-cffi's API documentation (password "secret").
REFERENCE = [
    (
        "password",
        "$argon2i$v=19$m=256,t=2,p=2$c29tZXNhbHQ$T/XOJ2mh1/TIpJHfCdQan76Q5esCFVoT5MAeIM1Oq2E",
    ),
    (
        "password",
        "$argon2id$v=19$m=256,t=2,p=2$c29tZXNhbHQ$bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc",
    ),
    (
        "password",
        "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
    ),
    # version 1.0 (0x10): the reference writes no v= for it
    (
        "password",
        "$argon2i$m=256,t=2,p=2$c29tZXNhbHQ$tsEVYKap1h6scGt5ovl9aLRGOqOth+AMB+KwHpDFZPs",
    ),
    (
        "password",
        "$argon2i$m=65536,t=2,p=1$c29tZXNhbHQ$9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ",
    ),
    (
        "secret",
        "$argon2d$v=19$m=8,t=1,p=1$c29tZXNhbHQ$ba2qC75j0+JAunZZ/L0hZdQgCv+tOieBuKKXSrQiWm7nlkRcK+"
        "YqWr0i0m0WABJKelU8qHJp0SZzH0b1Z+ITvQ",
    ),
]


def config(variant: str = "argon2id", /, **settings: int) -> PasswordConfig:
    """A cheap argon2 configuration (1 MiB, 1 iteration, 4 lanes unless given)."""
    values = {"memory": 1024, "iterations": 1, "parallelism": 4, **settings}
    return PasswordConfig(argon2=Argon2Config(variant=variant, **values))


def b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


# --- known answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "digest"), REFERENCE, ids=[digest.rsplit("$", 2)[0] for _, digest in REFERENCE]
)
def test_reference_vectors_verify_and_a_different_password_does_not(
    password: str, digest: str
) -> None:
    assert verify_password(password, digest) is True
    assert verify_password("different" + password, digest) is False
    assert verify_password(password, "{CRYPT}" + digest) is True


def test_one_changed_bit_of_a_reference_tag_no_longer_verifies() -> None:
    """The comparison covers the whole tag, not a prefix."""
    _, digest = REFERENCE[1]
    head, tag = digest.rsplit("$", 1)
    raw = bytearray(b64decode(tag))
    raw[-1] ^= 1
    changed = head + "$" + base64.b64encode(bytes(raw)).decode().rstrip("=")
    assert verify_password("password", changed) is False


# --- argon2-cffi's hashes verify here -------------------------------------------------------


@pytest.mark.parametrize("parallelism", [1, 2, 4])
@pytest.mark.parametrize("variant", sorted(KINDS))
def test_hashes_from_argon2_cffi_verify(variant: str, parallelism: int) -> None:
    hasher = argon2.PasswordHasher(
        memory_cost=1024, time_cost=2, parallelism=parallelism, type=KINDS[variant]
    )
    digest = hasher.hash(PASSWORD)
    assert digest.startswith(f"${variant}$v=19$m=1024,t=2,p={parallelism}$")
    assert verify_password(PASSWORD, digest) is True
    assert verify_password(WRONG, digest) is False
    assert is_supported(digest)


@pytest.mark.parametrize("drop_version", [False, True], ids=["v=16", "no v="])
def test_version_16_hashes_from_argon2_cffi_verify(drop_version: bool) -> None:
    """argon2-cffi makes version 1.0 hashes (v=16) and reads them without v= as version 1.0 too."""
    raw = hash_secret(PASSWORD.encode(), b"saltsaltsalt", 2, 1024, 4, 32, Type.ID, version=16)
    digest = raw.decode()
    assert "$v=16$" in digest
    if drop_version:
        digest = digest.replace("$v=16", "")
    assert argon2.PasswordHasher().verify(digest, PASSWORD)
    assert verify_password(PASSWORD, digest) is True
    assert verify_password(WRONG, digest) is False
    # the same salt and parameters at version 1.3 give another tag: the version is not ignored
    as_version_19 = digest.replace("$v=16", "").replace("$m=", "$v=19$m=", 1)
    assert verify_password(PASSWORD, as_version_19) is False


# --- the portal's hashes verify with argon2-cffi --------------------------------------------


@pytest.mark.parametrize("parallelism", [1, 2, 4])
@pytest.mark.parametrize("variant", sorted(KINDS))
def test_new_hashes_verify_with_argon2_cffi_and_are_its_exact_string(
    variant: str, parallelism: int
) -> None:
    digest = hash_password(PASSWORD, config(variant, parallelism=parallelism, iterations=2))
    assert argon2.PasswordHasher().verify(digest, PASSWORD)
    with pytest.raises(VerifyMismatchError):
        argon2.PasswordHasher().verify(digest, WRONG)
    # argon2-cffi (one thread per lane) writes the very same string from the same salt
    salt = b64decode(digest.split("$")[4])
    assert len(salt) == 16
    theirs = hash_secret(PASSWORD.encode(), salt, 2, 1024, parallelism, 32, KINDS[variant])
    assert digest == theirs.decode("ascii")


def test_new_hash_has_argon2_cffi_format_at_authelia_defaults() -> None:
    digest = hash_password(PASSWORD, PasswordConfig())
    theirs = argon2.PasswordHasher().hash(PASSWORD)
    ours_parts, their_parts = digest.split("$"), theirs.split("$")
    assert ours_parts[:4] == their_parts[:4] == ["", "argon2id", "v=19", "m=65536,t=3,p=4"]
    assert [len(p) for p in ours_parts[4:]] == [len(p) for p in their_parts[4:]] == [22, 43]
    assert argon2.PasswordHasher().verify(digest, PASSWORD)


def test_an_empty_password_hashes_and_verifies_both_ways() -> None:
    """The empty secret is a zero-length cffi buffer: argon2 takes it as argon2-cffi does."""
    theirs = argon2.PasswordHasher(memory_cost=1024, time_cost=1).hash("")
    assert verify_password("", theirs) is True
    assert verify_password(" ", theirs) is False
    ours = hash_password("", config())
    assert argon2.PasswordHasher().verify(ours, "")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"memory": 16, "parallelism": 4}, "8 KiB per lane"),
        ({"memory": 2**32}, "below 2\\*\\*32"),
        ({"iterations": 2**32}, "below 2\\*\\*32"),
    ],
)
def test_impossible_parameters_raise_value_error(settings: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hash_password(PASSWORD, config(**settings))


# --- what argon2-cffi refuses, the portal refuses before computing --------------------------

GOOD = "$argon2id$v=19$m=256,t=2,p=2$c29tZXNhbHQ$bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc"
MALFORMED = {
    "padded salt": GOOD.replace("c29tZXNhbHQ$", "c29tZXNhbHQ=$"),
    "unused salt bits set": GOOD.replace("c29tZXNhbHQ$", "c29tZXNhbHR$"),
    "unused tag bits set": GOOD[:-1] + "d",
    "leading zero": GOOD.replace("m=256", "m=0256"),
    "memory over 2**32": GOOD.replace("m=256", "m=4294967296"),
    "memory under 8 KiB per lane": GOOD.replace("m=256", "m=8"),
    "no lanes": GOOD.replace("p=2", "p=0"),
    "too many lanes": GOOD.replace("m=256", "m=4294967295").replace("p=2", "p=16777216"),
    "salt under 8 bytes": GOOD.replace("c29tZXNhbHQ", "c29tZXNh"),
    "tag under 4 bytes": GOOD.rsplit("$", 1)[0] + "$YWJj",
    "non-ASCII digit": GOOD.replace("t=2", "t=\uff12"),
}


@pytest.mark.parametrize("digest", MALFORMED.values(), ids=MALFORMED.keys())
def test_hashes_argon2_cffi_refuses_are_unsupported_without_echoing_them(digest: str) -> None:
    with pytest.raises((VerificationError, ValueError)):  # InvalidHashError, UnicodeError
        argon2.PasswordHasher().verify(digest, "password")
    assert is_supported(digest) is False
    with pytest.raises(UnsupportedHashError, match="unsupported") as caught:
        verify_password("password", digest)
    for part in (p for p in digest.split("$")[2:] if len(p) >= 8):
        assert part not in str(caught.value)


# --- one thread per hash --------------------------------------------------------------------


def most_threads_during(work: Callable[[], object]) -> tuple[int, int]:
    """Run work in a new thread; return (threads before, most threads seen while it ran),
    counting this process's tasks in /proc every millisecond."""
    before = len(os.listdir("/proc/self/task"))
    worker = threading.Thread(target=work)
    most, samples = before, 0
    worker.start()
    while worker.is_alive():
        most = max(most, len(os.listdir("/proc/self/task")))
        samples += 1
        time.sleep(0.001)
    worker.join()
    assert samples >= 20, "the hash was too quick to sample: give it more memory"
    return before, most


# 32 MiB, 3 iterations, 4 lanes: well over 100 ms in one thread on this kind of machine.
SLOW = {"memory": 32768, "iterations": 3, "parallelism": 4}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_argon2_cffi_runs_a_4_lane_hash_on_more_than_one_thread() -> None:
    """The sampler sees argon2-cffi's lane threads, so the next test can fail."""
    hasher = argon2.PasswordHasher(
        memory_cost=SLOW["memory"], time_cost=SLOW["iterations"], parallelism=4
    )
    before, most = most_threads_during(lambda: hasher.hash(PASSWORD))
    assert most - before > 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_a_4_lane_hash_and_its_verification_each_run_on_the_calling_thread_only() -> None:
    results: list[str] = []
    before, most = most_threads_during(
        lambda: results.append(hash_password(PASSWORD, config(**SLOW)))
    )
    assert most - before <= 1
    assert results[0].startswith("$argon2id$v=19$m=32768,t=3,p=4$")
    verified: list[bool] = []
    before, most = most_threads_during(
        lambda: verified.append(verify_password(PASSWORD, results[0]))
    )
    assert most - before <= 1
    assert verified == [True]
