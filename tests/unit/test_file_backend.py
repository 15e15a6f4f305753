"""The YAML users file: Authelia's format, lookups, lockouts, atomic password writes, watching.

Every test works on a real file in tmp_path. The failed write is forced for real, even as root:
a child process lowers RLIMIT_FSIZE (with SIGXFSZ ignored) so writing the new file fails with
EFBIG exactly as a full disk would, while reading the old one still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from portal.config import (
    Argon2Config,
    BcryptConfig,
    FileBackendConfig,
    FileSearchConfig,
    PasswordConfig,
)
from portal.errors import PasswordWriteError, StartupCheckError
from portal.users.file import FileUserBackend
from portal.users.hashing import hash_password, verify_password
from tests.conftest import FIXTURES

REPO = Path(__file__).resolve().parents[2]
TEST_USERS = FIXTURES / "users.yml"
CHEAP = PasswordConfig(argon2=Argon2Config(memory=1024, iterations=1, parallelism=1))
LOGGER = "test.users.file"
WATCH_INTERVAL = 0.02


def cheap_hash(password: str) -> str:
    return hash_password(password, CHEAP)


def config(
    path: Path,
    *,
    email: bool = False,
    case_insensitive: bool = False,
    watch: bool = False,
    password: PasswordConfig = CHEAP,
) -> FileBackendConfig:
    return FileBackendConfig(
        path=path,
        watch=watch,
        search=FileSearchConfig(email=email, case_insensitive=case_insensitive),
        password=password,
    )


def backend_for(
    path: Path, *, email: bool = False, case_insensitive: bool = False, watch: bool = False
) -> FileUserBackend:
    return FileUserBackend(
        config(path, email=email, case_insensitive=case_insensitive, watch=watch),
        logger=logging.getLogger(LOGGER),
        watch_interval=WATCH_INTERVAL,
    )


async def started(
    path: Path, *, email: bool = False, case_insensitive: bool = False, watch: bool = False
) -> FileUserBackend:
    backend = backend_for(path, email=email, case_insensitive=case_insensitive, watch=watch)
    await backend.startup_check()
    return backend


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the condition never became true"
        await asyncio.sleep(WATCH_INTERVAL)


async def settle(intervals: int = 10) -> None:
    await asyncio.sleep(WATCH_INTERVAL * intervals)


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and text in r.getMessage()
    ]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


@pytest.fixture
def standalone(tmp_path: Path) -> Path:
    """The test users in Authelia's format (every password is `password`), writable."""
    target = tmp_path / "users.yml"
    shutil.copy(TEST_USERS, target)
    return target


@pytest.fixture
def old_hash() -> str:
    return cheap_hash("old password")


@pytest.fixture
def people(tmp_path: Path, old_hash: str) -> Path:
    """Users for lookups: mixed-case emails, a non-ASCII name, two users sharing an address."""
    path = tmp_path / "users.yml"
    path.write_text(
        f"""users:
  john:
    displayname: John Doe
    password: "{old_hash}"
    email: John.Doe@Example.com
    groups: [admins, dev]
  Straße:
    displayname: Street
    password: "{old_hash}"
    email: [strasse@example.com, second@example.com]
  fiona:
    password: "{old_hash}"
    email: shared@example.com
  frank:
    password: "{old_hash}"
    email: SHARED@example.com
  retired:
    displayname: Retired
    password: "{old_hash}"
    disabled: true
""",
        encoding="utf-8",
    )
    return path


# --- a file in Authelia's format (tests/compat reads Authelia's own) ------------------------


async def test_an_authelia_users_file_loads_and_john_signs_in(standalone: Path) -> None:
    backend = FileUserBackend(config(standalone, password=PasswordConfig()))
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


# --- lookups --------------------------------------------------------------------------------


async def test_lookup_is_by_exact_username_only_by_default(people: Path) -> None:
    backend = await started(people)
    john = await backend.get_user("john")
    assert john is not None and john.username == "john"
    assert await backend.get_user("John") is None
    assert await backend.get_user("John.Doe@Example.com") is None
    assert await backend.get_user("nobody") is None


