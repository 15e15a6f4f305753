"""The hashing queue (issue 19): at most `concurrency` hashes at once, first come first served,
for known and unknown users alike, in threads of its own; password_hashing.concurrency sets it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from argon2 import PasswordHasher
from ruamel.yaml import YAML

from portal.app import create_app
from portal.config import Argon2Config, FileBackendConfig, read_config
from portal.deps import (
    Dependencies,
    build_dependencies,
    notifier_from_config,
    storage_from_config,
    users_from_config,
)
from portal.errors import BackendUnavailableError, ConfigError, HashingBusyError
from portal.keys import QUESTIONS, STORAGE, USERS
from portal.password_hashing import WAITING_PER_THREAD, HashingQueue, default_concurrency
from portal.security_questions import Argon2AnswerHasher
from portal.users.file import FileUserBackend
from portal.users.hashing import verify_password
from tests.conftest import ConfigFactory, FakeClock, deep_merge, minimal_raw

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
SETTLE = 0.2  # seconds a call that could run gets to run before we look


async def blocked(queue: HashingQueue) -> tuple[threading.Event, asyncio.Task[bool]]:
    """Occupy one of the queue's workers until the returned gate is set."""
    gate = threading.Event()
    task = asyncio.create_task(queue.run(gate.wait, 10))
    await asyncio.sleep(0)  # the call is in the queue before anything queued after it
    return gate, task


# --- the queue on its own ----------------------------------------------------------------------


async def test_past_its_waiting_line_the_queue_answers_busy_at_once_and_recovers() -> None:
    """A flood of sign-ins (any names, banned or not) cannot make everyone wait without end:
    past `waiting` calls in line the next is refused at once with a 503 and Retry-After, the
    same for everyone, and the queue takes calls again as soon as the line shortens."""
    queue = HashingQueue(1, waiting=3)
    gate, first = await blocked(queue)
    waiting = [asyncio.create_task(queue.run(lambda: True)) for _ in range(3)]
    await asyncio.sleep(SETTLE)
    with pytest.raises(HashingBusyError) as refused:
        await queue.run(lambda: True)
    assert isinstance(refused.value, BackendUnavailableError)
    assert refused.value.status == 503
    assert int(refused.value.response_headers()["Retry-After"]) >= 1
    gate.set()
    assert await first and all(await asyncio.gather(*waiting))
    assert await queue.run(lambda: True)  # the line is empty again: accepted


async def test_a_cancelled_caller_leaves_the_waiting_line() -> None:
    queue = HashingQueue(1, waiting=1)
    gate, first = await blocked(queue)
    gone = asyncio.create_task(queue.run(lambda: True))
    await asyncio.sleep(SETTLE)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    third = asyncio.create_task(queue.run(lambda: True))  # takes the place the cancelled left
    gate.set()
    assert await first and await third


def test_the_default_waiting_line_is_sized_per_thread() -> None:
    assert HashingQueue(2).waiting == 2 * WAITING_PER_THREAD
    with pytest.raises(ValueError, match="waiting"):
        HashingQueue(1, waiting=0)


async def test_with_concurrency_one_a_second_hash_waits_for_the_first() -> None:
    queue = HashingQueue(1)
    gate, first = await blocked(queue)
    ran = threading.Event()
    second = asyncio.create_task(queue.run(ran.set))
    await asyncio.sleep(SETTLE)
    assert not ran.is_set() and not second.done()
    gate.set()
    assert await first
    await second
    assert ran.is_set()


async def test_with_concurrency_two_two_hashes_run_at_once() -> None:
    queue = HashingQueue(2)
    both = threading.Barrier(2, timeout=10)  # broken (an error) unless two run together
    assert sorted(await asyncio.gather(queue.run(both.wait), queue.run(both.wait))) == [0, 1]


async def test_waiting_hashes_run_in_the_order_they_came() -> None:
    queue = HashingQueue(1)
    gate, first = await blocked(queue)
    order: list[int] = []
    waiting = [asyncio.create_task(queue.run(order.append, i)) for i in range(6)]
    await asyncio.sleep(SETTLE)
    assert order == []
    gate.set()
    await asyncio.gather(first, *waiting)
    assert order == [0, 1, 2, 3, 4, 5]


async def test_a_caller_that_goes_away_leaves_the_queue_without_its_hash() -> None:
    queue = HashingQueue(1)
    gate, first = await blocked(queue)
    ran = threading.Event()
    gone = asyncio.create_task(queue.run(ran.set))
    await asyncio.sleep(0)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    await asyncio.sleep(0)  # the cancellation reaches the executor's queue
    gate.set()
    await first
    await queue.run(lambda: None)  # everything queued before this has had its turn
    assert not ran.is_set()


async def test_an_error_in_a_hash_reaches_its_caller_and_the_queue_goes_on() -> None:
    queue = HashingQueue(1)

    def broken() -> None:
        raise ValueError("argon2 could not hash with these parameters")

    with pytest.raises(ValueError, match="could not hash"):
        await queue.run(broken)
    assert await queue.run(lambda: 42) == 42


@pytest.mark.parametrize(
    ("cpus", "expected"), [(1, 1), (2, 1), (3, 1), (4, 2), (6, 3), (8, 4), (64, 4)]
)
def test_the_default_is_half_the_cpus_at_least_one_at_most_four(cpus: int, expected: int) -> None:
    assert default_concurrency(cpus) == expected


# --- known and unknown users, security answers -------------------------------------------------


