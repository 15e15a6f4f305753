"""Server-side sessions over storage, with Authelia's meaning of expiration, inactivity and
remember me (the cookie itself, its value and attributes: session_cookies.py).

The browser holds a random value; storage holds only its SHA-256, so a leaked database opens no
session. Every instance keeps a small cache of rows it has read, each trusted for at most
`cache_ttl` seconds: nginx's auth_request usually costs no storage round trip, and a session ended
on any instance (its row deleted) stops working everywhere within `cache_ttl`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from portal.audit import AuditSink, audit
from portal.clock import Clock
from portal.config import SessionCookieConfig
from portal.errors import PortalError
from portal.session_cookies import (
    cookie_seconds,
    new_value,
    remember_me_seconds,
    stored_id,
    stored_id_of,
)
from portal.storage.base import SessionRecord, SessionRecordStore
from portal.users.base import User, UserLookup

log = logging.getLogger("portal.sessions")

_T = TypeVar("_T")


@dataclass(frozen=True)
class Session:
    """Describe one signed-in browser session as the handlers see it."""

    id: str  # the stored hash of the cookie value, never the value itself
    username: str
    display_name: str
    emails: tuple[str, ...]
    groups: tuple[str, ...]
    created_at: float
    last_active_at: float
    expires_at: float
    remember_me: bool
    # Authelia's authentication levels: 1 after the password, 2 after a second factor too.
    level: int = 1
    # How the user proved who they are, as RFC 8176 `amr` values ("pwd", then "otp", "hwk").
    amr: tuple[str, ...] = ("pwd",)
    auth_time: float = 0.0  # when the last factor was proven (seconds since the epoch)
    # An elevated session (Authelia 4.39: a mailed one-time code) allows sensitive settings
    # until this time, from this client address only; None when not elevated.
    elevated_until: float | None = None
    elevated_ip: str | None = None
    # A TOTP registration started and not yet confirmed (portal/totp_registration.py): the
    # secret sealed with storage.encryption_key and when it lapses; None when there is none.
    pending_totp: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # A WebAuthn challenge issued to this session (portal/webauthn.py: its purpose, SHA-256 and
    # expiry), dropped when answered; None when there is none.
    webauthn_challenge: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def user(self) -> User:
        """Return the session's user as access_control sees it (built once per session read:
        auth_request asks for it on every request)."""
        return User(self.username, self.display_name, self.emails, self.groups)

    @cached_property
    def remote_headers(self) -> Mapping[str, str]:
        """Return the headers nginx passes on to a protected site for this session (Authelia's
        Remote-User, Remote-Groups comma-separated, Remote-Name, Remote-Email: the first
        address); read-only, built once per session read: auth_request answers with it."""
        return MappingProxyType(
            {
                "Remote-User": self.username,
                "Remote-Groups": ",".join(self.groups),
                "Remote-Name": self.display_name,
                "Remote-Email": self.emails[0] if self.emails else "",
            }
        )

    def elevated(self, ip: str, now: float) -> bool:
        """Tell whether the session is elevated for a request from ip at now."""
        return (
            self.elevated_until is not None and now < self.elevated_until and ip == self.elevated_ip
        )


ONE_FACTOR, TWO_FACTORS = 1, 2
# What a session keeps of its client at sign-in, in characters: an IPv6 address with a zone
# fits in MAX_IP; a User-Agent is cut (browsers send 100 to 300).
MAX_IP, MAX_USER_AGENT = 64, 512
_PUBLIC_ID_INFO = b"portal session public id v1"


@dataclass(frozen=True)
class ListedSession:
    """One live session of a user, as their list of sessions shows it (GET /api/user/sessions).

    `id` is the public id (SessionStore.public_id), never the stored id; times are Unix
    seconds; `ip` and `user_agent` are what the client sent at sign-in ("" when unknown).
    """

    id: str
    current: bool
    created_at: float
    last_seen_at: float
    ip: str
    user_agent: str


@runtime_checkable
class LoadedUserLookup(Protocol):
    """A user backend holding its users in memory (the users file: FileUserBackend), which can
    answer at once, without a coroutine; the sessions' fast path asks it (refresh `always`)."""

    def loaded_user(self, username: str) -> User | None:
        """Return the user as get_user would (None if unknown); raise LookupError when the
        users are not loaded yet (the caller then awaits get_user)."""
        ...


