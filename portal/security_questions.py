"""Security questions: setting them up, choosing which to ask, checking the answers at reset.

Answers are normalized (NFKC, case-folded, white space collapsed) and hashed with argon2id; the
portal never keeps, logs or shows an answer. Every identifier typed at reset gets questions: a
user's own (`asked` of them, chosen by a keyed hash of the username), or, for an unknown user or
one without questions, decoys chosen the same way from the configured list by a keyed hash of
what was typed. Both are stable across requests, so the page does not tell who exists. Checking
always verifies `asked` argon2 hashes (dummy ones for decoys), so the time does not tell either.
Wrong answers are counted per identifier and per account; past `max_failures` within
`failure_window` answers are not checked at all, and the requester sees the same page. Every
outcome makes the same storage round trips and queues the reset job (a decoy when no mail is
due), so neither the answer's time nor the worker's work after it tells the outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from portal.audit import AuditSink, audit
from portal.clock import Clock
from portal.config import Argon2Config, Config, PasswordConfig
from portal.errors import BadRequestError, SecurityAnswersRejectedError, UnsupportedHashError
from portal.i18n import gettext
from portal.password_hashing import HashingQueue, shared_queue
from portal.regulation import Regulator
from portal.reset import PasswordResetService
from portal.storage.base import RateLimitStore, SecurityAnswer, SecurityAnswerStore
from portal.users.base import User, UserBackend, fold
from portal.users.hashing import hash_password, verify_password

MAX_ANSWER = 256
TICKET_LIFETIME = 900.0  # seconds the questions page stays answerable
_TICKET_TIME = re.compile(r"[0-9]{1,12}")


def normalize_answer(answer: str) -> str:
    """Return the answer as it is hashed: NFKC, case-folded, white space collapsed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", answer).casefold())
    return " ".join(folded.split())


class QuestionStorage(SecurityAnswerStore, RateLimitStore, Protocol):
    """The storage roles security questions use: the answers and the attempt counters."""


class AnswerHasher(Protocol):
    """Hash and verify normalized answers (synchronous CPU work: callers use the hashing queue)."""

    def hash(self, answer: str) -> str: ...

    def verify(self, answer: str, digest: str) -> bool: ...


class Argon2AnswerHasher:
    """Hash answers with argon2id (Authelia's password defaults unless told otherwise)."""

    def __init__(self, params: Argon2Config | None = None) -> None:
        params = params or Argon2Config()
        self._config = PasswordConfig(algorithm="argon2", argon2=params)

    def hash(self, answer: str) -> str:
        """Return an argon2 PHC string for the answer."""
        return hash_password(answer, self._config)

    def verify(self, answer: str, digest: str) -> bool:
        """Return whether the answer matches the hash (False for an unreadable hash)."""
        try:
            return verify_password(answer, digest)
        except UnsupportedHashError:
            return False


@dataclass(frozen=True)
class Prompt:
    """The questions to show for an identifier, and the ticket the answers must come back with."""

    identifier: str
    questions: tuple[str, ...]
    ticket: str


@dataclass(frozen=True)
class _Target:
    user: User | None
    questions: tuple[str, ...]
    hashes: tuple[str, ...] | None  # None: decoys (unknown user or none set up)


