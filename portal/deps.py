"""Choose the implementation behind every seam from the configuration; the only place that does."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from portal.audit import AuditSink, audit
from portal.captcha import VENDORS, AltchaCaptcha, Captcha, RemoteCaptcha, altcha_keys
from portal.clock import Clock, SystemClock
from portal.config import Config
from portal.notify.base import Notifier, portal_sender
from portal.notify.filesystem import FilesystemNotifier
from portal.notify.smtp import SmtpNotifier
from portal.password_hashing import HashingQueue, shared_queue
from portal.security_questions import AnswerHasher, Argon2AnswerHasher
from portal.storage.base import SessionProvider, Storage
from portal.storage.postgres import PostgresStorage
from portal.storage.redis import RedisSessionStore
from portal.storage.sqlite import SqliteStorage
from portal.users.base import UserBackend
from portal.users.file import FileUserBackend
from portal.users.ldap import LdapUserBackend


@dataclass(frozen=True)
class Dependencies:
    """The backends an application runs on; portal/services.py builds every service on them.

    `captcha` is the vendor check, built with captcha_from_config (None only when no form asks
    for one: build_services refuses None while captcha.enabled_on names a form). `sessions` is
    session.redis's store (sessions_from_config); None keeps the session records in `storage`.
    `audit` takes every audit event (default: the `portal.audit` logger). `hashing` is the queue
    every password and answer hash waits in (portal/password_hashing.py; default: the process's
    shared queue sized to the machine).
    """

    users: UserBackend
    storage: Storage
    notifier: Notifier
    clock: Clock = field(default_factory=SystemClock)
    answer_hasher: AnswerHasher = field(default_factory=Argon2AnswerHasher)
    hashing: HashingQueue = field(default_factory=shared_queue)
    captcha: Captcha | None = None
    audit: AuditSink = audit
    # session.redis: session records live there instead of in `storage` (None: in storage).
    sessions: SessionProvider | None = None


def users_from_config(config: Config) -> UserBackend:
    """Build the configured user backend (both hash in the queue password_hashing.concurrency
    bounds: the file's passwords, LDAP's {CRYPT} fallback)."""
    backend = config.authentication_backend
    logger = logging.getLogger("portal.users")
    if backend.file is not None:
        hashing = shared_queue(config.password_hashing.concurrency)
        return FileUserBackend(backend.file, logger=logger, hashing=hashing)
    assert backend.ldap is not None  # noqa: S101 - the model guarantees one of both
    return LdapUserBackend(
        backend.ldap,
        certificates_directory=config.certificates_directory,
        logger=logger,
        hashing=shared_queue(config.password_hashing.concurrency),
    )


def storage_from_config(config: Config) -> Storage:
    """Build the configured storage: SQLite (storage.local) or PostgreSQL (storage.postgres)."""
    key = config.storage.encryption_key.get_secret_value()
    if config.storage.local is not None:
        return SqliteStorage(config.storage.local.path, encryption_key=key)
    assert config.storage.postgres is not None  # noqa: S101 - the model guarantees one of both
    return PostgresStorage(
        config.storage.postgres,
        certificates_directory=config.certificates_directory,
        encryption_key=key,
    )


def sessions_from_config(config: Config, clock: Clock) -> SessionProvider | None:
    """Build the Redis session store session.redis names, or None to keep sessions in storage."""
    redis = config.session.redis
    if redis is None:
        return None
    inactivity = {
        cookie.domain: cookie.inactivity.total_seconds() if cookie.inactivity else 0.0
        for cookie in config.session.cookies
    }
    secret = config.session.secret
    assert secret is not None  # noqa: S101 - SessionConfig requires it with redis
    return RedisSessionStore(
        redis,
        secret=secret.get_secret_value(),
        clock=clock,
        inactivity=inactivity,
        certificates_directory=config.certificates_directory,
    )


def notifier_from_config(config: Config) -> Notifier:
    """Build the configured notifier."""
    if config.notifier.smtp is not None:
        return SmtpNotifier(
            config.notifier.smtp, certificates_directory=config.certificates_directory
        )
    assert config.notifier.filesystem is not None  # noqa: S101 - the model guarantees one of both
    return FilesystemNotifier(config.notifier.filesystem, sender=portal_sender(config.portal_url))


def captcha_from_config(config: Config, storage: Storage, clock: Clock) -> Captcha | None:
    """Build the configured CAPTCHA, or None when no form asks for one."""
    captcha = config.captcha
    if not captcha.enabled_on or captcha.provider == "none":
        return None
    if captcha.provider == "altcha":
        secret = config.identity_validation.reset_password.jwt_secret.get_secret_value()
        keys = altcha_keys(captcha.altcha, secret)
        return AltchaCaptcha(captcha.altcha, keys=keys, storage=storage, clock=clock)
    assert captcha.secret_key is not None  # noqa: S101 - the model requires it for vendors
    return RemoteCaptcha(
        captcha.provider,
        secret_key=captcha.secret_key.get_secret_value(),
        site_key=captcha.site_key or "",
        verify_url=captcha.verify_url or VENDORS[captcha.provider].verify_url,
        timeout=captcha.timeout.total_seconds(),
    )


def build_dependencies(config: Config) -> Dependencies:
    """Build every backend the configuration names, on the system clock."""
    storage = storage_from_config(config)
    clock = SystemClock()
    return Dependencies(
        users=users_from_config(config),
        storage=storage,
        notifier=notifier_from_config(config),
        clock=clock,
        captcha=captcha_from_config(config, storage, clock),
        sessions=sessions_from_config(config, clock),
        hashing=shared_queue(config.password_hashing.concurrency),
    )
