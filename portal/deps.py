"""Choose the implementation behind every seam from the configuration; the only place that does."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from portal.clock import Clock, SystemClock
from portal.config import Config
from portal.errors import StartupCheckError
from portal.notify.base import Notifier
from portal.notify.filesystem import FilesystemNotifier
from portal.notify.smtp import SmtpNotifier
from portal.questions import AnswerHasher, Argon2AnswerHasher
from portal.storage.base import Storage
from portal.storage.sqlite import SqliteStorage
from portal.users.base import UserBackend
from portal.users.file import FileUserBackend
from portal.users.ldap import LdapUserBackend


@dataclass
class Dependencies:
    """The backends an application runs on."""

    users: UserBackend
    storage: Storage
    notifier: Notifier
    clock: Clock = field(default_factory=SystemClock)
    answer_hasher: AnswerHasher = field(default_factory=Argon2AnswerHasher)


def users_from_config(config: Config) -> UserBackend:
    """Build the configured user backend."""
    backend = config.authentication_backend
    logger = logging.getLogger("portal.users")
    if backend.file is not None:
        return FileUserBackend(backend.file, logger=logger)
    assert backend.ldap is not None  # noqa: S101 - the model guarantees one of both
    return LdapUserBackend(backend.ldap, logger=logger)


def storage_from_config(config: Config) -> Storage:
    """Build the configured storage."""
    if config.storage.local is not None:
        return SqliteStorage(config.storage.local.path)
    raise StartupCheckError(
        "storage.postgres: PostgreSQL storage is not implemented yet; use 'local'"
    )


def notifier_from_config(config: Config) -> Notifier:
    """Build the configured notifier."""
    if config.notifier.smtp is not None:
        return SmtpNotifier(config.notifier.smtp)
    assert config.notifier.filesystem is not None  # noqa: S101 - the model guarantees one of both
    return FilesystemNotifier(config.notifier.filesystem)


def build_dependencies(config: Config) -> Dependencies:
    """Build every backend the configuration names."""
    return Dependencies(
        users=users_from_config(config),
        storage=storage_from_config(config),
        notifier=notifier_from_config(config),
    )
