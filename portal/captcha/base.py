"""The CAPTCHA seam: the `Captcha` Protocol every provider implements, and what they share."""

from __future__ import annotations

from typing import Any, Protocol

CHALLENGE_URL = "/api/captcha/challenge"
MAX_SOLUTION = 8192  # characters of a solution the portal reads at most


class Captcha(Protocol):
    """Check a solved anti-robot challenge sent with a form."""

    provider: str
    field: str  # the form field the widget fills in

    async def verify(self, solution: str, ip: str) -> bool:
        """Return whether the solution is good; raise CaptchaUnavailableError if unknowable."""
        ...

    async def challenge(self) -> dict[str, Any]:
        """Return a fresh challenge for the widget (self-hosted providers only)."""
        ...

    async def start(self) -> None:
        """Open what the check needs (a connection pool)."""
        ...

    async def close(self) -> None:
        """Release what start opened."""
        ...
