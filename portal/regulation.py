"""Regulation as Authelia means it: bans after repeated failed sign-ins, per user and per address.

`max_retries` failures within `find_time` ban the subject for `ban_time`, counted from the last of
those failures; `max_retries: 0` turns regulation off. Failures are an event log in storage (the
rate-limit table), so every portal instance sharing the storage sees the same bans.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from portal.clock import Clock
from portal.config import RegulationConfig
from portal.storage.base import RateLimitStore
from portal.users.base import fold

_PREFIX = "regulation:"


@dataclass(frozen=True)
class Ban:
    """One running ban: kind "user" or "ip", the subject as counted (folded username or
    canonical address) and when it ends (Unix seconds)."""

    kind: str
    subject: str
    until: float


class Regulator:
    """Record failed sign-ins and tell whether a user or an address is banned."""

    def __init__(self, storage: RateLimitStore, clock: Clock, config: RegulationConfig) -> None:
        self._storage = storage
        self._clock = clock
        self._modes = frozenset(config.modes)
        self._max_retries = config.max_retries
        self._find_time = config.find_time.total_seconds()
        self._ban_time = config.ban_time.total_seconds()

    async def banned_until(self, username: str, ip: str) -> float | None:
        """Return when the latest ban on the user or the address ends, or None if neither is."""
        if self._max_retries == 0:
            return None
        now = self._clock.now()
        # Any ban still running started from failures no older than find_time + ban_time.
        since = now - self._find_time - self._ban_time
        until: float | None = None
        for key in self._keys(username, ip):
            end = self._ban_end(await self._storage.rate_limit_events(key, since=since))
            if end is not None and end > now and (until is None or end > until):
                until = end
        return until

    async def record_failure(self, username: str | None, ip: str) -> None:
        """Count one failed sign-in against the user (if named) and the address (per modes)."""
        if self._max_retries == 0:
            return
        now = self._clock.now()
        # SECURITY: unknown usernames are counted exactly like known ones, so a ban (or its
        # absence) does not tell an attacker which accounts exist.
        for key in self._keys(username, ip):
            await self._storage.rate_limit_hit(
                key, at=now, keep_for=self._find_time + self._ban_time
            )

    async def recent_failures(self, username: str | None, ip: str) -> int:
        """Return the most failures within find_time for the user or the address (per modes)."""
        since = self._clock.now() - self._find_time
        counts = [
            len(await self._storage.rate_limit_events(key, since=since))
            for key in self._keys(username, ip)
        ]
        return max(counts, default=0)

    async def forgive(self, username: str) -> bool:
        """Lift the user's ban and forget their failures (not the address's); tell if any were."""
        if "user" not in self._modes:
            return False
        return await self._storage.rate_limit_clear(self._keys(username, "")[0]) > 0

    async def bans(self) -> list[Ban]:
        """Return every running ban, users then addresses, each by subject (`portal regulation
        list`): the folded username or the canonical address and when the ban ends."""
        now = self._clock.now()
        since = now - self._find_time - self._ban_time
        found = []
        for key, failures in (await self._storage.rate_limit_keys(_PREFIX, since=since)).items():
            kind, _, subject = key.removeprefix(_PREFIX).partition(":")
            end = self._ban_end(failures) if self._max_retries else None
            if kind in ("user", "ip") and end is not None and end > now:
                found.append(Ban(kind, subject, end))
        return sorted(found, key=lambda ban: (ban.kind != "user", ban.subject))

    async def unban(self, subject: str) -> int:
        """Lift the ban on an address (when `subject` is one) or else a user and forget their
        failures, whatever the modes; return how many failures were forgotten (0: none)."""
        subject = subject.strip()
        try:
            key = f"{_PREFIX}ip:{ipaddress.ip_address(subject)}"
        except ValueError:
            key = f"{_PREFIX}user:{fold(subject)}"
        return await self._storage.rate_limit_clear(key)

    def _keys(self, username: str | None, ip: str) -> list[str]:
        keys: list[str] = []
        if "user" in self._modes and username is not None:
            # SECURITY: folded (and stripped) the way the backends match names, so 'JOHN ' or a
            # full-width 'Ｊｏｈｎ' share one count with 'john' instead of each getting its own.
            keys.append(f"{_PREFIX}user:{fold(username.strip())}")
        # An unknown address ("") is not a subject: it would lump unrelated clients together.
        if "ip" in self._modes and ip:
            keys.append(f"{_PREFIX}ip:{_canonical_ip(ip)}")
        return keys

    def _ban_end(self, failures: Sequence[float]) -> float | None:
        # Every run of max_retries consecutive failures spanning at most find_time bans until
        # its last failure + ban_time; the latest such run decides (failures are ascending).
        # Looking at every run, not only the newest, means a failure recorded during a ban
        # can never shorten it.
        n = self._max_retries
        end: float | None = None
        for last in range(n - 1, len(failures)):
            if failures[last] - failures[last - n + 1] <= self._find_time:
                end = failures[last] + self._ban_time
        return end


def _canonical_ip(ip: str) -> str:
    # SECURITY: one address, one key: '::1' and '0:0::1' must not count separately.
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip
