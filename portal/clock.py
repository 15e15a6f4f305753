"""Time as a parameter: the Clock seam and the real clock (tests move a fake one)."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Tell the current time as seconds since the epoch."""

    def now(self) -> float: ...


class SystemClock:
    """Read the wall clock."""

    def now(self) -> float:
        """Return the current time in seconds since the epoch."""
        return time.time()
