"""What the administrator's commands do outside the server: `portal users list / send-reset-link
/ second-factor delete`, `portal regulation list / unban`, `portal sessions list / revoke` and
`portal storage encryption change-key` (Authelia's command names where it has them).

Each opens the configured storage (and user backend, and session.redis) with the same start-up
checks `portal serve` runs, so a wrong storage.encryption_key stops it with StartupCheckError,
does its one thing, and closes them. They work while portals run on the same backends: mails are
queued in the storage's outbox (a running portal delivers them), a lifted ban is read from
storage at the next sign-in, and ended sessions are deleted rows that every portal refuses within
its one-second session cache (at once with Redis, whose deletes are published to every replica).
Every command that changes something audits it with actor "admin".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from portal.audit import audit
from portal.clock import SystemClock
from portal.config import Config
from portal.deps import (
    Dependencies,
    build_dependencies,
    notifier_from_config,
    storage_from_config,
    users_from_config,
)
from portal.errors import ConfigError
from portal.mail import MailRenderer, template_dirs
from portal.notify.outbox import OutboxWorker
from portal.ratelimit import RateLimiter
from portal.regulation import Ban, Regulator
from portal.second_factor import TotpService
from portal.services import Services, build_services
from portal.sessions import ListedSession
from portal.users.base import User, UserLister
from portal.webauthn import WebAuthnService

ADMIN = "admin"  # the actor every admin command's audit events name


async def delete_second_factor(config: Config, identifier: str) -> tuple[str | None, bool, int]:
    """Remove the TOTP device and every passkey of the user `identifier` names, as an
    administrator (a user who lost them cannot sign in or reset otherwise).

    Returns (canonical username, TOTP removed, passkeys removed): (None, False, 0) when no such
    user exists. Audit `totp_removed` / `webauthn_removed` with actor "admin"; the user is
    mailed (queued) for each. Raises StartupCheckError when the storage or the user backend
    fails its start-up check.
    """
    storage = storage_from_config(config)
    users = users_from_config(config)
    try:
        await storage.startup_check()
        await users.startup_check()
        user = await users.get_user(identifier)
        if user is None:
            return None, False, 0
        clock = SystemClock()
        outbox = OutboxWorker(
            storage,
            clock,
            poll_interval=config.notifier.outbox.poll_interval.total_seconds(),
            lease=config.notifier.outbox.lease.total_seconds(),
        )
        service = TotpService(
            config=config,
            store=storage,
            clock=clock,
            regulator=Regulator(storage, clock, config.regulation),
            limiter=RateLimiter(storage, clock),
            users=users,
            outbox=outbox,
            notifier=notifier_from_config(config),
            renderer=MailRenderer(template_dirs(config.notifier.template_path)),
        )
        totp_removed = await service.delete(user.username, actor="admin")
        passkeys = WebAuthnService(
            config=config,
            store=storage,
            clock=clock,
            regulator=Regulator(storage, clock, config.regulation),
            limiter=RateLimiter(storage, clock),
            outbox=outbox,
            user_handle_key=b"",  # no ceremony runs here
            encryption_key=config.storage.encryption_key.get_secret_value(),
        )
        credentials = await passkeys.credentials(user.username)
        for credential in credentials:
            await passkeys.remove(user.username, credential.id, actor="admin")
        return user.username, totp_removed, len(credentials)
    finally:
        await users.close()
        await storage.close()


async def change_encryption_key(config: Config, new_key: str) -> int:
    """Re-encrypt every secret and the check value under `new_key`, in one transaction.

    The storage opens with the configured key first (StartupCheckError when it is the wrong
    one). Returns how many secrets were re-encrypted.
    """
    storage = storage_from_config(config)
    try:
        await storage.startup_check()
        return await storage.change_encryption_key(new_key)
    finally:
        await storage.close()


@asynccontextmanager
async def opened(config: Config) -> AsyncIterator[tuple[Dependencies, Services]]:
    """Open the configured backends as `portal serve` does (start-up checks, no listener, no
    outbox worker) with every service built on them; close them on the way out.

    Raises StartupCheckError when a backend fails its check.
    """
    deps = build_dependencies(config)
    services = build_services(config, deps)
    await deps.storage.startup_check()
    try:
        if deps.sessions is not None:
            await deps.sessions.startup_check()
        try:
            await deps.users.startup_check()
            try:
                yield deps, services
            finally:
                await deps.users.close()
        finally:
            if deps.sessions is not None:
                await deps.sessions.close()
    finally:
        await deps.storage.close()


async def list_users(config: Config) -> list[User] | None:
    """Return every user of the configured backend, sorted by username; None when the backend
    cannot list its users (it plays no UserLister role).

    Raises StartupCheckError, UserBackendError or BackendUnavailableError.
    """
    async with opened(config) as (deps, _):
        users = deps.users
        return await users.list_users() if isinstance(users, UserLister) else None


@dataclass(frozen=True)
class ResetLinkOutcome:
    """What `portal users send-reset-link` did: `user` is None when no user matched; `queued`
    tells whether the mail was queued (False: disabled, no address, or over the per-account
    limit; see `refusal`); `link` is the printed link (print_link only, never logged)."""

    user: User | None
    queued: bool = False
    refusal: str = ""
    link: str = ""


async def send_reset_link(
    config: Config, identifier: str, *, print_link: bool = False
) -> ResetLinkOutcome:
    """Queue the normal reset mail to the stored address of the user identifier names, through
    PasswordResetService.queue_link (step 1 of a reset without the per-address throttle, which
    means nothing for an administrator; the per-account and global limits hold). With
    print_link, record the link and return it instead (PasswordResetService.print_link).

    The administrator never sees or chooses a password. A disabled user, or one without an
    address when mailing, gets nothing. Audits `reset_link_queued` or `reset_link_printed`
    (actor "admin", never the token). Raises ConfigError when the portal serves no reset page
    (authentication_backend.password_reset.disable or custom_url: the link would lead nowhere),
    StartupCheckError and backend errors.
    """
    password_reset = config.authentication_backend.password_reset
    for key, value in (
        ("disable", password_reset.disable),
        ("custom_url", password_reset.custom_url),
    ):
        if value:
            raise ConfigError(
                [
                    f"authentication_backend.password_reset.{key} is set: the portal has no "
                    "reset page for the link to open"
                ]
            )
    async with opened(config) as (deps, services):
        user = await deps.users.get_user(identifier)
        if user is None:
            return ResetLinkOutcome(None)
        if user.disabled:
            return ResetLinkOutcome(user, refusal=f"user '{user.username}' is disabled")
        if print_link:
            link = await services.reset.print_link(user, actor=ADMIN)
            return ResetLinkOutcome(user, queued=True, link=link)
        if not user.email:
            return ResetLinkOutcome(user, refusal=f"user '{user.username}' has no email address")
        if not await services.reset.queue_link(user.username, "", actor=ADMIN):
            refusal = f"too many reset links for '{user.username}' lately; try again later"
            return ResetLinkOutcome(user, refusal=refusal)
        deps.audit("reset_link_queued", username=user.username, actor=ADMIN)
        return ResetLinkOutcome(user, queued=True)


async def list_bans(config: Config) -> list[Ban]:
    """Return every running regulation ban (users, then addresses), from the storage every
    portal instance shares. Raises StartupCheckError."""
    storage = storage_from_config(config)
    await storage.startup_check()
    try:
        return await Regulator(storage, SystemClock(), config.regulation).bans()
    finally:
        await storage.close()


async def unban(config: Config, subject: str) -> int:
    """Lift the ban on an address or a user and forget its failures: the next sign-in is
    judged afresh at once (no portal caches bans). Return how many failures were forgotten
    (0: there were none). Audits `regulation_unbanned` (actor "admin") when there were some.
    Raises StartupCheckError."""
    storage = storage_from_config(config)
    await storage.startup_check()
    try:
        forgotten = await Regulator(storage, SystemClock(), config.regulation).unban(subject)
    finally:
        await storage.close()
    if forgotten:
        audit("regulation_unbanned", subject=subject.strip(), failures=forgotten, actor=ADMIN)
    return forgotten


async def list_sessions(
    config: Config, identifier: str | None
) -> list[tuple[str, ListedSession]] | None:
    """Return the live sessions of the user identifier names, or of every user the backend
    lists (identifier None), as (username, session) pairs, oldest first per user: the public
    ids the settings page shows, never a session id or cookie. None when no user matches (or
    the backend cannot list users). Raises StartupCheckError and backend errors."""
    async with opened(config) as (deps, services):
        if identifier is not None:
            user = await deps.users.get_user(identifier)
            users = None if user is None else [user]
        elif isinstance(deps.users, UserLister):
            users = await deps.users.list_users()
        else:
            users = None
        if users is None:
            return None
        cookies = config.session.cookies
        return [
            (user.username, listed)
            for user in users
            for listed in await services.sessions.list_user_sessions(user.username, cookies)
        ]


async def revoke_sessions(config: Config, identifier: str) -> tuple[str, int] | None:
    """End every session of the user identifier names, on every instance, through
    SessionStore.destroy_user (what a password change uses): return (username, how many
    ended), or None when no user matches. Audits `sessions_revoked` (actor "admin").
    Raises StartupCheckError and backend errors."""
    async with opened(config) as (deps, services):
        user = await deps.users.get_user(identifier)
        if user is None:
            return None
        count = await services.sessions.destroy_user(user.username)
        deps.audit("sessions_revoked", username=user.username, count=count, actor=ADMIN)
    return user.username, count
