"""`password_policy`: the rules a new password must meet (Authelia: schema/password_policy.go)."""

from __future__ import annotations

from pydantic import Field, model_validator

from portal.config.types import Model


class StandardPolicyConfig(Model):
    """Length and character-class rules."""

    enabled: bool = False
    min_length: int = Field(8, ge=1, le=1024)
    max_length: int = Field(0, ge=0, le=1024)
    require_uppercase: bool = False
    require_lowercase: bool = False
    require_number: bool = False
    require_special: bool = False

    @model_validator(mode="after")
    def _lengths(self) -> StandardPolicyConfig:
        if self.max_length and self.max_length < self.min_length:
            raise ValueError("max_length must be 0 (no limit) or at least min_length")
        return self


class ZxcvbnPolicyConfig(Model):
    """Strength estimation with zxcvbn."""

    enabled: bool = False
    min_score: int = Field(3, ge=0, le=4)


class PasswordPolicyConfig(Model):
    """Rules a new password must meet."""

    standard: StandardPolicyConfig = StandardPolicyConfig()
    zxcvbn: ZxcvbnPolicyConfig = ZxcvbnPolicyConfig()