async def test_email_search_matches_the_exact_address_when_case_sensitive(people: Path) -> None:
    backend = await started(people, email=True)
    by_email = await backend.get_user("John.Doe@Example.com")
    assert by_email is not None and by_email.username == "john"
    assert await backend.get_user("john.doe@example.com") is None
    second = await backend.get_user("second@example.com")
    assert second is not None and second.username == "Straße"
    shared = await backend.get_user("shared@example.com")
    assert shared is not None and shared.username == "fiona"


async def test_case_insensitive_search_returns_the_username_as_written_in_the_file(
    people: Path,
) -> None:
    backend = await started(people, email=True, case_insensitive=True)
    for identifier, username in [
        ("JOHN", "john"),
        ("john.doe@EXAMPLE.COM", "john"),
        ("STRASSE", "Straße"),  # casefold: ß is ss
        ("\ufb01ona", "fiona"),  # NFKC: the ﬁ ligature is f + i
    ]:
        user = await backend.get_user(identifier)
        assert user is not None and user.username == username, identifier
    assert await backend.check_password("JOHN", "old password") is True


async def test_case_insensitive_usernames_do_not_match_emails_unless_email_search_is_on(
    people: Path,
) -> None:
    backend = await started(people, case_insensitive=True)
    assert await backend.get_user("JOHN.DOE@example.com") is None
    john = await backend.get_user("JOHN")
    assert john is not None and john.username == "john"


async def test_an_email_address_shared_by_two_users_finds_nobody_and_is_logged(
    people: Path, logs: pytest.LogCaptureFixture
) -> None:
    backend = await started(people, email=True, case_insensitive=True)
    assert await backend.get_user("shared@example.com") is None
    [warning] = warnings_about(logs, "several users")
    assert "fiona" in warning and "frank" in warning


async def test_a_disabled_user_is_found_but_cannot_sign_in(people: Path) -> None:
    backend = await started(people)
    retired = await backend.get_user("retired")
    assert retired is not None and retired.disabled is True
    assert await backend.check_password("retired", "old password") is False


async def test_unknown_user_cannot_sign_in_and_has_no_password_state(people: Path) -> None:
    backend = await started(people)
    assert await backend.check_password("nobody", "old password") is False
    assert await backend.password_state("nobody") is None


# --- the same password in another Unicode form ------------------------------------------------

NFC = "Corr3ct-Horse-Battery-\u00c4\u00d6\u00dc"
NFD = unicodedata.normalize("NFD", NFC)  # "A" followed by U+0308, and so on
WIDE_LIGATURE = "\uff26\uff55\uff4c\uff4c-width \ufb01sh 42"  # NFKC: "Full-width fish 42"


