"""`authentication_backend`: where users and their passwords live, and the reset flow's switches.

Authelia: internal/configuration/schema/authentication.go. The file and ldap subsections and the
file backend's hashing live in the modules beside this one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import field_validator

from portal.config.authentication_backend.file import FileBackendConfig
from portal.config.authentication_backend.ldap import LdapBackendConfig
from portal.config.types import ExactlyOneOf, Model, check_url, parse_duration


class PasswordResetConfig(Model):
    """Whether the reset flow is offered, and where; what a successful reset also ends."""

    disable: bool = False
    custom_url: str | None = None
    # A portal key: true keeps a lockout from failed sign-ins in place after a successful reset
    # (Active Directory's lockoutTime; OpenLDAP's ppolicy lifts its own at every password change).
    disable_unlock: bool = False

    @field_validator("custom_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if not value else check_url(value, what="custom_url")


class PasswordChangeConfig(Model):
    """Whether a signed-in user may change their password (Authelia:
    authentication_backend.password_change.disable): /settings/password and
    POST /api/change-password exist only while it is false."""

    disable: bool = False


class AuthenticationBackendConfig(ExactlyOneOf):
    """Where users and their passwords live: exactly one of file or ldap."""

    one_of = ("file", "ldap")

    password_reset: PasswordResetConfig = PasswordResetConfig()
    password_change: PasswordChangeConfig = PasswordChangeConfig()
    # How often a session's groups, addresses and name are read again from the backend, and a
    # session of a deleted or disabled user ended: a duration, 'always' or 'disable'. Unset:
    # Authelia's defaults, 'always' for the file backend (a memory lookup) and 5 minutes for LDAP.
    refresh_interval: timedelta | Literal["always", "disable"] | None = None
    file: FileBackendConfig | None = None
    ldap: LdapBackendConfig | None = None

    @field_validator("refresh_interval", mode="before")
    @classmethod
    def _refresh_interval(cls, value: Any) -> Any:
        if value is None or value in ("always", "disable"):
            return value
        try:
            return parse_duration(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither a duration (like '5 minutes') nor 'always' or 'disable'"
            ) from None

    def problems(self) -> list[str]:
        """Return the ldap subsection's problems (the file backend has none of this kind)."""
        return [] if self.ldap is None else self.ldap.problems()

    @property
    def refresh_seconds(self) -> float | None:
        """Return the refresh interval in seconds (0: every request), or None when disabled."""
        value = self.refresh_interval
        if value is None:
            return 0.0 if self.file is not None else 300.0
        if value == "always":
            return 0.0
        if value == "disable":
            return None
        assert isinstance(value, timedelta)  # noqa: S101 - the field's type leaves only this
        return value.total_seconds()
