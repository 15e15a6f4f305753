"""`totp`: time-based one-time passwords as a second factor (Authelia: schema/totp.go and
validator/totp.go; same keys, defaults and limits).

`issuer` differs in its default only: Authelia names itself; the portal names the organisation
the pages name (`organization_name`), else "Portal" (the name base.html shows), through
Config.totp_issuer. The `allowed_*` lists always hold the configured value too, as Authelia adds
it when missing. Algorithms are read case-insensitively and kept upper-case ("SHA1").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from portal.config.types import Model

Algorithm = Literal["SHA1", "SHA256", "SHA512"]
ALGORITHMS: tuple[Algorithm, ...] = ("SHA1", "SHA256", "SHA512")
SECRET_SIZE_MAXIMUM = 128
SECRET_SIZE_MINIMUM = 20  # Authelia's TOTPSecretSizeMinimum (bytes)
PERIOD_MINIMUM = 15  # seconds


def _algorithm(value: object) -> object:
    if isinstance(value, str):
        upper = value.upper()
        if upper not in ALGORITHMS:
            raise ValueError(f"must be one of SHA1, SHA256 or SHA512, not {value!r}")
        return upper
    return value


def _digits(value: int) -> int:
    if value not in (6, 8):
        raise ValueError(f"must be 6 or 8, not {value}")
    return value


def _period(value: int) -> int:
    if value < PERIOD_MINIMUM:
        raise ValueError(f"must be {PERIOD_MINIMUM} seconds or more, not {value}")
    return value


class TotpConfig(Model):
    """Parameters of new TOTP registrations and how codes are checked (Authelia's `totp`)."""

    disable: bool = False
    # None (or '', as Authelia reads it): Config.totp_issuer names the portal.
    issuer: str | None = Field(default=None, max_length=100)
    algorithm: Algorithm = "SHA1"
    digits: int = 6
    period: int = 30  # seconds per time step
    # Time steps accepted either side of the current one. Capped (a portal bound; Authelia has
    # none): every check tries each step, and a huge skew would make codes never expire.
    skew: int = Field(1, ge=0, le=10)
    secret_size: int = 32  # bytes of random secret
    allowed_algorithms: tuple[Algorithm, ...] = ("SHA1",)
    allowed_digits: tuple[int, ...] = (6,)
    allowed_periods: tuple[int, ...] = (30,)
    disable_reuse_security_policy: bool = False

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("algorithm", mode="before")
    @classmethod
    def _one_algorithm(cls, value: object) -> object:
        return _algorithm(value)

    @field_validator("allowed_algorithms", mode="before")
    @classmethod
    def _algorithms(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(_algorithm(v) for v in value)
        return value

    @field_validator("digits")
    @classmethod
    def _one_digits(cls, value: int) -> int:
        return _digits(value)

    @field_validator("allowed_digits")
    @classmethod
    def _all_digits(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(_digits(v) for v in value)

    @field_validator("period")
    @classmethod
    def _one_period(cls, value: int) -> int:
        return _period(value)

    @field_validator("allowed_periods")
    @classmethod
    def _all_periods(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(_period(v) for v in value)

    @field_validator("secret_size")
    @classmethod
    def _secret_size(cls, value: int) -> int:
        if value < SECRET_SIZE_MINIMUM:
            raise ValueError(f"must be {SECRET_SIZE_MINIMUM} or more, not {value}")
        # A portal bound: 1024 bits is beyond any HMAC key's use, and QR codes stay scannable.
        if value > SECRET_SIZE_MAXIMUM:
            raise ValueError(f"must be {SECRET_SIZE_MAXIMUM} or less, not {value}")
        return value

    @model_validator(mode="after")
    def _configured_values_allowed(self) -> TotpConfig:
        # Authelia appends the configured value to each allowed list that lacks it.
        extra = {
            "allowed_algorithms": (self.allowed_algorithms, self.algorithm),
            "allowed_digits": (self.allowed_digits, self.digits),
            "allowed_periods": (self.allowed_periods, self.period),
        }
        for name, (allowed, value) in extra.items():
            if value not in allowed:
                object.__setattr__(self, name, (*allowed, value))
        return self