class CountingVerifier:
    """The real verify_password, counting how often the backend calls it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, password: str, digest: str) -> bool:
        self.calls += 1
        return verify_password(password, digest)


async def test_a_password_set_in_one_unicode_form_is_accepted_in_the_other(people: Path) -> None:
    backend = await started(people)
    await backend.set_password("john", NFC)
    assert await backend.check_password("john", NFD) is True
    await backend.set_password("john", NFD)
    assert await backend.check_password("john", NFC) is True
    await backend.set_password("john", WIDE_LIGATURE)
    assert await backend.check_password("john", "Full-width fish 42") is True
    assert await backend.check_password("john", "Full-width fish 43") is False
    await backend.close()


async def test_a_new_hash_is_made_from_the_normalized_form(people: Path) -> None:
    backend = await started(people)
    await backend.set_password("john", NFD)
    digest = await backend.password_state("john")
    assert digest
    assert verify_password(NFC, digest) is True
    assert verify_password(NFD, digest) is False
    await backend.close()


async def test_a_hash_of_a_password_as_typed_before_normalization_still_accepts_it(
    tmp_path: Path,
) -> None:
    typed = {"nfd": NFD, "wide": WIDE_LIGATURE, "plain": "old password"}
    path = tmp_path / "users.yml"
    path.write_text(
        "users:\n"
        + "".join(f'  {name}:\n    password: "{cheap_hash(pw)}"\n' for name, pw in typed.items()),
        encoding="utf-8",
    )
    backend = await started(path)
    for name, password in typed.items():
        assert await backend.check_password(name, password) is True, name
        assert await backend.check_password(name, password + "!") is False, name
        assert await backend.check_password(name, "wrong password") is False, name
    await backend.close()


@pytest.mark.parametrize(
    ("typed", "verifications"),
    [
        ("wrong password", 1),
        ("wr\u00f6ng password", 1),  # already NFC: one form to try
        ("wro\u0308ng password", 2),  # NFD: normalized, then as typed
        ("wrong \ufb01sh", 2),  # a ligature NFKC changes
    ],
)
async def test_an_unknown_user_costs_as_many_verifications_as_a_known_one(
    people: Path, typed: str, verifications: int
) -> None:
    verifier = CountingVerifier()
    backend = FileUserBackend(config(people), verify=verifier)
    await backend.startup_check()

    async def count(username: str) -> int:
        before = verifier.calls
        assert await backend.check_password(username, typed) is False
        return verifier.calls - before

    assert [await count(u) for u in ("john", "nobody", "retired")] == [verifications] * 3
    await backend.close()


# --- broken entries and files ---------------------------------------------------------------


async def test_an_unreadable_hash_locks_out_only_that_user_and_is_logged_once(
    tmp_path: Path, old_hash: str, logs: pytest.LogCaptureFixture
) -> None:
    bad_hash = "$1$md5salt$0123456789abcdefghijkl"
    path = tmp_path / "users.yml"
    path.write_text(
        f"""users:
  john:
    password: "{old_hash}"
  bob:
    displayname: Bob
    password: "{bad_hash}"
    email: bob@example.com
  carol:
    displayname: Carol without a password
  dave: [not, a, mapping]
""",
        encoding="utf-8",
    )
    backend = await started(path)
    for _ in range(3):
        assert await backend.check_password("john", "old password") is True
        assert await backend.check_password("bob", "old password") is False
        assert await backend.check_password("carol", "") is False
    bob = await backend.get_user("bob")
    assert bob is not None and bob.email == "bob@example.com"
    assert await backend.get_user("dave") is None
    await backend.set_password("john", "new password")  # a new version of the file is loaded
    assert len(warnings_about(logs, "'bob'")) == 1
    assert len(warnings_about(logs, "'carol'")) == 1
    assert len(warnings_about(logs, "'dave'")) == 1
    assert not any("md5salt" in r.getMessage() for r in logs.records)


async def test_a_user_without_a_password_can_be_given_one(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    text = """users:
  carol:  # new starter
    displayname: Carol
    email: carol@example.com

  dan:
    displayname: Dan
"""
    path.write_text(text, encoding="utf-8")
    backend = await started(path)
    await backend.set_password("carol", "first password")
    digest = await backend.password_state("carol")
    assert digest
    expected = text.replace(
        "    displayname: Carol\n", f'    displayname: Carol\n    password: "{digest}"\n'
    )
    assert path.read_text(encoding="utf-8") == expected
    fresh = await started(path)
    assert await fresh.check_password("carol", "first password") is True


@pytest.mark.parametrize(
    "content",
    ["", "- a\n- list\n", "users: [a, b]\n", "people:\n  john: {}\n", "users: {john: [\n"],
    ids=["empty", "list", "users-not-a-mapping", "no-users-key", "invalid-yaml"],
)
async def test_a_file_that_is_not_a_users_mapping_fails_the_startup_check(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "users.yml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(StartupCheckError, match=str(path)):
        await backend_for(path).startup_check()


async def test_a_missing_file_fails_the_startup_check_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    with pytest.raises(StartupCheckError, match=f"{path}.*cannot be read"):
        await backend_for(path).startup_check()


async def test_a_duplicate_key_is_reported_without_quoting_the_hashes(
    tmp_path: Path, old_hash: str
) -> None:
    path = tmp_path / "users.yml"
    path.write_text(
        f'users:\n  john:\n    password: "{old_hash}"\n    password: "{old_hash}"\n',
        encoding="utf-8",
    )
    with pytest.raises(StartupCheckError, match="appears twice") as caught:
        await backend_for(path).startup_check()
    assert old_hash not in str(caught.value)
    assert old_hash.split("$")[-1] not in str(caught.value)


# --- writing passwords ----------------------------------------------------------------------


async def test_set_password_changes_only_that_users_hash_in_authelias_file(
    standalone: Path,
) -> None:
    standalone.chmod(0o640)
    before = standalone.read_text(encoding="utf-8")
    backend = await started(standalone)
    old_state = await backend.password_state("harry")
    await backend.set_password("harry", "a new password")
    new_state = await backend.password_state("harry")
    assert old_state and new_state and new_state != old_state
    assert new_state.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    before_lines = before.splitlines()
    after_lines = standalone.read_text(encoding="utf-8").splitlines()
    changed = [i for i, (a, b) in enumerate(zip(before_lines, after_lines, strict=True)) if a != b]
    assert len(changed) == 1
    line = changed[0]
    assert before_lines[line - 2] == "  harry:"
    assert after_lines[line] == before_lines[line].replace(old_state, new_state)
    assert stat.S_IMODE(standalone.stat().st_mode) == 0o640
    assert sorted(p.name for p in standalone.parent.iterdir()) == ["users.yml"]
    fresh = await started(standalone)
    assert await fresh.check_password("harry", "a new password") is True


async def test_set_password_keeps_comments_quoting_order_and_markers(
    tmp_path: Path, old_hash: str
) -> None:
    path = tmp_path / "users.yml"
    text = f"""---
# Managed by hand; the portal changes only passwords.
users:
    zed:   # listed first on purpose
        password: '{old_hash}'    # single-quoted
        displayname: "Zed"
        groups:
        -   ops
    amy:
        displayname: Amy
        password: {old_hash}
        email:
          - amy@example.com
...
"""
    path.write_text(text, encoding="utf-8")
    backend = await started(path)
    await backend.set_password("zed", "zed's new password")
    await backend.set_password("amy", "amy's new password")
    zed, amy = await backend.password_state("zed"), await backend.password_state("amy")
    assert zed and amy
    expected = text.replace(f"'{old_hash}'", f"'{zed}'").replace(f": {old_hash}\n", f": {amy}\n")
    assert path.read_text(encoding="utf-8") == expected


async def test_set_password_writes_the_configured_algorithm(standalone: Path) -> None:
    bcrypt_config = PasswordConfig(algorithm="bcrypt", bcrypt=BcryptConfig(cost=10))
    backend = FileUserBackend(config(standalone, password=bcrypt_config))
    await backend.startup_check()
    await backend.set_password("bob", "bob's new password")
    state = await backend.password_state("bob")
    assert state is not None and state.startswith("$2b$10$")
    assert state in standalone.read_text(encoding="utf-8")


async def test_set_password_keeps_edits_other_processes_made_meanwhile(
    people: Path, old_hash: str
) -> None:
    backend = await started(people)
    admin_edit = people.read_text(encoding="utf-8").replace("Street", "Street Renamed")
    people.write_text(admin_edit, encoding="utf-8")
    await backend.set_password("john", "new password")
    text = people.read_text(encoding="utf-8")
    assert "Street Renamed" in text
    straße = await backend.get_user("Straße")
    assert straße is not None and straße.display_name == "Street Renamed"


async def test_twenty_concurrent_changes_to_different_users_all_land(
    tmp_path: Path, old_hash: str
) -> None:
    path = tmp_path / "users.yml"
    names = [f"user{i:02d}" for i in range(20)]
    path.write_text(
        "users:\n"
        + "".join(f'  {n}:\n    displayname: "{n}"\n    password: "{old_hash}"\n' for n in names),
        encoding="utf-8",
    )
    backend = await started(path)
    await asyncio.gather(*(backend.set_password(n, f"new {n}") for n in names))
    fresh = await started(path)
    results = await asyncio.gather(*(fresh.check_password(n, f"new {n}") for n in names))
    assert all(results)
    assert await fresh.check_password("user07", "old password") is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.yml"]


async def test_concurrent_changes_to_one_user_leave_one_of_the_passwords(
    people: Path,
) -> None:
    backend = await started(people)
    candidates = [f"candidate {k}" for k in range(6)]
    await asyncio.gather(*(backend.set_password("john", c) for c in candidates))
    fresh = await started(people)
    on_disk = [c for c in candidates if await fresh.check_password("john", c)]
    in_memory = [c for c in candidates if await backend.check_password("john", c)]
    assert len(on_disk) == 1
    assert in_memory == on_disk


async def test_set_password_for_a_user_removed_from_the_file_meanwhile_fails_cleanly(
    people: Path,
) -> None:
    backend = await started(people)
    without_fiona = people.read_text(encoding="utf-8").replace("  fiona:\n", "  fiona2:\n")
    people.write_text(without_fiona, encoding="utf-8")
    with pytest.raises(PasswordWriteError, match="fiona"):
        await backend.set_password("fiona", "new password")
    assert people.read_text(encoding="utf-8") == without_fiona
    assert await backend.check_password("fiona", "old password") is True


async def test_set_password_into_a_file_that_became_invalid_fails_and_leaves_it(
    people: Path,
) -> None:
    backend = await started(people)
    broken = people.read_text(encoding="utf-8") + "  bad: [\n"
    people.write_text(broken, encoding="utf-8")
    with pytest.raises(PasswordWriteError, match="not valid YAML"):
        await backend.set_password("john", "new password")
    assert people.read_text(encoding="utf-8") == broken
    assert await backend.check_password("john", "old password") is True


async def test_set_password_through_a_symlink_updates_the_target_and_keeps_the_link(
    tmp_path: Path, standalone: Path
) -> None:
    link = tmp_path / "link.yml"
    link.symlink_to(standalone)
    backend = await started(link)
    await backend.set_password("james", "james's new password")
    assert link.is_symlink()
    assert await (await started(standalone)).check_password("james", "james's new password")


async def test_a_bcrypt_password_over_72_bytes_is_refused_and_nothing_changes(
    standalone: Path,
) -> None:
    before = standalone.read_bytes()
    bcrypt_config = PasswordConfig(algorithm="bcrypt", bcrypt=BcryptConfig(cost=10))
    backend = FileUserBackend(config(standalone, password=bcrypt_config))
    await backend.startup_check()
    with pytest.raises(PasswordWriteError, match="72 bytes"):
        await backend.set_password("bob", "x" * 73)
    assert standalone.read_bytes() == before


FAILING_WRITE = """
import asyncio, json, resource, signal, sys
from portal.config import Argon2Config, FileBackendConfig, PasswordConfig
from portal.errors import PasswordWriteError
from portal.users.file import FileUserBackend

async def main():
    cheap = PasswordConfig(argon2=Argon2Config(memory=1024, iterations=1, parallelism=1))
    backend = FileUserBackend(FileBackendConfig(path=sys.argv[1], password=cheap))
    await backend.startup_check()
    state = await backend.password_state("john")
    # Without SIGXFSZ the kernel would kill us; ignored, write() fails with EFBIG.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
    try:
        await backend.set_password("john", "new password")
        error = None
    except PasswordWriteError as exc:
        error = str(exc)
    print(json.dumps({
        "error": error,
        "old_works": await backend.check_password("john", "old password"),
        "new_works": await backend.check_password("john", "new password"),
        "state_kept": await backend.password_state("john") == state,
    }))