class Miss:
    """SessionStore.first_live_cached's answer when memory alone cannot tell."""


MISS: Final = Miss()


@dataclass(frozen=True)
class _Cached:
    record: SessionRecord
    fetched_at: float
    session: Session  # built once per row read: auth_request returns it many times a second


class SessionStore:
    """Create, look up and end sessions kept in storage, caching reads for a moment.

    Rotation at sign-in is the caller's job: it calls `destroy` on the value the browser carried
    and `create` for a new one, so a session id planted before sign-in is never promoted.

    Given a user backend, a session's details (groups, addresses, name) are read again once
    `refresh_interval` seconds have passed since they were last read (0: on every request;
    None: never), and the session of a user who is gone or disabled ends: Authelia's
    `refresh_interval`.
    """

    def __init__(
        self,
        storage: SessionRecordStore,
        clock: Clock,
        *,
        users: UserLookup | None = None,
        refresh_interval: float | None = None,
        cache_ttl: float = 1.0,
        touch_interval: float = 10.0,
        cache_size: int = 10_000,
        audit: AuditSink = audit,
        public_id_secret: str | None = None,
    ) -> None:
        if cache_ttl < 0 or touch_interval < 0 or cache_size < 1:
            raise ValueError("cache_ttl and touch_interval must be >= 0, cache_size >= 1")
        if refresh_interval is not None and refresh_interval < 0:
            raise ValueError("refresh_interval must be >= 0 (or None for never)")
        self._storage = storage
        self._clock = clock
        self._users = users
        self._audit = audit
        self._refresh_interval = refresh_interval if users is not None else None
        self._loaded_users = users if isinstance(users, LoadedUserLookup) else None
        self._refreshing: dict[str, asyncio.Future[SessionRecord | None]] = {}
        self._cache_ttl = cache_ttl
        self._touch_interval = touch_interval
        self._cache_size = cache_size
        self._cache: dict[str, _Cached] = {}
        # Bumped by every destroy: a read that was in flight meanwhile must not cache its row.
        self._generation = 0
        # One storage read per session id at a time: when a cached entry expires under load,
        # every request for it would otherwise queue its own read (a thundering herd).
        self._inflight: dict[str, asyncio.Future[SessionRecord | None]] = {}
        # Reads started ahead by first_live_cached, by session id: one at a time per session
        # (several questions may come in before the task first runs), held until done.
        self._ahead: dict[str, asyncio.Task[None]] = {}
        # SECURITY: public ids are a keyed hash of the stored id, so neither the cookie's hash
        # nor anything that opens a session is shown; without a secret, one for this process.
        raw = public_id_secret.encode() if public_id_secret else secrets.token_bytes(32)
        self._public_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_PUBLIC_ID_INFO
        ).derive(raw)

    def public_id(self, session_id: str) -> str:
        """Return the opaque id a user sees for the session with that stored id (Session.id).

        HMAC-SHA256 (RFC 2104) of the stored id under a key derived with HKDF (RFC 5869) from
        `public_id_secret`; 32 base64url characters, stable for the session's life (a raised
        level rotates the stored id, and so the public one).
        """
        digest = hmac.new(self._public_key, session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode("ascii")

    async def list_user_sessions(
        self,
        username: str,
        cookies: Sequence[SessionCookieConfig],
        *,
        current_id: str | None = None,
    ) -> list[ListedSession]:
        """Return the user's live sessions, oldest first; `current` marks current_id's.

        A session counts as live under its own cookie domain's expiration and inactivity (one
        of `cookies`; a session of a domain no longer configured is not listed).
        """
        now = self._clock.now()
        by_domain = {c.domain: c for c in cookies}
        listed = []
        for record in await self._storage.sessions_of_user(username):
            cookie = by_domain.get(str(record.data.get("domain")))
            if cookie is None or _ended(record, cookie, now):
                continue
            listed.append(
                ListedSession(
                    id=self.public_id(record.id),
                    current=record.id == current_id,
                    created_at=record.created_at,
                    last_seen_at=record.last_active_at,
                    ip=_text(str(record.data.get("ip") or "")),
                    user_agent=_text(str(record.data.get("user_agent") or "")),
                )
            )
        return listed

    async def end_user_session(self, username: str, public_id: str) -> str | None:
        """End the user's own session with that public id; return its stored id, or None when
        the user has no such session (another user's id, or any text that is no public id,
        finds nothing).

        The row is deleted: every instance refuses it within its cache_ttl (at once with Redis,
        whose session_delete tells every replica).
        """
        # SECURITY: compared as bytes: compare_digest refuses a non-ASCII str (a 500 before).
        wanted = public_id.encode("utf-8", "surrogateescape")
        for record in await self._storage.sessions_of_user(username):
            if hmac.compare_digest(self.public_id(record.id).encode("ascii"), wanted):
                self._forget(record.id)
                await self._storage.session_delete(record.id)
                return record.id
        return None

    async def create(
        self,
        user: User,
        cookie: SessionCookieConfig,
        *,
        remember_me: bool,
        ip: str = "",
        user_agent: str = "",
        method: str = "pwd",
    ) -> str:
        """Open a one-factor session for user under cookie's domain and return the new cookie
        value; `method` is how the first factor was proven (RFC 8176 amr: "pwd", or "hwk" for
        a passkey sign-in).

        ip and user_agent (the client's address and User-Agent header at sign-in) are kept in
        the session's data, as text (bytes that were not UTF-8: U+FFFD) cut to MAX_IP and
        MAX_USER_AGENT characters, for the user's list of sessions (ListedSession); nothing
        decides anything on them.
        """
        # SECURITY: a disabled user never gets a session, whatever the caller forgot to check;
        # nor does one whose password must be changed first.
        if user.disabled or user.change_reason is not None:
            raise ValueError(
                f"refusing to open a session for {user.username!r} (disabled, or "
                "the password must be changed)"
            )
        remember_me = remember_me and remember_me_seconds(cookie) > 0
        lifetime = (
            remember_me_seconds(cookie)
            if remember_me
            else cookie_seconds(cookie.expiration, "expiration")
        )
        # SECURITY: a fresh value from the OS CSPRNG every time; storage sees only its hash.
        value = new_value()
        now = self._clock.now()
        record = SessionRecord(
            id=stored_id(value),
            username=user.username,
            created_at=now,
            last_active_at=now,
            expires_at=now + lifetime,
            remember_me=remember_me,
            data={
                "domain": cookie.domain,
                "display_name": user.display_name,
                "emails": list(user.emails),
                "groups": list(user.groups),
                "refreshed_at": now,
                "level": ONE_FACTOR,
                "amr": [method],
                "auth_time": now,
                "ip": _text(ip)[:MAX_IP],
                "user_agent": _text(user_agent)[:MAX_USER_AGENT],
            },
        )
        await self._storage.session_save(record)
        return value

    async def raise_level(self, value: str, cookie: SessionCookieConfig, *, method: str) -> str:
        """Record a second factor (RFC 8176 `amr` method, e.g. "otp") on the session the cookie
        value opens; return the new cookie value that replaces it.

        SECURITY: the session id changes with the privilege level (OWASP Session Management:
        renew the id on any privilege change), so a value seen before the second factor opens
        nothing afterwards. An elevation the session held is not carried over. Raises
        LookupError when the value opens no live session (ended meanwhile).
        """
        session = await self.get(value, cookie)
        record = None if session is None else await self._storage.session_get(session.id)
        if record is None:
            raise LookupError("the session ended before its second factor was recorded")
        now = self._clock.now()
        amr = [m for m in record.data.get("amr") or ["pwd"] if m != method] + [method]
        data = {k: v for k, v in record.data.items() if k not in ("elevated_until", "elevated_ip")}
        new = new_value()
        raised = replace(
            record,
            id=stored_id(new),
            last_active_at=now,
            data={**data, "level": TWO_FACTORS, "amr": amr, "auth_time": now},
        )
        await self._storage.session_save(raised)
        self._forget(record.id)
        # SECURITY: the old session must still have been there once the new one exists: if it
        # was ended meanwhile (a sign-out, a reset ending every session of the user), the new
        # one goes too, or the second factor would bring an ended session back.
        if not await self._storage.session_delete(record.id):
            await self._storage.session_delete(raised.id)
            raise LookupError("the session ended while its second factor was recorded")
        return new

    async def update(self, session_id: str, changes: dict[str, Any]) -> Session | None:
        """Merge changes into the stored data of the session with that id (its stored hash, as
        Session.id); return the updated session, or None if it no longer exists.

        For facts that do not change the session's identity (an elevation); a privilege change
        goes through raise_level, which rotates the id.
        """
        record = await self._storage.session_get(session_id)
        if record is None:
            self._forget(session_id)
            return None
        data = {**record.data, **changes}
        self._forget(session_id)
        if not await self._storage.session_update_data(session_id, data):
            return None
        return _session(replace(record, data=data))

    async def first_live(
        self, values: Sequence[str], cookie: SessionCookieConfig
    ) -> Session | None:
        """Return the first live session among cookie values (a browser may send several):
        from memory when first_live_cached can tell, else through first_live_read."""
        found = self.first_live_cached(values, cookie)
        if not isinstance(found, Miss):
            return found
        return await self.first_live_read(values, cookie)

    async def first_live_read(
        self, values: Sequence[str], cookie: SessionCookieConfig
    ) -> Session | None:
        """Answer first_live the way that reads, writes and ends as needed (get per value): for
        a caller that already had first_live_cached's MISS, so memory is not checked twice."""
        for value in values:
            session = await self.get(value, cookie)
            if session is not None:
                return session
        return None

    def first_live_cached(
        self, values: Sequence[str], cookie: SessionCookieConfig
    ) -> Session | None | Miss:
        """Answer first_live from memory alone when nothing is to be read, written or ended;
        MISS when it cannot (then await first_live_read, which answers the same as before).

        It answers only when every value up to the answer is either no cookie value of ours,
        another domain's session, or a cached row still within cache_ttl that is live, needs no
        activity write (touch_interval) and no refresh: refresh_interval `disable`, not yet
        due, or `always` with a backend holding its users in memory (LoadedUserLookup) whose
        user has not changed (name, addresses, groups; not disabled, no password change due).
        nginx's auth_request thus costs no coroutine, future or storage call in the usual case.
        """
        now = self._clock.now()
        for value in values:
            session_id = stored_id_of(value)
            if session_id is None:
                continue
            entry = self._cache.get(session_id)
            # SECURITY: the same cache_ttl bound as _cached; stale entries go the slow way.
            if entry is None or not entry.fetched_at <= now < entry.fetched_at + self._cache_ttl:
                return MISS
            record = entry.record
            if record.data.get("domain") != cookie.domain:
                continue
            if _ended(record, cookie, now) or now - record.last_active_at >= self._touch_interval:
                return MISS
            session = entry.session
            if self._refresh_due(record, now) and not self._unchanged(session):
                return MISS
            if now - entry.fetched_at >= self._cache_ttl / 2 and session_id not in self._ahead:
                self._read_ahead(session_id, now)
            return session
        return None

    def _read_ahead(self, session_id: str, now: float) -> None:
        """Read the row again in the background while its cached entry still answers: past half
        of cache_ttl, so a busy session's entry is renewed before it lapses and nginx's
        questions never all wait on one read (the stall that set auth_request's p99). Nothing
        is served older than cache_ttl: the new entry counts from `now`, before the read."""
        task = asyncio.get_running_loop().create_task(self._load_ahead(session_id, now))
        self._ahead[session_id] = task
        task.add_done_callback(lambda _: self._ahead.pop(session_id, None))

    async def _load_ahead(self, session_id: str, now: float) -> None:
        try:
            await self._load_once(session_id, now)
        except PortalError as exc:
            # The next request past cache_ttl reads the usual way and answers the error.
            log.debug("reading a session ahead failed: %s", exc)

    def _unchanged(self, session: Session) -> bool:
        """Tell whether a refresh due now would leave session as it is without any write:
        `always`, users in memory, and the user as the session knows them."""
        if self._refresh_interval != 0 or self._loaded_users is None:
            return False
        try:
            user = self._loaded_users.loaded_user(session.username)
        except LookupError:
            return False
        return (
            user is not None
            and not user.disabled
            and (not user.state or user.change_reason is None)
            and user.username == session.username
            and user.display_name == session.display_name
            and user.emails == session.emails
            and user.groups == session.groups
        )

    async def get(self, value: str, cookie: SessionCookieConfig) -> Session | None:
        """Return the live session the cookie value opens under cookie's domain, or None.

        An expired or idle session is deleted. Activity is written at most every
        `touch_interval` seconds, so an idle session may end up to that much early.
        """
        session_id = stored_id_of(value)
        if session_id is None:
            return None
        now = self._clock.now()
        entry = self._cached(session_id, now)
        record = entry.record if entry is not None else None
        fresh = record is None
        if record is None:
            record = await self._load_once(session_id, now)
            if record is None:
                return None
        # SECURITY: a session opens only the cookie domain it was created for (Authelia keeps
        # one session store per domain); it is not ended, it just does not open this one.
        if record.data.get("domain") != cookie.domain:
            return None
        if _ended(record, cookie, now) and not fresh:
            # The cached row may lag activity written by another instance: judge a fresh one
            # before deleting anything.
            record = await self._load(session_id, now)
            if record is None:
                return None
        if _ended(record, cookie, now):
            self._forget(session_id)
            await self._storage.session_delete(session_id)
            return None
        if self._refresh_due(record, now):
            refreshed = await self._refresh_once(session_id, record, now)
            if refreshed is None:
                return None
            if refreshed is not record:
                record, entry = refreshed, None
        if now - record.last_active_at >= self._touch_interval:
            # The cache first, then the write: requests arriving meanwhile must not each touch.
            record = replace(record, last_active_at=now)
            session = _session(record)
            entry = self._cache.get(session_id)
            if entry is not None:
                self._cache[session_id] = replace(entry, record=record, session=session)
            await self._storage.session_touch(session_id, at=now)
            return session
        if entry is not None and entry.record is record:
            return entry.session
        return _session(record)

    async def destroy(self, value: str) -> None:
        """End the session the cookie value opens, if any (sign-out, rotation at sign-in)."""
        session_id = stored_id_of(value)
        if session_id is None:
            return
        self._forget(session_id)
        await self._storage.session_delete(session_id)

    async def destroy_user(self, username: str, *, keep: str | None = None) -> int:
        """End every session of the user on every instance but the one whose id (Session.id)
        is `keep`; return how many rows went."""
        self._generation += 1
        for session_id in [
            k for k, v in self._cache.items() if v.record.username == username and k != keep
        ]:
            del self._cache[session_id]
        return await self._storage.session_delete_user(username, keep=keep)

    def invalidate(self, kind: str, key: str) -> None:
        """Forget what the cache holds of sessions another instance ended (no storage call).

        kind 'session': the session with id `key` (the stored hash); 'user': every session of
        username `key`; anything else ('all'): every session. Reads in flight are not cached.
        The Redis session store's `listen` calls it for every session ended on any replica.
        """
        self._generation += 1
        if kind == "session":
            self._cache.pop(key, None)
        elif kind == "user":
            for session_id in [k for k, v in self._cache.items() if v.record.username == key]:
                del self._cache[session_id]
        else:
            self._cache.clear()

    async def purge(self) -> int:
        """Delete sessions past their absolute expiration; return how many."""
        now = self._clock.now()
        self._drop_stale(now)
        return await self._storage.purge_sessions(expired_before=now)

    # -- refreshing details from the backend ---------------------------------------------------

    def _refresh_due(self, record: SessionRecord, now: float) -> bool:
        interval = self._refresh_interval
        if interval is None:
            return False
        refreshed_at = record.data.get("refreshed_at")
        last = float(refreshed_at) if isinstance(refreshed_at, int | float) else record.created_at
        return now - last >= interval

    async def _refresh_once(
        self, session_id: str, record: SessionRecord, now: float
    ) -> SessionRecord | None:
        # One backend lookup per session at a time: a page's burst of asset requests all find
        # the refresh due at once.
        return await _single_flight(
            self._refreshing, session_id, lambda: self._refresh(session_id, record, now)
        )

    async def _refresh(
        self, session_id: str, record: SessionRecord, now: float
    ) -> SessionRecord | None:
        """Return the record with fresh details, or None if the session must not open now."""
        assert self._users is not None  # noqa: S101 - _refresh_due is False without users
        generation = self._generation
        try:
            user = await self._users.get_user(record.username)
        except PortalError as exc:
            # SECURITY: fail closed, as Authelia does: details that cannot be checked open
            # nothing. The session is kept, and works again once the backend answers.
            log.warning("cannot refresh %s's session details: %s", record.username, exc)
            return None
        if user is None or user.disabled or user.username != record.username:
            # SECURITY: a deleted or disabled account keeps no session (Authelia ends it too).
            self._forget(session_id)
            await self._storage.session_delete(session_id)
            self._audit("session_ended", username=record.username, reason="user_gone_or_disabled")
            return None
        if user.change_reason is not None:
            # SECURITY: a password the directory no longer accepts (an administrator demands a
            # new one, or it expired) keeps no session either, as sign-in would give none.
            self._forget(session_id)
            await self._storage.session_delete(session_id)
            self._audit("session_ended", username=record.username, reason=user.change_reason)
            return None
        old = record.data
        changed = (
            old.get("display_name") != user.display_name
            or old.get("emails") != list(user.emails)
            or old.get("groups") != list(user.groups)
        )
        # Every refresh of a periodic interval is written, so other instances (and this one
        # once its cache entry lapses) do not repeat it; 'always' writes only changes.
        if not changed and self._refresh_interval == 0:
            return record
        # The write starts from the stored record, not the cached one: what another request
        # wrote since (an elevation, a pending registration) is kept, not undone.
        stored = await self._storage.session_get(session_id)
        if stored is None:
            self._forget(session_id)
            return None
        record, old = stored, stored.data
        data = {
            **old,
            "display_name": user.display_name,
            "emails": list(user.emails),
            "groups": list(user.groups),
            "refreshed_at": now,
        }
        if not await self._storage.session_update_data(session_id, data):
            self._forget(session_id)  # ended meanwhile (sign-out, password reset)
            return None
        refreshed = replace(record, data=data)
        if changed:
            self._audit("session_refreshed", username=record.username)
        if generation == self._generation and session_id in self._cache:
            self._remember(session_id, refreshed, self._cache[session_id].fetched_at)
        return refreshed

    # -- the cache -----------------------------------------------------------------------------

    def _cached(self, session_id: str, now: float) -> _Cached | None:
        entry = self._cache.get(session_id)
        if entry is None:
            return None
        # SECURITY: a cached row is trusted for cache_ttl at most (and never if the clock went
        # back), which bounds how long a session ended on another instance keeps working here.
        if not entry.fetched_at <= now < entry.fetched_at + self._cache_ttl:
            del self._cache[session_id]
            return None
        return entry

    async def _load_once(self, session_id: str, now: float) -> SessionRecord | None:
        return await _single_flight(self._inflight, session_id, lambda: self._load(session_id, now))

    async def _load(self, session_id: str, now: float) -> SessionRecord | None:
        generation = self._generation
        record = await self._storage.session_get(session_id)
        if record is None:
            # Misses are not cached: a session just created on another instance must work at once.
            self._cache.pop(session_id, None)
        elif generation == self._generation and self._cache_ttl > 0:
            self._remember(session_id, record, now)
        return record

    def _remember(self, session_id: str, record: SessionRecord, now: float) -> None:
        self._cache.pop(session_id, None)
        # Entries sit in the order they were read: the oldest lapse first. Dropping the lapsed
        # ones at the front on every insert keeps the cache near what cache_ttl holds (not
        # cache_size of dead rows) at O(1) amortized cost.
        cache, ttl = self._cache, self._cache_ttl
        while cache:
            oldest = next(iter(cache))
            entry = cache[oldest]
            if entry.fetched_at <= now < entry.fetched_at + ttl:
                break
            del cache[oldest]
        if len(self._cache) >= self._cache_size:
            self._drop_stale(now)
        while len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]  # the oldest insertion
        self._cache[session_id] = _Cached(record, now, _session(record))

    def _forget(self, session_id: str) -> None:
        self._generation += 1
        self._cache.pop(session_id, None)

    def _drop_stale(self, now: float) -> None:
        for session_id in [
            k
            for k, v in self._cache.items()
            if not v.fetched_at <= now < v.fetched_at + self._cache_ttl
        ]:
            del self._cache[session_id]


