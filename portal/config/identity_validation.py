"""`identity_validation`: the signed reset link, the security questions asked before it, and the
elevated session (a mailed one-time code) sensitive settings ask for.

Authelia: internal/configuration/schema/identity_validation.go (security_questions is a portal key).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from portal.config.types import Duration, Model

DEFAULT_QUESTIONS = (
    "What was the name of your first stuffed animal or toy?",
    "What was the first concert you went to?",
    "What was the first dish you learned to cook?",
    "What was the name of your childhood best friend?",
    "What was the first film you saw in a cinema?",
    "What is the title of the first book you remember reading?",
    "What was the destination of your most memorable school trip?",
    "What was the name of your favourite teacher at primary school?",
)


class SecurityQuestionsConfig(Model):
    """Security questions asked at reset, before the mail goes out (a portal key)."""

    enabled: bool = False
    questions: tuple[str, ...] = DEFAULT_QUESTIONS
    setup: int = Field(3, ge=1)  # how many a user answers in the settings
    asked: int = Field(2, ge=1)  # how many of those a reset asks
    # A user who never set any up: mail the link anyway (`send_email`) or not at all (`deny`).
    without_questions: Literal["send_email", "deny"] = "send_email"
    min_answer_length: int = Field(3, ge=1, le=64)
    # Wrong answers per account before answers are no longer checked, within failure_window.
    max_failures: int = Field(5, ge=1)
    failure_window: Duration = timedelta(hours=1)

    @field_validator("questions")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        value = tuple(" ".join(q.split()) for q in value)
        if not value:
            raise ValueError("must list at least one question")
        if any(not q or len(q) > 200 for q in value):
            raise ValueError("every question must have 1 to 200 characters")
        seen: set[str] = set()
        for question in value:
            if question.casefold() in seen:
                raise ValueError(f"lists the same question twice: {question!r}")
            seen.add(question.casefold())
        return value

    @model_validator(mode="after")
    def _counts(self) -> SecurityQuestionsConfig:
        if self.setup > len(self.questions):
            raise ValueError(
                f"setup ({self.setup}) must not exceed the number of questions "
                f"({len(self.questions)})"
            )
        if self.asked > self.setup:
            raise ValueError(f"asked ({self.asked}) must not exceed setup ({self.setup})")
        return self


class ResetPasswordConfig(Model):
    """The signed reset link."""

    jwt_secret: SecretStr
    jwt_lifespan: Duration = timedelta(minutes=5)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    security_questions: SecurityQuestionsConfig = SecurityQuestionsConfig()

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        # SECURITY: a short HMAC secret can be brute-forced offline from one reset link.
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (generate one: portal crypto rand)")
        return value

    @model_validator(mode="after")
    def _long_enough_for_the_algorithm(self) -> ResetPasswordConfig:
        # SECURITY: RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
        needed = {"HS256": 32, "HS384": 48, "HS512": 64}[self.jwt_algorithm]
        if len(self.jwt_secret.get_secret_value().encode()) < needed:
            raise ValueError(f"jwt_secret must be at least {needed} bytes for {self.jwt_algorithm}")
        return self

    @field_validator("jwt_lifespan")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1 second")
        if value > timedelta(days=1):
            raise ValueError("must be at most 1 day (reset links should be short-lived)")
        return value


# Authelia's bounds on `characters`: its schema's minimum (6) and its validator's maximum (20).
MIN_CODE_CHARACTERS, MAX_CODE_CHARACTERS = 6, 20
_ELEVATION_DEFAULTS = {
    "code_lifespan": timedelta(minutes=5),
    "elevation_lifespan": timedelta(minutes=10),
}


class ElevatedSessionConfig(Model):
    """`identity_validation.elevated_session`: the one-time code mailed before sensitive settings.

    Authelia 4.39 (schema IdentityValidationElevatedSession; validator identity_validation.go):
    a zero (or absent) lifespan or `characters` means the default; `characters` above 20 is
    refused. Below 6 is refused too (Authelia's schema minimum): a shorter code is guessable.
    """

    code_lifespan: Duration = _ELEVATION_DEFAULTS["code_lifespan"]
    elevation_lifespan: Duration = _ELEVATION_DEFAULTS["elevation_lifespan"]
    characters: int = 8
    require_second_factor: bool = False
    skip_second_factor: bool = False

    @field_validator("code_lifespan", "elevation_lifespan", mode="after")
    @classmethod
    def _default_when_zero(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        if value.total_seconds() > 0:
            return value
        return _ELEVATION_DEFAULTS[info.field_name or "code_lifespan"]

    @field_validator("characters")
    @classmethod
    def _characters(cls, value: int) -> int:
        if value <= 0:
            return 8
        if value > MAX_CODE_CHARACTERS:
            raise ValueError(
                f"must be {MAX_CODE_CHARACTERS} or less but it's configured as {value}"
            )
        if value < MIN_CODE_CHARACTERS:
            raise ValueError(
                f"must be at least {MIN_CODE_CHARACTERS} (a shorter code is guessable)"
            )
        return value


class IdentityValidationConfig(Model):
    """How users prove who they are before sensitive actions."""

    reset_password: ResetPasswordConfig
    elevated_session: ElevatedSessionConfig = ElevatedSessionConfig()