class SecurityQuestionsService:
    """Set up security questions and check them before a reset mail goes out."""

    def __init__(
        self,
        *,
        config: Config,
        users: UserBackend,
        storage: QuestionStorage,
        reset: PasswordResetService,
        regulator: Regulator,
        hasher: AnswerHasher,
        clock: Clock,
        audit: AuditSink = audit,
        hashing: HashingQueue | None = None,
    ) -> None:
        """Wire the service; answers are hashed and verified in `hashing` (default: the process's
        shared queue, portal/password_hashing.py), the queue sign-ins wait in."""
        self.settings = config.identity_validation.reset_password.security_questions
        self._audit = audit
        self._users = users
        self._storage = storage
        self._reset = reset
        self._regulator = regulator
        self._hasher = hasher
        self._hashing = hashing or shared_queue()
        self._clock = clock
        secret = config.identity_validation.reset_password.jwt_secret.get_secret_value()
        # SECURITY: a key derived for this purpose only, never the raw secret.
        self._key = hmac.new(
            secret.encode(), b"portal security questions v1", hashlib.sha256
        ).digest()
        self._dummy: str | None = None
        self._dummy_lock = asyncio.Lock()

    # -- which questions -----------------------------------------------------------------------

    def _ranked(self, subject: str, questions: Sequence[str]) -> list[str]:
        def rank(question: str) -> bytes:
            message = f"{subject}\x00{question}".encode()
            return hmac.new(self._key, message, hashlib.sha256).digest()

        return sorted(questions, key=rank)

    def _pick(self, subject: str, questions: Sequence[str]) -> tuple[str, ...]:
        return tuple(self._ranked(f"ask\x00{subject}", questions)[: self.settings.asked])

    def decoy_questions(self, identifier: str) -> tuple[str, ...]:
        """Return the questions shown for an identifier without questions of its own."""
        folded = fold(identifier.strip())
        # As if this identifier had set up `setup` questions, then pick as for a real user.
        chosen = self._ranked(f"decoy\x00{folded}", self.settings.questions)
        return self._pick(folded, chosen[: self.settings.setup])

    async def _target(self, identifier: str) -> _Target:
        user = await self._users.get_user(identifier)
        # The same storage read whoever it is, so its time does not tell either.
        rows = await self._storage.get_security_answers(user.username if user else identifier)
        # A user with fewer answers than are asked (the admin raised `asked`) gets decoys: a
        # shorter form would tell the account exists.
        if user is None or len(rows) < self.settings.asked:
            # SECURITY: an account's decoys are keyed by its username, as its own questions
            # would be: otherwise typing it as username and as email would show two different
            # sets for an account without questions and one set for an account with them.
            return _Target(user, self.decoy_questions(user.username if user else identifier), None)
        by_question = {row.question: row.answer_hash for row in rows}
        questions = self._pick(fold(user.username), list(by_question))
        return _Target(user, questions, tuple(by_question[q] for q in questions))

    async def questions_for(self, identifier: str) -> tuple[str, ...]:
        """Return the questions a reset for this identifier asks (real or decoy)."""
        return (await self._target(identifier.strip())).questions

    # -- the ticket that carries the identifier from the questions to the answers ----------------

    def _ticket_mac(
        self, identifier: str, issued: int, nonce: str, questions: Sequence[str]
    ) -> str:
        message = "\x00".join(("ticket", fold(identifier), str(issued), nonce, *questions))
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()[:32]

    def _ticket(self, identifier: str, questions: Sequence[str]) -> str:
        issued = int(self._clock.now())
        # A nonce makes every page's ticket its own, so each can be used exactly once.
        nonce = secrets.token_hex(8)
        return f"{issued}.{nonce}.{self._ticket_mac(identifier, issued, nonce, questions)}"

    def _ticket_ok(self, ticket: str, identifier: str, questions: Sequence[str]) -> bool:
        parts = ticket.split(".")
        if len(parts) != 3:
            return False
        issued_text, nonce, mac = parts
        # SECURITY: ASCII digits only: str.isdigit() takes "²", which int() then refuses.
        if not _TICKET_TIME.fullmatch(issued_text) or len(nonce) != 16:
            return False
        issued = int(issued_text)
        if not issued <= self._clock.now() + 1 or self._clock.now() > issued + TICKET_LIFETIME:
            return False
        # SECURITY: bound to the identifier and its questions: answers cannot be sent for
        # another account than the one whose questions were shown.
        expected = self._ticket_mac(identifier, issued, nonce, questions)
        # Compared as bytes: compare_digest refuses a non-ASCII str (a 500, not a refusal).
        return hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), expected.encode())

    # -- at reset ------------------------------------------------------------------------------

    async def prompt(self, identifier: str, ip: str) -> Prompt:
        """Return the questions to ask for an identifier, the same way whoever it is."""
        identifier = self._reset.checked_identifier(identifier)
        await self._reset.limit_start(ip)
        target = await self._target(identifier)
        key = self._reset.identifier_hash(identifier)
        self._audit("reset_questions_asked", identifier_hash=key, ip=ip)
        return Prompt(identifier, target.questions, self._ticket(identifier, target.questions))

    async def answer(
        self, identifier: str, answers: Sequence[str], ip: str, *, ticket: str | None = None
    ) -> None:
        """Queue the reset mail if the answers are right; the same outcome otherwise.

        `ticket` comes from the questions page; scripts (the JSON API) send none and answer
        the questions `questions_for` lists, in that order.
        """
        identifier = self._reset.checked_identifier(identifier)
        self._check_shape(answers)
        await self._reset.limit_start(ip)
        target = await self._target(identifier)
        if ticket is not None:
            if not self._ticket_ok(ticket, identifier, target.questions):
                raise BadRequestError(gettext("These questions have expired. Please start again."))
            # SECURITY: a questions page is answered once: the CAPTCHA solved to reach it does
            # not buy a quarter of an hour of answers (or of mails).
            used = await self._storage.rate_limit_hit(
                f"questions-ticket:{ticket.rpartition('.')[2]}",  # its MAC: one key per page
                at=self._clock.now(),
                keep_for=TICKET_LIFETIME + 1,
            )
            if len(used) > 1:
                raise BadRequestError(
                    gettext("These questions were answered already. Please start again.")
                )
        key = self._reset.identifier_hash(identifier)
        username = target.user.username if target.user else None
        # SECURITY: per account too, so typing the account another way gives no new tries. An
        # unknown identifier has a second counter of its own, so every answer reads two.
        account = f"user:{self._reset.identifier_hash(username)}" if username else f"none:{key}"
        counters = [f"questions-failed:{key}", f"questions-failed:{account}"]
        throttled = await self._throttled(counters)
        # SECURITY: `asked` verifications whoever it is and whatever the outcome (dummy hashes
        # for decoys), so the time tells nothing about the account or the answers.
        digests = target.hashes or (await self._dummy_digest(),) * len(target.questions)
        right = await self._hashing.run(self._verify_all, answers, digests)
        reason = None
        if throttled:
            event, mail = "reset_questions_throttled", False
        elif target.hashes is not None and right:
            event, mail = "reset_questions_passed", True
        elif target.hashes is not None:
            event, mail = "reset_questions_failed", False
        else:
            reason = "unknown" if username is None else "no_questions"
            mail = self.settings.without_questions == "send_email"
            event = "reset_questions_skipped" if mail else "reset_questions_denied"
        # SECURITY: two writes whatever the outcome: a failure counts on the counters, anything
        # else on keys nobody reads.
        if event == "reset_questions_failed":
            await self._count(counters)
        else:
            await self._count([f"questions-decoy:{key}", f"questions-decoy:{account}"])
        self._audit(event, identifier_hash=key, username=username, ip=ip, reason=reason)
        # SECURITY: every outcome queues the reset job, a decoy when no mail is due, so neither
        # this answer nor the worker's work after it tells whether the account exists, has
        # questions or was answered right.
        await self._reset.queue_link(identifier, ip, mail=mail)

    def _check_shape(self, answers: Sequence[str]) -> None:
        if len(answers) != self.settings.asked:
            asked = self.settings.asked
            raise BadRequestError(f"Send one answer for each of the {asked} questions.")
        if any(len(a) > MAX_ANSWER for a in answers):
            raise BadRequestError(f"An answer may have at most {MAX_ANSWER} characters.")

    def _verify_all(self, answers: Sequence[str], digests: Sequence[str]) -> bool:
        # Every answer is verified even after a wrong one: the same work every time.
        results = [
            self._hasher.verify(normalize_answer(answer), digest)
            for answer, digest in zip(answers, digests, strict=True)
        ]
        return all(results)

    async def _throttled(self, counters: Sequence[str]) -> bool:
        since = self._clock.now() - self.settings.failure_window.total_seconds()
        counts = []
        # SECURITY: every counter is read, even after one that throttles: the same round trips.
        for counter in counters:
            failures = await self._storage.rate_limit_events(counter, since=since)
            counts.append(len([at for at in failures if at > since]))
        return max(counts) >= self.settings.max_failures

    async def _count(self, keys: Sequence[str]) -> None:
        window = self.settings.failure_window.total_seconds()
        for counter in keys:
            await self._storage.rate_limit_hit(counter, at=self._clock.now(), keep_for=window)

    async def _dummy_digest(self) -> str:
        if self._dummy is None:
            async with self._dummy_lock:
                if self._dummy is None:
                    decoy = secrets.token_urlsafe(16)
                    self._dummy = await self._hashing.run(self._hasher.hash, decoy)
        return self._dummy

    # -- in the settings -----------------------------------------------------------------------

    async def set_at(self, username: str) -> float | None:
        """Return when the user set up their questions, or None if they have none."""
        rows = await self._storage.get_security_answers(username)
        return max((row.set_at for row in rows), default=None)

    async def set_up(
        self, username: str, password: str, choices: Sequence[tuple[str, str]], ip: str
    ) -> None:
        """Replace the user's questions after checking the current password and the answers.

        Every problem is reported at once: the password's and those of the choices.
        """
        reasons, faulty = self._problems(username, password, choices)
        try:
            await self._confirm_password(username, password, ip)
        except SecurityAnswersRejectedError as exc:
            raise SecurityAnswersRejectedError(exc.reasons + reasons, faulty) from None
        if reasons:
            self._audit("security_questions_rejected", username=username, ip=ip, reason="answers")
            raise SecurityAnswersRejectedError(reasons, faulty)
        normalized = [normalize_answer(answer) for _, answer in choices]
        hashes = await self._hashing.run(lambda: [self._hasher.hash(a) for a in normalized])
        now = self._clock.now()
        rows = [
            SecurityAnswer(i, question, digest, now)
            for i, ((question, _), digest) in enumerate(zip(choices, hashes, strict=True))
        ]
        await self._storage.set_security_answers(username, rows)
        self._audit("security_questions_set", username=username, ip=ip, count=len(choices))

    async def remove(self, username: str, password: str, ip: str) -> None:
        """Delete the user's questions after checking the current password."""
        await self._confirm_password(username, password, ip)
        await self._storage.delete_security_answers(username)
        self._audit("security_questions_removed", username=username, ip=ip)

    async def _confirm_password(self, username: str, password: str, ip: str) -> None:
        # SECURITY: a session alone (a borrowed laptop) does not change what guards a reset;
        # wrong passwords count under regulation like failed sign-ins.
        if await self._regulator.banned_until(username, ip) is not None:
            self._audit("security_questions_rejected", username=username, ip=ip, reason="banned")
            raise SecurityAnswersRejectedError(
                ["Too many wrong passwords. Please wait a few minutes and try again."]
            )
        if (
            not password
            or len(password) > 1024
            or not await self._users.check_password(username, password)
        ):
            await self._regulator.record_failure(username, ip)
            self._audit("security_questions_rejected", username=username, ip=ip, reason="password")
            raise SecurityAnswersRejectedError(["Your current password is not correct."])

    def _problems(
        self, username: str, password: str, choices: Sequence[tuple[str, str]]
    ) -> tuple[list[str], frozenset[int]]:
        """Return every problem of the choices, and the positions of the answers at fault."""
        settings = self.settings
        questions = [q for q, _ in choices]
        answers = [normalize_answer(a) for _, a in choices]
        reasons: list[str] = []
        if len(choices) != settings.setup or any(q not in settings.questions for q in questions):
            reasons.append(
                gettext("Choose %(count)s questions from the list.") % {"count": settings.setup}
            )
        if len(set(questions)) != len(questions):
            reasons.append(gettext("Choose a different question for each answer."))
        sized = {
            i
            for i, a in enumerate(answers)
            if len(a) < settings.min_answer_length or len(a) > MAX_ANSWER
        }
        if sized:
            reasons.append(
                gettext("Each answer needs %(least)s to %(most)s characters.")
                % {"least": settings.min_answer_length, "most": MAX_ANSWER}
            )
        repeated = {i for i, a in enumerate(answers) if a and answers.count(a) > 1}
        if repeated:
            reasons.append(gettext("Give a different answer to each question."))
        # SECURITY: an answer equal to the password or the username protects nothing.
        own = {
            i
            for i, a in enumerate(answers)
            if a in (normalize_answer(password), normalize_answer(username))
        }
        if own:
            reasons.append(gettext("An answer may not be your password or your username."))
        return reasons, frozenset(sized | repeated | own)
