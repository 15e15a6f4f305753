"""`regulation`: bans after repeated failed sign-ins (Authelia: schema/regulation.go)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from portal.config.types import Duration, Model


class RegulationConfig(Model):
    """Bans after repeated failed sign-ins (Authelia's defaults)."""

    modes: tuple[Literal["user", "ip"], ...] = ("user", "ip")
    max_retries: int = Field(3, ge=0)
    find_time: Duration = timedelta(minutes=2)
    ban_time: Duration = timedelta(minutes=5)
