"""What the administrator's commands do outside the server: `portal users second-factor delete`
(TOTP and passkeys)
and `portal storage encryption change-key` (Authelia's command names).

Each opens the configured storage (and user backend) with the same start-up checks `portal
serve` runs, so a wrong storage.encryption_key stops it with StartupCheckError, does its one
thing, and closes them. Mails are queued in the storage's outbox: a running portal delivers them.
"""

from __future__ import annotations

from portal.clock import SystemClock
from portal.config import Config
from portal.deps import notifier_from_config, storage_from_config, users_from_config
from portal.mail import MailRenderer, template_dirs
from portal.notify.outbox import OutboxWorker
from portal.ratelimit import RateLimiter
from portal.regulation import Regulator
from portal.second_factor import TotpService
from portal.webauthn import WebAuthnService


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