async def _single_flight(
    pending: dict[str, asyncio.Future[_T]], key: str, work: Callable[[], Awaitable[_T]]
) -> _T:
    """Run work for key, or wait for the run already under way for it and share its result."""
    running = pending.get(key)
    if running is not None:
        return await asyncio.shield(running)
    future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
    pending[key] = future
    try:
        result = await work()
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waited
        raise
    else:
        future.set_result(result)
        return result
    finally:
        del pending[key]


def _ended(record: SessionRecord, cookie: SessionCookieConfig, now: float) -> bool:
    if now >= record.expires_at:
        return True
    # Authelia: remember me skips the inactivity check, and an inactivity of 0 disables it.
    if record.remember_me:
        return False
    inactivity = cookie_seconds(cookie.inactivity, "inactivity")
    return inactivity > 0 and now - record.last_active_at > inactivity


def _session(record: SessionRecord) -> Session:
    data = record.data
    return Session(
        id=record.id,
        username=record.username,
        display_name=str(data.get("display_name") or ""),
        emails=tuple(str(e) for e in data.get("emails") or ()),
        groups=tuple(str(g) for g in data.get("groups") or ()),
        created_at=record.created_at,
        last_active_at=record.last_active_at,
        expires_at=record.expires_at,
        remember_me=record.remember_me,
        level=TWO_FACTORS if data.get("level") == TWO_FACTORS else ONE_FACTOR,
        amr=tuple(str(m) for m in data.get("amr") or ("pwd",)),
        auth_time=float(data.get("auth_time") or record.created_at),
        elevated_until=_number(data.get("elevated_until")),
        elevated_ip=str(data["elevated_ip"]) if data.get("elevated_ip") else None,
        pending_totp=data["pending_totp"] if isinstance(data.get("pending_totp"), dict) else None,
        webauthn_challenge=(
            data["webauthn_challenge"] if isinstance(data.get("webauthn_challenge"), dict) else None
        ),
    )


def _text(value: str) -> str:
    """Return value as text UTF-8 can hold: bytes a header carried that were not UTF-8 (which
    aiohttp decodes to lone surrogates) become U+FFFD, so no page or store fails on them."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
