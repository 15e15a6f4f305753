"""The reset-mail job: whoever was typed, the worker does the same work; only real mail goes out.

The job runs on the event loop right after the requester's answer, so whatever it does more for
an existing user than for an unknown one slows the next request and tells that the account
exists. These stories record, in order, every call the job makes to the user backend, the storage
and the notifier (each one a round trip the event loop waits on), and compare them; the same for
the answers to security questions, which queue the job.
"""

from __future__ import annotations

import asyncio
import email.message
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from portal.app import create_app
from portal.config import DEFAULT_QUESTIONS, Argon2Config
from portal.deps import Dependencies, users_from_config
from portal.errors import PasswordWriteError, StorageUnavailableError
from portal.keys import OUTBOX, QUESTIONS, RESET
from portal.notify.outbox import OutboxWorker
from portal.reset import PasswordResetService
from portal.security_questions import Argon2AnswerHasher, SecurityQuestionsService
from portal.storage.sqlite import SqliteStorage
from tests.conftest import ConfigFactory, FakeClock

IP = "192.0.2.7"
CHEAP_ARGON2 = Argon2Config(memory=1024, iterations=1, parallelism=1)
ROOMY = {"buckets": [{"period": "10 minutes", "requests": 1000}]}
# John's questions: the first three default ones.
JOHNS_ANSWERS = {
    DEFAULT_QUESTIONS[0]: "Mister Fluffy",
    DEFAULT_QUESTIONS[1]: "The Beatles",
    DEFAULT_QUESTIONS[2]: "Pancakes with syrup",
}
# What a decoy does instead of what a real mail needs: the same round trip, nothing delivered
# and no link recorded.
STAND_INS = {
    "notifier.send": "notifier.rehearse",
    "storage.save_identity_verification": "storage.revoke_identity_verification",
}


class Recorder:
    """Pass every call through to a backend, noting `role.method` in a shared list first."""

    def __init__(self, role: str, backend: Any, calls: list[str]) -> None:
        self._role = role
        self._backend = backend
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._backend, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(f"{self._role}.{name}")
            return attribute(*args, **kwargs)

        return call


class RecordingNotifier:
    """A notifier that keeps what it is asked to send or to rehearse, and delivers nothing."""

    def __init__(self, calls: list[str]) -> None:
        self._calls = calls
        self.sent: list[email.message.EmailMessage] = []
        self.rehearsed: list[email.message.EmailMessage] = []

    async def startup_check(self) -> None:
        """Nothing to check."""

    async def send(self, message: email.message.EmailMessage) -> None:
        """Keep the message as delivered."""
        self._calls.append("notifier.send")
        self.sent.append(message)

    async def rehearse(self, message: email.message.EmailMessage) -> None:
        """Keep the message as rehearsed."""
        self._calls.append("notifier.rehearse")
        self.rehearsed.append(message)

    async def close(self) -> None:
        """Nothing to release."""


@dataclass
class Worker:
    """The reset service and its outbox worker (not started: the story runs it), and records."""

    reset: PasswordResetService
    questions: SecurityQuestionsService
    outbox: OutboxWorker
    calls: list[str]
    notifier: RecordingNotifier

    async def work_for(self, identifier: str) -> list[str]:
        """Ask for a link, then run the job it queued; return the calls the job made."""
        await self.reset.queue_link(identifier, IP)
        self.calls.clear()
        assert await self.outbox.run_once() == 1
        return list(self.calls)

    async def work_for_answers(self, identifier: str, answers: list[str] | None) -> list[str]:
        """Answer the questions (None: john's right answers), then run the job queued.

        Return the calls the answer and the job made.
        """
        asked = await self.questions.questions_for(identifier)
        self.calls.clear()
        given = [JOHNS_ANSWERS[q] for q in asked] if answers is None else answers
        await self.questions.answer(identifier, given, IP)
        assert await self.outbox.run_once() == 1, "every answer queues the job"
        return list(self.calls)


@pytest.fixture
async def worker(
    make_config: ConfigFactory, users_file: Path, storage: SqliteStorage, clock: FakeClock
) -> AsyncIterator[Worker]:
    """A portal on the demo users (ghost disabled, james without an address), calls recorded."""
    text = users_file.read_text().replace("    email: james.dean@authelia.com\n", "")
    users_file.write_text(
        text.replace("...\n", "")
        + "  ghost:\n    displayname: Ghost\n    password: x\n    disabled: true\n"
        "    email: ghost@example.com\n"
    )
    config = make_config(
        authentication_backend={
            "file": {"path": str(users_file), "search": {"email": True, "case_insensitive": True}}
        },
        identity_validation={"reset_password": {"security_questions": {"enabled": True}}},
        # Every story asks from one address; the limits per address have their own tests.
        server={"endpoints": {"rate_limits": {"reset_password_start": ROOMY}}},
    )
    users = users_from_config(config)
    await users.startup_check()
    calls: list[str] = []
    notifier = RecordingNotifier(calls)
    deps = Dependencies(
        users=Recorder("users", users, calls),
        storage=Recorder("storage", storage, calls),
        notifier=notifier,
        clock=clock,
        answer_hasher=Argon2AnswerHasher(CHEAP_ARGON2),
    )
    app = create_app(config, deps)
    yield Worker(app[RESET], app[QUESTIONS], app[OUTBOX], calls, notifier)
    await users.close()


