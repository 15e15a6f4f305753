"""Security questions on their own: normalization, hashing, and which questions are asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from portal.app import create_app
from portal.config import Argon2Config
from portal.deps import Dependencies, notifier_from_config, storage_from_config, users_from_config
from portal.errors import BadRequestError
from portal.keys import QUESTIONS, RESET, STORAGE, USERS
from portal.security_questions import Argon2AnswerHasher, SecurityQuestionsService, normalize_answer
from portal.storage.base import SecurityAnswer
from tests.conftest import ConfigFactory, FakeClock

CHEAP = Argon2Config(memory=1024, iterations=1, parallelism=1)


def test_answers_are_normalized_for_width_case_and_white_space() -> None:
    assert normalize_answer("  Mister\tFluffy \n") == "mister fluffy"
    assert normalize_answer("ＭＩＳＴＥＲ　ＦＬＵＦＦＹ") == "mister fluffy"  # full width
    assert normalize_answer("Straße") == normalize_answer("STRASSE")
    assert normalize_answer("Mu\u0308nchen") == normalize_answer("M\u00fcnchen")  # NFD, NFC
    assert normalize_answer("Mister Fluffy") != normalize_answer("MisterFluffy")


def test_an_answer_hash_verifies_the_answer_and_nothing_else() -> None:
    hasher = Argon2AnswerHasher(CHEAP)
    digest = hasher.hash("mister fluffy")
    assert digest.startswith("$argon2id$")
    assert "fluffy" not in digest
    assert hasher.verify("mister fluffy", digest)
    assert not hasher.verify("mister fluff", digest)
    assert not hasher.verify("mister fluffy", "not a hash")


def test_the_default_answer_hasher_is_argon2id_with_authelias_parameters() -> None:
    digest = Argon2AnswerHasher().hash("x")
    assert digest.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


@pytest.fixture
async def app(make_config: ConfigFactory, users_file: Path) -> AsyncIterator[web.Application]:
    """Give a started application's parts (storage and users open, no server)."""
    config = make_config(
        authentication_backend={"file": {"path": str(users_file), "search": {"email": True}}},
        identity_validation={"reset_password": {"security_questions": {"enabled": True}}},
    )
    deps = Dependencies(
        users=users_from_config(config),
        storage=storage_from_config(config),
        notifier=notifier_from_config(config),
        clock=FakeClock(),
        answer_hasher=Argon2AnswerHasher(CHEAP),
    )
    application = create_app(config, deps)
    await application[STORAGE].startup_check()
    await application[USERS].startup_check()
    yield application
    await application[USERS].close()
    await application[STORAGE].close()


@pytest.fixture
def service(app: web.Application) -> SecurityQuestionsService:
    return app[QUESTIONS]


async def test_with_questions_on_the_reset_service_queues_no_mail_without_answers(
    app: web.Application,
) -> None:
    reset = app[RESET]
    assert reset.questions_first
    # SECURITY: whichever handler (or script) asks, only right answers queue a mail.
    with pytest.raises(BadRequestError, match="security questions"):
        await reset.request_link("john", "192.0.2.7")
    assert await app[STORAGE].outbox_pending() == 0


async def test_decoys_are_stable_whatever_the_case_or_width_of_the_identifier(
    service: SecurityQuestionsService,
) -> None:
    first = await service.questions_for("nobody-here")
    assert await service.questions_for("nobody-here") == first
    assert await service.questions_for("NOBODY-HERE") == first
    assert await service.questions_for("ｎｏｂｏｄｙ-ｈｅｒｅ") == first
    assert service.decoy_questions("nobody-here") == first


async def test_decoys_are_asked_distinct_questions_from_the_list_and_vary_by_identifier(
    service: SecurityQuestionsService,
) -> None:
    seen = set()
    for i in range(40):
        questions = await service.questions_for(f"someone-{i}")
        assert len(questions) == service.settings.asked == 2
        assert len(set(questions)) == 2
        assert set(questions) <= set(service.settings.questions)
        seen.add(questions)
    assert len(seen) > 10


async def test_a_users_own_questions_are_asked_the_same_every_time(
    app: web.Application, service: SecurityQuestionsService
) -> None:
    mine = ("Which colour is the door?", "Which number is the house?", "Who lives upstairs?")
    await app[STORAGE].set_security_answers(
        "john", [SecurityAnswer(i, q, "hash", 0.0) for i, q in enumerate(mine)]
    )
    asked = await service.questions_for("john")
    assert len(asked) == 2
    assert set(asked) <= set(mine)
    # the same two however the account is typed (username or stored email)
    assert await service.questions_for("john") == asked
    assert await service.questions_for("john.doe@authelia.com") == asked
    assert await service.questions_for(" john ") == asked


async def test_a_user_with_fewer_answers_than_asked_gets_decoys(
    app: web.Application, service: SecurityQuestionsService
) -> None:
    await app[STORAGE].set_security_answers("john", [SecurityAnswer(0, "Only one?", "hash", 0.0)])
    assert await service.questions_for("john") == service.decoy_questions("john")


async def test_an_account_without_questions_gets_one_set_of_decoys_however_it_is_typed(
    service: SecurityQuestionsService,
) -> None:
    # As for an account with questions: one set whether typed as username or as email, so the
    # two ways of typing it do not tell whether it has questions.
    decoys = await service.questions_for("harry")
    assert await service.questions_for("harry.potter@authelia.com") == decoys
    assert await service.questions_for("HARRY") == decoys
