"""The user as the rest of the portal sees it, and the Protocol every user backend implements."""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from portal.errors import ChangeReason


def fold(identifier: str) -> str:
    """Return an identifier as names are compared: NFKC, case-folded, NFKC again."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", identifier).casefold())


class AccountState(enum.Flag):
    """What the backend says about an account besides `disabled`; the flags combine.

    `User.disabled` is an administrator keeping the user out (the users file's `disabled`,
    ppolicy's `pwdAccountLockedTime: 000001010000Z`, AD's ACCOUNTDISABLE or a past
    accountExpires): no mail, no reset, no session. These are the states a reset ends:

    - LOCKED_OUT: too many failed sign-ins (ppolicy's pwdAccountLockedTime with a real time,
      AD's UF_LOCKOUT); it ends by itself, or with a reset where the directory allows it.
    - MUST_CHANGE: an administrator demands a new password (ppolicy's pwdReset, AD's
      pwdLastSet=0): no session until it is changed.
    - PASSWORD_EXPIRED: the password is older than the directory allows (AD's
      UF_PASSWORD_EXPIRED): no session until it is changed.
    """

    LOCKED_OUT = enum.auto()
    MUST_CHANGE = enum.auto()
    PASSWORD_EXPIRED = enum.auto()


@dataclass(frozen=True)
class User:
    """Describe one user: canonical username, display name, addresses, groups, and state."""

    username: str
    display_name: str
    emails: tuple[str, ...]
    groups: tuple[str, ...]
    disabled: bool = False
    state: AccountState = AccountState(0)

    @property
    def email(self) -> str | None:
        """Return the first address, or None when the user has none."""
        return self.emails[0] if self.emails else None

    @property
    def change_reason(self) -> ChangeReason | None:
        """Return why the password must change before any session, or None if it need not."""
        if AccountState.MUST_CHANGE in self.state:
            return "must_change"
        if AccountState.PASSWORD_EXPIRED in self.state:
            return "expired"
        return None


class UserLookup(Protocol):
    """Find a user: the one thing the session service asks of a user backend."""

    async def get_user(self, identifier: str) -> User | None:
        """Find a user by username, or by email if the backend's search allows; None if unknown."""
        ...


@runtime_checkable
class UserLister(Protocol):
    """List every user: the role `portal users list` asks of a backend that can (file, LDAP)."""

    async def list_users(self) -> list[User]:
        """Return every user the backend knows, disabled ones included, sorted by username.

        Raises UserBackendError (or BackendUnavailableError) when the backend cannot answer.
        """
        ...


class UserBackend(Protocol):
    """Look users up, check and change their passwords."""

    async def startup_check(self) -> None:
        """Check the backend is usable; raise StartupCheckError with a clear message if not."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (connections, background tasks)."""
        ...

    async def get_user(self, identifier: str) -> User | None:
        """Find a user by username, or by email if the backend's search allows; None if unknown."""
        ...

    async def check_password(self, username: str, password: str) -> bool:
        """Return whether the password is the user's; False for unknown or disabled users.

        Raise PasswordChangeRequiredError when the backend proved the password right but lets
        nobody in with it until it is changed (a directory's forced change or expiry).
        """
        ...

    async def set_password(self, username: str, password: str) -> None:
        """Store a new password; raise PasswordWriteError and change nothing on failure."""
        ...

    async def healthy(self) -> bool:
        """Tell whether the backend answers right now (for /api/health)."""
        ...

    async def password_state(self, username: str) -> str | None:
        """Return an opaque value that changes whenever the password does; None if unknown."""
        ...

    async def clear_lockout(self, username: str) -> bool:
        """End a lockout from failed sign-ins (after a reset); return whether anything changed.

        Raise UserBackendError if the backend refuses; the new password stays either way.
        """
        ...