def as_a_decoy(calls: list[str]) -> list[str]:
    """Return the calls a decoy makes for these real ones."""
    return [STAND_INS.get(call, call) for call in calls]


def shape(message: email.message.EmailMessage) -> list[object]:
    """Return what a mail is made of, without what it says."""
    return [sorted(message.keys()), [part.get_content_type() for part in message.walk()]]


@pytest.mark.parametrize("identifier", ["nobody-here", "ghost", "james"])
async def test_the_worker_does_the_same_work_for_anyone_as_for_john_but_sends_nothing(
    worker: Worker, identifier: str
) -> None:
    for_john = await worker.work_for("john")
    for_them = await worker.work_for(identifier)

    assert for_john.count("notifier.send") == 1
    assert for_them == as_a_decoy(for_john)
    assert [m["To"] for m in worker.notifier.sent] == ["john.doe@authelia.com"]
    [decoy] = worker.notifier.rehearsed
    assert shape(decoy) == shape(worker.notifier.sent[0])
    assert str(decoy["To"]).endswith(".invalid"), "a decoy could never be delivered anyway"


async def test_an_account_over_its_limit_gets_the_same_work_as_one_under_it(
    worker: Worker,
) -> None:
    # Four ways of typing john: each typed identifier stays under its own limit (3 per 15
    # minutes), the account goes over it at the fourth.
    work = [
        await worker.work_for(typed)
        for typed in ("john", "JOHN", "john.doe@authelia.com", "JOHN.DOE@authelia.com")
    ]

    assert work[1] == work[2] == work[0]
    assert work[3] == as_a_decoy(work[0])
    assert len(worker.notifier.sent) == 3 and len(worker.notifier.rehearsed) == 1


async def test_every_answer_to_the_questions_makes_the_same_calls_and_queues_the_job(
    worker: Worker,
) -> None:
    await worker.questions.set_up("john", "password", list(JOHNS_ANSWERS.items()), IP)
    wrong = ["wrong", "wrong"]
    right_answers = await worker.work_for_answers("john", None)
    without_questions = await worker.work_for_answers("harry", ["", ""])
    # Decoys from here on. John typed two ways, so that no typed identifier goes over its
    # limit of 3 mails: the five failures count on his account and throttle the last answer.
    decoys = [await worker.work_for_answers("nobody-here", wrong)]
    for typed in ["john", "john.doe@authelia.com"] * 3:
        decoys.append(await worker.work_for_answers(typed, wrong))

    assert without_questions == right_answers
    assert all(work == as_a_decoy(right_answers) for work in decoys)
    assert [m["To"] for m in worker.notifier.sent] == [
        "john.doe@authelia.com",
        "harry.potter@authelia.com",
    ]
    assert len(worker.notifier.rehearsed) == 7


async def test_two_links_mailed_to_one_user_at_once_never_both_work(
    worker: Worker, storage: SqliteStorage, clock: FakeClock
) -> None:
    # Two replicas mailing john at the same moment (here two jobs on one loop, interleaved at
    # every await): a new link revokes the others, so at most one of the two links works.
    for _ in range(2):
        await worker.reset.queue_link("john", IP)
    claimed = await storage.outbox_claim(at=clock.now(), lease=60, limit=2)
    assert len(claimed) == 2
    await asyncio.gather(*(worker.reset.deliver_reset_mail(message) for message in claimed))

    assert len(worker.notifier.sent) == 2
    jtis = [jti_of(mail) for mail in worker.notifier.sent]
    records = [await storage.get_identity_verification(jti) for jti in jtis]
    assert all(records)
    assert sum(1 for r in records if r is not None and r.usable_at(clock.now())) <= 1


NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"


def token_of(mail: email.message.EmailMessage) -> str:
    """Return the reset token in a mail's link."""
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    found = re.search(r"/reset-password/step2\?token=([A-Za-z0-9_.-]+)", str(body.get_content()))
    assert found is not None
    return found.group(1)


def jti_of(mail: email.message.EmailMessage) -> str:
    """Return the jti of the reset link in a mail (its signature is the service's business)."""
    return str(jwt.decode(token_of(mail), options={"verify_signature": False})["jti"])


async def test_a_failed_write_is_the_error_raised_even_when_the_link_cannot_be_given_back(
    worker: Worker,
    storage: SqliteStorage,
    users_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The password write fails, and then the storage fails too (PostgreSQL went down between
    # the consume and the release): the caller still learns why the reset failed, the write.
    await worker.work_for("john")
    token = token_of(worker.notifier.sent[-1])

    async def storage_gone(jti: str, *, consumed_at: float) -> bool:
        raise StorageUnavailableError("release_identity_verification: the database went away")

    monkeypatch.setattr(storage, "release_identity_verification", storage_gone)
    aside = users_file.with_name("users.yml.aside")
    users_file.rename(aside)
    users_file.mkdir()  # a directory where the users file was: the write fails, for root too
    try:
        with pytest.raises(PasswordWriteError):
            await worker.reset.complete(token, NEW_PASSWORD, NEW_PASSWORD, IP)
    finally:
        users_file.rmdir()
        aside.rename(users_file)
    assert "could not be given back" in caplog.text
    assert token not in caplog.text
