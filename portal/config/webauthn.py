"""`webauthn`: passkeys and security keys as a second factor (Authelia: schema/webauthn.go and
validator/webauthn.go; same keys and defaults).

`display_name` differs in its default only: Authelia names itself; the portal names the
organisation its pages name, else "Portal" (Config.webauthn_display_name). The `metadata`
section (the FIDO Metadata Service) is accepted and ignored: loading.py warns that it is not
supported, so an Authelia file loads unchanged.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from portal.config.types import Duration, Model

Requirement = Literal["discouraged", "preferred", "required"]


class WebAuthnSelectionCriteria(Model):
    """What new credentials are asked to be (Authelia's webauthn.selection_criteria)."""

    # '' (Authelia's default): any authenticator; else platform or cross-platform only.
    attachment: Literal["", "platform", "cross-platform"] = ""
    discoverability: Requirement = "preferred"
    user_verification: Requirement = "preferred"


class WebAuthnFiltering(Model):
    """Which authenticators may register (Authelia's webauthn.filtering).

    AAGUIDs are UUIDs (an authenticator model's id, WebAuthn Level 3 section 6.5.1); at most
    one of the two lists may be set (Authelia's validator says the same).
    """

    prohibit_backup_eligibility: bool = False
    permitted_aaguids: tuple[uuid.UUID, ...] = ()
    prohibited_aaguids: tuple[uuid.UUID, ...] = ()

    @model_validator(mode="after")
    def _one_list(self) -> WebAuthnFiltering:
        if self.permitted_aaguids and self.prohibited_aaguids:
            raise ValueError("set permitted_aaguids or prohibited_aaguids, not both")
        return self


class WebAuthnConfig(Model):
    """Passkeys and security keys (Authelia's `webauthn`)."""

    disable: bool = False
    enable_passkey_login: bool = False
    # None (or ''): Config.webauthn_display_name names the portal.
    display_name: str | None = Field(default=None, max_length=100)
    attestation_conveyance_preference: Literal["none", "indirect", "direct"] = "indirect"
    timeout: Duration = timedelta(seconds=60)
    selection_criteria: WebAuthnSelectionCriteria = WebAuthnSelectionCriteria()
    filtering: WebAuthnFiltering = WebAuthnFiltering()

    @field_validator("display_name")
    @classmethod
    def _display_name(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("timeout", mode="after")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        # A portal bound (Authelia has none): a ceremony needs seconds, and a challenge kept
        # for hours is one more thing a stolen session could use.
        if not timedelta(seconds=10) <= value <= timedelta(minutes=10):
            raise ValueError("must be between 10 seconds and 10 minutes")
        return value