def users(tmp_path: Path) -> Path:
    """A users file with john (password 'john-password') and a disabled user, cheap hashes."""
    path = tmp_path / "users.yml"
    people = {
        "john": {"displayname": "John", "password": CHEAP.hash("john-password")},
        "old": {"displayname": "Old", "password": CHEAP.hash("x"), "disabled": True},
    }
    YAML(typ="safe", pure=True).dump({"users": people}, path)
    return path


async def test_known_and_unknown_users_wait_in_the_same_queue_in_arrival_order(
    tmp_path: Path,
) -> None:
    queue = HashingQueue(1)
    checked: list[str] = []

    def verify(password: str, digest: str) -> bool:
        checked.append(password)
        return verify_password(password, digest)

    backend = FileUserBackend(FileBackendConfig(path=users(tmp_path)), verify=verify, hashing=queue)
    await backend.startup_check()
    gate, first = await blocked(queue)
    calls = [
        ("nobody", "p1"),  # unknown: a stored hash is verified instead
        ("john", "john-password"),
        ("old", "p3"),  # disabled: the same
        ("john", "p4"),
    ]
    tasks = [asyncio.create_task(backend.check_password(name, pw)) for name, pw in calls]
    await asyncio.sleep(SETTLE)
    assert checked == [] and not any(task.done() for task in tasks)
    gate.set()
    await first
    assert await asyncio.gather(*tasks) == [False, True, False, False]
    assert checked == ["p1", "john-password", "p3", "p4"]
    await backend.close()


async def test_a_new_password_is_hashed_in_the_queue(tmp_path: Path) -> None:
    queue = HashingQueue(1)
    backend = FileUserBackend(FileBackendConfig(path=users(tmp_path)), hashing=queue)
    await backend.startup_check()
    gate, first = await blocked(queue)
    write = asyncio.create_task(backend.set_password("john", "a new password"))
    await asyncio.sleep(SETTLE)
    assert not write.done()
    gate.set()
    await asyncio.gather(first, write)
    assert await backend.check_password("john", "a new password")
    await backend.close()


@pytest.fixture
async def questions_app(
    make_config: ConfigFactory, tmp_path: Path
) -> AsyncIterator[tuple[web.Application, HashingQueue]]:
    """A started application with security questions on, hashing in a queue of one."""
    config = make_config(
        authentication_backend={"file": {"path": str(users(tmp_path))}},
        identity_validation={"reset_password": {"security_questions": {"enabled": True}}},
    )
    queue = HashingQueue(1)
    deps = Dependencies(
        users=users_from_config(config),
        storage=storage_from_config(config),
        notifier=notifier_from_config(config),
        clock=FakeClock(),
        answer_hasher=Argon2AnswerHasher(Argon2Config(memory=1024, iterations=1, parallelism=1)),
        hashing=queue,
    )
    application = create_app(config, deps)
    await application[STORAGE].startup_check()
    await application[USERS].startup_check()
    yield application, queue
    await application[USERS].close()
    await application[STORAGE].close()


@pytest.mark.parametrize("identifier", ["john", "nobody"])
async def test_security_answers_are_verified_in_the_queue_for_everyone(
    questions_app: tuple[web.Application, HashingQueue], identifier: str
) -> None:
    app, queue = questions_app
    service = app[QUESTIONS]
    gate, first = await blocked(queue)
    answers = ["wrong"] * service.settings.asked
    answer = asyncio.create_task(service.answer(identifier, answers, "192.0.2.7"))
    await asyncio.sleep(SETTLE)
    assert not answer.done()
    gate.set()
    await asyncio.gather(first, answer)


# --- password_hashing.concurrency ---------------------------------------------------------------


def configured(tmp_path: Path, environ: dict[str, str] | None = None, **changes: Any) -> Any:
    path = tmp_path / "configuration.yml"
    YAML(typ="safe", pure=True).dump(deep_merge(minimal_raw(tmp_path), changes), path)
    return read_config([path], environ or {})[0]


def test_unset_the_portal_sizes_the_queue_to_the_machine(tmp_path: Path) -> None:
    assert configured(tmp_path).password_hashing.concurrency is None


def test_an_admin_sets_the_concurrency_in_the_file_or_the_environment(tmp_path: Path) -> None:
    assert (
        configured(tmp_path, password_hashing={"concurrency": 3}).password_hashing.concurrency == 3
    )
    environ = {"PORTAL_PASSWORD_HASHING_CONCURRENCY": "2"}
    assert configured(tmp_path, environ).password_hashing.concurrency == 2


@pytest.mark.parametrize("value", [0, -1, 65, "many", True, 1.5, ""])
def test_a_bad_concurrency_is_refused_at_start_up_with_a_clear_message(
    tmp_path: Path, value: object
) -> None:
    with pytest.raises(ConfigError) as caught:
        configured(tmp_path, password_hashing={"concurrency": value})
    assert caught.value.problems == [
        "password_hashing.concurrency: must be a whole number from 1 to 64 (how many hashes run "
        f"at once; leave it unset for this machine's default, {default_concurrency()})"
    ]


async def test_the_configured_concurrency_is_the_one_sign_ins_wait_in(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(
        authentication_backend={"file": {"path": str(users(tmp_path))}},
        password_hashing={"concurrency": 3},
    )
    deps = build_dependencies(config)
    assert deps.hashing.concurrency == 3
    await deps.users.startup_check()
    gates = [await blocked(deps.hashing) for _ in range(3)]
    check = asyncio.create_task(deps.users.check_password("john", "john-password"))
    await asyncio.sleep(SETTLE)
    assert not check.done()  # the users backend waits in the very queue the setting sized
    for gate, _ in gates:
        gate.set()
    await asyncio.gather(*(task for _, task in gates))
    assert await check
    await deps.users.close()
