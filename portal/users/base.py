"""The user as the rest of the portal sees it, and the Protocol every user backend implements."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Protocol


def fold(identifier: str) -> str:
    """Return an identifier as names are compared: NFKC, case-folded, NFKC again."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", identifier).casefold())


@dataclass(frozen=True)
class User:
    """Describe one user: canonical username, display name, addresses, groups, disabled flag."""

    username: str
    display_name: str
    emails: tuple[str, ...]
    groups: tuple[str, ...]
    disabled: bool = False

    @property
    def email(self) -> str | None:
        """Return the first address, or None when the user has none."""
        return self.emails[0] if self.emails else None


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
        """Return whether the password is the user's; False for unknown or disabled users."""
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