asyncio.run(main())
"""


def test_a_write_that_fails_halfway_leaves_the_old_file_and_password(people: Path) -> None:
    before = people.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    child = subprocess.run(
        [sys.executable, "-W", "error", "-c", FAILING_WRITE, str(people)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    outcome = json.loads(child.stdout)
    assert outcome["error"] is not None and "cannot write" in outcome["error"]
    assert outcome == {**outcome, "old_works": True, "new_works": False, "state_kept": True}
    assert people.read_bytes() == before
    assert sorted(p.name for p in people.parent.iterdir()) == ["users.yml"]


async def test_password_state_is_the_stored_hash_and_changes_with_the_password(
    people: Path, old_hash: str
) -> None:
    backend = await started(people)
    assert await backend.password_state("john") == old_hash
    await backend.set_password("john", "new password")
    state = await backend.password_state("john")
    assert state not in (None, old_hash)
    assert state in people.read_text(encoding="utf-8")


# --- never blocking the event loop ----------------------------------------------------------


async def test_the_event_loop_keeps_ticking_while_a_default_cost_password_is_set(
    standalone: Path,
) -> None:
    backend = FileUserBackend(config(standalone, password=PasswordConfig()))
    await backend.startup_check()
    started_at = time.perf_counter()
    hash_password("what blocking would cost", PasswordConfig())
    blocking = time.perf_counter() - started_at
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beating = asyncio.create_task(heartbeat())
    await backend.set_password("john", "a new password")
    done.set()
    await beating
    assert len(gaps) >= 10
    assert max(gaps) < blocking / 2, (max(gaps), blocking)


# --- watching -------------------------------------------------------------------------------


async def test_watch_picks_up_an_admin_edit(people: Path, old_hash: str) -> None:
    backend = await started(people, watch=True)
    with people.open("a", encoding="utf-8") as handle:
        handle.write(f'  newbie:\n    displayname: New\n    password: "{old_hash}"\n')

    async def newbie_known() -> bool:
        return await backend.get_user("newbie") is not None

    await eventually(newbie_known)
    assert await backend.check_password("newbie", "old password") is True
    await backend.close()


async def test_a_bad_edit_keeps_the_last_good_copy_and_is_logged_once(
    people: Path, logs: pytest.LogCaptureFixture
) -> None:
    backend = await started(people, watch=True)
    good = people.read_text(encoding="utf-8")
    people.write_text(good + "  broken: [\n", encoding="utf-8")

    async def complained() -> bool:
        return bool(warnings_about(logs, "not valid YAML"))

    await eventually(complained)
    await settle()
    assert len(warnings_about(logs, "not valid YAML")) == 1
    assert await backend.check_password("john", "old password") is True

    people.write_text(good + "  broken: {\n", encoding="utf-8")  # a second, different bad version

    async def complained_twice() -> bool:
        return len(warnings_about(logs, "not valid YAML")) == 2

    await eventually(complained_twice)
    people.write_text(good.replace("John Doe", "John Fixed"), encoding="utf-8")

    async def fixed() -> bool:
        john = await backend.get_user("john")
        return john is not None and john.display_name == "John Fixed"

    await eventually(fixed)
    assert len(warnings_about(logs, "not valid YAML")) == 2
    await backend.close()


async def test_watch_is_not_confused_by_the_backends_own_writes(
    people: Path, logs: pytest.LogCaptureFixture
) -> None:
    backend = await started(people, watch=True)
    for k in range(3):
        await backend.set_password("john", f"new password {k}")
        await settle(3)
    await settle()
    assert warnings_about(logs, "") == []
    assert not [r for r in logs.records if "reloaded" in r.getMessage()]
    assert await backend.check_password("john", "new password 2") is True
    await backend.close()


async def test_close_stops_watching(people: Path, old_hash: str) -> None:
    backend = await started(people, watch=True)
    await backend.close()
    with people.open("a", encoding="utf-8") as handle:
        handle.write(f'  newbie:\n    password: "{old_hash}"\n')
    await settle()
    assert await backend.get_user("newbie") is None


async def test_an_unknown_or_disabled_user_costs_a_verification_of_a_stored_hash(
    tmp_path: Path,
) -> None:
    # Hashes made before the configuration changed (costlier than the configured settings): a
    # decoy made with the configuration would be cheaper and tell who exists, a stored one not.
    costly = PasswordConfig(argon2=Argon2Config(memory=8192, iterations=8, parallelism=1))
    digests = {"john": hash_password("old password", costly), "jane": cheap_hash("another")}
    path = tmp_path / "users.yml"
    path.write_text(
        f'users:\n  john:\n    password: "{digests["john"]}"\n'
        f'  jane:\n    password: "{digests["jane"]}"\n'
        f'  retired:\n    password: "{digests["john"]}"\n    disabled: true\n',
        encoding="utf-8",
    )
    verified: list[str] = []

    def verify(password: str, digest: str) -> bool:
        verified.append(digest)
        return verify_password(password, digest)

    backend = FileUserBackend(config(path), verify=verify)
    await backend.startup_check()
    for username in ("nobody", "retired") * 10:
        verified.clear()
        assert await backend.check_password(username, "old password") is False
        [decoy] = verified
        assert decoy in digests.values(), username
    await backend.close()


async def test_an_unknown_user_costs_a_hash_of_the_current_file_after_a_password_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.yml"
    path.write_text(f'users:\n  john:\n    password: "{cheap_hash("old")}"\n', encoding="utf-8")
    verified: list[str] = []

    def verify(password: str, digest: str) -> bool:
        verified.append(digest)
        return verify_password(password, digest)

    backend = FileUserBackend(config(path), verify=verify)
    await backend.startup_check()
    assert await backend.check_password("nobody", "x") is False
    old = await backend.password_state("john")
    assert verified == [old]
    await backend.set_password("john", "a new password")
    verified.clear()
    assert await backend.check_password("nobody", "x") is False
    assert verified == [await backend.password_state("john")] != [old]
    await backend.close()


async def test_a_caller_cancelled_mid_write_leaves_memory_and_file_in_agreement(
    tmp_path: Path, old_hash: str
) -> None:
    path = tmp_path / "users.yml"
    path.write_text(  # big enough that rewriting it takes a while
        "users:\n"
        + "".join(
            f'  user{i}:\n    displayname: "User {i}"\n    password: "{old_hash}"\n'
            f"    email: user{i}@example.com\n    groups: [staff]\n"
            for i in range(300)
        ),
        encoding="utf-8",
    )
    backend = await started(path)
    caller = asyncio.create_task(backend.set_password("user0", "new password"))
    await asyncio.sleep(0.1)  # hashing is long done; the file is being rewritten
    caller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await caller
    await backend.close()
    # Wait for every worker thread, so a write still running behind our back would show now.
    await asyncio.get_running_loop().shutdown_default_executor()
    on_disk = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    assert await backend.password_state("user0") == on_disk["users"]["user0"]["password"]


async def test_giving_a_password_in_authelias_layout_keeps_the_rest_of_the_file(
    standalone: Path,
) -> None:
    lines = standalone.read_text(encoding="utf-8").splitlines(keepends=True)
    harry = lines.index("  harry:\n")
    assert lines[harry + 2].startswith("    password: ")
    del lines[harry + 2]
    standalone.write_text("".join(lines), encoding="utf-8")
    backend = await started(standalone)
    assert await backend.password_state("harry") == ""
    await backend.set_password("harry", "harry's first password")
    digest = await backend.password_state("harry")
    lines.insert(harry + 2, f'    password: "{digest}"\n')
    assert standalone.read_text(encoding="utf-8") == "".join(lines)
